"""What a late-kill mapper gets when it touches the page after the injection.

- madvise-late-access: A poisons its mapping with madvise while B (late
  kill) maps the page; then B loads from it again.
- corrupt-pfn-late-only: I, who maps nothing, poisons the PFN while only B
  (late kill) maps it; then B loads from it again. No process qualifies for
  a signal at injection time here, which is where the generic and
  notify_failure paths decide whether to unmap at all.
"""

from mfinject.scenarios import Inject, Map, Proc, Scenario
from mfinject.scenarios.steps import Probe

MADVISE_LATE_ACCESS = Scenario(
    "madvise-late-access", "madvise by A; then B (late kill) touches the page", "madvise",
    (Proc("A"), Proc("B")), (Map("A"), Map("B"), Inject("A"), Probe()),
)
CORRUPT_PFN_LATE_ONLY = Scenario(
    "corrupt-pfn-late-only", "corrupt-pfn by I while only B (late kill) maps it; then B touches it",
    "corrupt-pfn", (Proc("I"), Proc("B")), (Map("B"), Inject("I"), Probe()),
)

SCENARIOS = (MADVISE_LATE_ACCESS, CORRUPT_PFN_LATE_ONLY)
