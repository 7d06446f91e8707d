"""Poison on a page that something else holds a reference to.

- corrupt-pfn-pinned-odirect: P (late kill) has an O_DIRECT read from a
  dm-delay device in flight into its mapping of the page (thread 1), so
  the block layer pins the page (FOLL_PIN) for about 3 s; I poisons it.
  C (early kill) maps the page too, so that the mappings are torn down
  (with only late-kill mappers nothing is: see corrupt-pfn-late-only).
- corrupt-pfn-pinned-io-uring: P (early kill) tries to register its
  mapping as an io_uring fixed buffer (a long-term pin), then I poisons it.
"""

from mfinject.scenarios import EARLY, LATE, Inject, Map, Pin, Proc, Scenario

CORRUPT_PFN_PINNED_ODIRECT = Scenario(
    "corrupt-pfn-pinned-odirect", "corrupt-pfn while an O_DIRECT read into the page is in flight",
    "corrupt-pfn",
    (Proc("I"), Proc("P", policy=LATE, threads=1), Proc("C", policy=EARLY)),
    (Map("P"), Map("C"), Pin("P", "odirect"), Inject("I")),
)
CORRUPT_PFN_PINNED_IO_URING = Scenario(
    "corrupt-pfn-pinned-io-uring", "corrupt-pfn on a page offered as an io_uring fixed buffer",
    "corrupt-pfn",
    (Proc("I"), Proc("P", policy=EARLY)), (Map("P"), Pin("P", "io_uring"), Inject("I")),
)


SCENARIOS = (CORRUPT_PFN_PINNED_ODIRECT, CORRUPT_PFN_PINNED_IO_URING)
