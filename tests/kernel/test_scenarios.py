"""Every scenario on each filesystem, in the guest or on designated pmem."""

import pytest

from mfinject.expectations.evaluate import judge
from mfinject.expectations.model import KNOWN_DEVIATION, PASS
from mfinject.scenarios import catalogue, runner

pytestmark = pytest.mark.pmem


@pytest.mark.parametrize("scenario", catalogue.SCENARIOS, ids=lambda s: s.name)
def test_scenario(scenario, dax_fs, clean_namespace, hwpoison, function_trace, mf_record):
    try:
        obs = runner.run(scenario, dax_fs, clean_namespace, function_trace)
    except runner.NotMeaningful as e:
        pytest.skip(f"not meaningful here: {e}")
    verdict = mf_record(obs, judge(obs))
    if verdict.verdict == KNOWN_DEVIATION:
        pytest.xfail("\n".join(verdict.messages))
    assert verdict.verdict == PASS, "\n".join(verdict.messages)
