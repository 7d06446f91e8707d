"""The system-wide kill policy: vm.memory_failure_early_kill=1.

- sysctl-early: corrupt-pfn by I while B maps the page with the default
  policy, under vm.memory_failure_early_kill=1: B is an early-kill process.
"""

from mfinject.scenarios import Inject, Map, Proc, Scenario

SYSCTL_EARLY = Scenario(
    "sysctl-early", "corrupt-pfn by I while B (default policy) maps it, early_kill sysctl = 1",
    "corrupt-pfn",
    (Proc("I"), Proc("B")), (Map("B"), Inject("I")),
    early_kill_sysctl=1,
)

SCENARIOS = (SYSCTL_EARLY,)
