"""Every scenario on each filesystem, in the guest or on designated pmem."""

import pytest

from mfinject.expectations.evaluate import judge
from mfinject.expectations.model import KNOWN_DEVIATION, PASS, UNSPECIFIED
from mfinject.hooks import kernel_hung
from mfinject.scenarios import catalogue, runner, unbind

pytestmark = pytest.mark.pmem


def _play(scenario, dax_fs, clean_namespace, function_trace, mf_record, settings, node=None,
          pin_device=None):
    try:
        obs = runner.run(scenario, dax_fs, clean_namespace, function_trace,
                         seed=settings.race_seed, layout=settings.layout, pin_device=pin_device)
    except runner.NotMeaningful as e:
        pytest.skip(f"not meaningful here: {e}")
    verdict = mf_record(obs, judge(obs))
    if obs.fact("kernel_hung") and node is not None:
        kernel_hung(node, obs.fact("kernel_hung"))
    if verdict.verdict in (KNOWN_DEVIATION, UNSPECIFIED):
        pytest.xfail(f"{verdict.verdict}: " + "\n".join(verdict.messages))
    assert verdict.verdict == PASS, "\n".join(verdict.messages)


@pytest.mark.parametrize("scenario", catalogue.SCENARIOS, ids=lambda s: s.name)
def test_scenario(scenario, mf_dax_fs, mf_namespace, mf_hwpoison, mf_function_trace,
                  mf_record, mf_settings, mf_pin_device, request):
    _play(scenario, mf_dax_fs, mf_namespace, mf_function_trace, mf_record, mf_settings,
          request.node, mf_pin_device)


# XFS reports the device going away and shuts the filesystem down: expected here.
# Only XFS with rmapbt is told (the scenario says why elsewhere is not run).
@pytest.mark.kernel_log_allows(r"^XFS \(pmem\d+\): ")
@pytest.mark.parametrize("mf_dax_fs", ["xfs-rmapbt"], indirect=True)
def test_unbind_mounted(mf_dax_fs, mf_namespace, mf_hwpoison, mf_function_trace, mf_record,
                        mf_settings, request):
    _play(unbind.UNBIND_MOUNTED, mf_dax_fs, mf_namespace, mf_function_trace, mf_record,
          mf_settings, request.node)
