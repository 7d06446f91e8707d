"""The injecting process maps the page itself (corrupt-pfn has no MF_ACTION_REQUIRED).

- corrupt-pfn-by-early-mapper: E maps the page, asked for early kill, and
  writes its PFN to corrupt-pfn: the AO signal goes to the writer itself.
- corrupt-pfn-by-late-mapper: L maps the page (late kill) and writes its PFN
  to corrupt-pfn: it is the current task, collected whatever its policy.
"""

from mfinject.scenarios import EARLY, Inject, Map, Proc, Scenario

CORRUPT_PFN_BY_EARLY_MAPPER = Scenario(
    "corrupt-pfn-by-early-mapper", "corrupt-pfn written by an early-kill mapper of the page",
    "corrupt-pfn", (Proc("E", policy=EARLY),), (Map("E"), Inject("E")),
)
CORRUPT_PFN_BY_LATE_MAPPER = Scenario(
    "corrupt-pfn-by-late-mapper", "corrupt-pfn written by a late-kill mapper of the page",
    "corrupt-pfn", (Proc("L"),), (Map("L"), Inject("L")),
)

SCENARIOS = (CORRUPT_PFN_BY_EARLY_MAPPER, CORRUPT_PFN_BY_LATE_MAPPER)
