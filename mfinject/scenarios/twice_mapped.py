"""One process maps the poisoned page twice: two mappings of the file at different offsets.

- corrupt-pfn-two-mappings: C (early kill) maps the window, and the file again
  one page earlier (the poisoned page is another page of it, at another
  address); I poisons the page.
- madvise-two-mappings: A maps the file twice so, and poisons the page with
  madvise through its first mapping.

memory-failure collects one entry per mapping (VMA) of a process, but SIGBUS
is a standard signal: one more of it while one is pending is not queued
(signal(7)), so the process gets one, at the address of either mapping.
"""

from mfinject.scenarios import EARLY, Inject, Map, MapAgain, Proc, Scenario

CORRUPT_PFN_TWO_MAPPINGS = Scenario(
    "corrupt-pfn-two-mappings", "corrupt-pfn while C (early kill) maps the page twice",
    "corrupt-pfn", (Proc("I"), Proc("C", policy=EARLY)),
    (Map("C"), MapAgain("C"), Inject("I")),
)
MADVISE_TWO_MAPPINGS = Scenario(
    "madvise-two-mappings", "madvise by A, which maps the page twice, through its first mapping",
    "madvise", (Proc("A"),), (Map("A"), MapAgain("A"), Inject("A")),
)

SCENARIOS = (CORRUPT_PFN_TWO_MAPPINGS, MADVISE_TWO_MAPPINGS)
