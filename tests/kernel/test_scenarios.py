"""Every scenario on each filesystem, in the guest or on designated pmem."""

import pytest

from mfinject.expectations.evaluate import judge
from mfinject.expectations.model import KNOWN_DEVIATION, PASS
from mfinject.scenarios import catalogue, runner, unbind

pytestmark = pytest.mark.pmem


def _play(scenario, dax_fs, clean_namespace, function_trace, mf_record):
    try:
        obs = runner.run(scenario, dax_fs, clean_namespace, function_trace)
    except runner.NotMeaningful as e:
        pytest.skip(f"not meaningful here: {e}")
    verdict = mf_record(obs, judge(obs))
    if verdict.verdict == KNOWN_DEVIATION:
        pytest.xfail("\n".join(verdict.messages))
    assert verdict.verdict == PASS, "\n".join(verdict.messages)


@pytest.mark.parametrize("scenario", catalogue.SCENARIOS, ids=lambda s: s.name)
def test_scenario(scenario, dax_fs, clean_namespace, hwpoison, function_trace, mf_record):
    _play(scenario, dax_fs, clean_namespace, function_trace, mf_record)


# XFS reports the device going away and shuts the filesystem down: expected here
@pytest.mark.kernel_log_allows(r"^XFS \(pmem\d+\): ")
def test_unbind_mounted(dax_fs, clean_namespace, hwpoison, function_trace, mf_record):
    _play(unbind.UNBIND_MOUNTED, dax_fs, clean_namespace, function_trace, mf_record)
