"""Shared extents: one block owned by two files (FICLONE), on every filesystem with reflink.

A shared fsdax page is where page->mapping is not a plain address_space (from
v6.2 it is PAGE_MAPPING_DAX_SHARED and page->share counts the owners, commit
16900426586d), so how memory-failure finds its mappers differs by path: XFS
with rmapbt walks its reverse map to every owner (xfs_notify_failure.c); the
generic path (XFS without rmapbt) has only page->mapping to go on.

- corrupt-pfn-reflink: X maps the file and Y the clone, both early kill; I,
  who maps nothing, poisons the shared page.
- corrupt-pfn-shared: as corrupt-pfn-reflink with a late-kill mapper of each
  file besides the early ones.
- madvise-shared: A, mapping the file, poisons the shared page with madvise
  while an early and a late mapper of the clone map it.
- corrupt-pfn-shared-fault: X (early) maps and faults the page through the
  file; Y maps the clone but faults the page in only after I poisoned it.
- corrupt-pfn-shared-unshare: X (early) and Y (late) map the shared page
  through each file; I poisons it; W writes 16 bytes into the file's page
  (copy-on-write out of the poisoned block) and reads it back; then Y loads
  the page through the clone.
- corrupt-pfn-shared-pmd: as corrupt-pfn-reflink, each file mapped with a PMD.
"""

from mfinject.scenarios import EARLY, Clone, Inject, Map, Pread, Proc, Scenario, Touch, Write
from mfinject.scenarios.steps import CLONE, Probe

_BOTH_EARLY = (Proc("I"), Proc("X", policy=EARLY), Proc("Y", policy=EARLY))

CORRUPT_PFN_REFLINK = Scenario(
    "corrupt-pfn-reflink", "corrupt-pfn on a block shared by two files (reflink)",
    "corrupt-pfn", _BOTH_EARLY,
    (Clone(), Map("X"), Map("Y", file=CLONE), Inject("I")),
)
CORRUPT_PFN_SHARED = Scenario(
    "corrupt-pfn-shared", "corrupt-pfn on a shared block: early and late mappers of both files",
    "corrupt-pfn",
    (Proc("I"), Proc("XE", policy=EARLY), Proc("XL"), Proc("YE", policy=EARLY), Proc("YL")),
    (Clone(), Map("XE"), Map("XL"), Map("YE", file=CLONE), Map("YL", file=CLONE), Inject("I")),
)
MADVISE_SHARED = Scenario(
    "madvise-shared", "madvise by a mapper of the file on a block the clone's mappers share",
    "madvise", (Proc("A"), Proc("YE", policy=EARLY), Proc("YL")),
    (Clone(), Map("A"), Map("YE", file=CLONE), Map("YL", file=CLONE), Inject("A")),
)
CORRUPT_PFN_SHARED_FAULT = Scenario(
    "corrupt-pfn-shared-fault",
    "a first fault through the clone on a poisoned shared block the file's mapper holds",
    "corrupt-pfn", (Proc("I"), Proc("X", policy=EARLY), Proc("Y")),
    (Clone(), Map("X"), Map("Y", file=CLONE, fault=False), Inject("I"), Touch("Y")),
)
CORRUPT_PFN_SHARED_UNSHARE = Scenario(
    "corrupt-pfn-shared-unshare",
    "a write into a poisoned shared block (copy-on-write out of it), then loads through both",
    "corrupt-pfn", (Proc("I"), Proc("W"), Proc("X", policy=EARLY), Proc("Y")),
    (Clone(), Map("X"), Map("Y", file=CLONE), Inject("I"), Write("W"), Pread("W"), Probe()),
)
CORRUPT_PFN_SHARED_PMD = Scenario(
    "corrupt-pfn-shared-pmd", "corrupt-pfn on a shared block both files map with a PMD",
    "corrupt-pfn", _BOTH_EARLY,
    (Clone(), Map("X"), Map("Y", file=CLONE), Inject("I")), pmd=True,
)

SCENARIOS = (CORRUPT_PFN_REFLINK, CORRUPT_PFN_SHARED, MADVISE_SHARED, CORRUPT_PFN_SHARED_FAULT,
             CORRUPT_PFN_SHARED_UNSHARE, CORRUPT_PFN_SHARED_PMD)
