"""The first scenarios: one page, PTE-mapped, poisoned once.

- madvise-self: a process poisons a page it maps.
- madvise-late: as madvise-self, with a second mapper under the default (late) policy.
- madvise-early: as madvise-self, with a second mapper that asked for early kill.
- corrupt-pfn: a process that maps nothing writes the PFN to corrupt-pfn
  while a late-kill and an early-kill process map the page.
"""

from mfinject.scenarios import EARLY, Inject, Map, Proc, Scenario

MADVISE_SELF = Scenario(
    "madvise-self", "a process poisons its own mapping with madvise", "madvise",
    (Proc("A"),), (Map("A"), Inject("A")),
)
MADVISE_LATE = Scenario(
    "madvise-late", "madvise by A while B maps the page (late kill)", "madvise",
    (Proc("A"), Proc("B")), (Map("A"), Map("B"), Inject("A")),
)
MADVISE_EARLY = Scenario(
    "madvise-early", "madvise by A while C maps the page (PR_MCE_KILL_EARLY)", "madvise",
    (Proc("A"), Proc("C", policy=EARLY)), (Map("A"), Map("C"), Inject("A")),
)
CORRUPT_PFN = Scenario(
    "corrupt-pfn", "corrupt-pfn by I, who maps nothing, while B (late) and C (early) map it",
    "corrupt-pfn",
    (Proc("I"), Proc("B"), Proc("C", policy=EARLY)), (Map("B"), Map("C"), Inject("I")),
)

SCENARIOS = (MADVISE_SELF, MADVISE_LATE, MADVISE_EARLY, CORRUPT_PFN)
