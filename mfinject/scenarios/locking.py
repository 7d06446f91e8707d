"""The dax_lock_page() contract: poison on a page no process maps.

An fsdax page's page->mapping may change while its refcount is zero, so
memory-failure must pin the pgmap, read the mapping under RCU and recheck it
under the xarray lock (dax_lock_page(), later dax_lock_folio()).

- corrupt-pfn-unmapped: M mapped and touched the page, then unmapped it;
  the file still owns the block. Nobody maps it when I poisons it.
- corrupt-pfn-truncated: as corrupt-pfn-unmapped, and the file was truncated to 0 before the
  injection: the page belongs to no file (page->mapping is NULL). Its block is
  free space again, or XFS has taken it for its own metadata (the AG free list
  refills from freed blocks): on XFS with a reverse map, which of the two is read
  (GETFSMAP) just before the injection, and the verdict is judged by it.
- corrupt-pfn-unpoison: as corrupt-pfn-unmapped, then I writes the PFN to unpoison-pfn.
- corrupt-pfn-deleted: as corrupt-pfn-unmapped, and the file was unlinked
  (nobody holds it open): its blocks are given back, as truncated (XFS frees
  them from a deferred worker: the step waits until the file owns no block).
- corrupt-pfn-never-mapped: nobody ever mapped or faulted the page; I
  finds its PFN through the file's extent map (FIEMAP). page->mapping was
  never set: the zero-reference page of the 2022 linux-mm thread.
- corrupt-pfn-metadata: the page is an XFS metadata block (a free-space btree
  block, named by GETFSMAP): no file owns it, nobody maps it. XFS's reverse map
  says so, and XFS shuts itself down. Only the notify_failure path can tell.
- corrupt-pfn-twice: C (early kill) maps the page; I poisons it, and
  once that has settled, poisons the already poisoned page again.
"""

from mfinject.observers.mflog import ALREADY_POISONED, POISONING, UNPOISON
from mfinject.scenarios import EARLY, Inject, Map, Proc, Scenario, Unmap
from mfinject.scenarios.steps import FindMetadata, FindPfn, Truncate, Unlink, Unpoison

_UNMAPPED = (Map("M"), Unmap("M"))

CORRUPT_PFN_UNMAPPED = Scenario(
    "corrupt-pfn-unmapped", "corrupt-pfn on a page of a file that no process maps",
    "corrupt-pfn", (Proc("I"), Proc("M")), (*_UNMAPPED, Inject("I")),
)
CORRUPT_PFN_TRUNCATED = Scenario(
    "corrupt-pfn-truncated", "corrupt-pfn on a page whose file was truncated away",
    "corrupt-pfn", (Proc("I"), Proc("M")), (*_UNMAPPED, Truncate(), Inject("I")),
)

CORRUPT_PFN_UNPOISON = Scenario(
    "corrupt-pfn-unpoison", "corrupt-pfn on a page nobody maps, then unpoison-pfn on it",
    "corrupt-pfn", (Proc("I"), Proc("M")), (*_UNMAPPED, Inject("I"), Unpoison("I")),
    kernel_messages=(*POISONING, UNPOISON),
)

CORRUPT_PFN_DELETED = Scenario(
    "corrupt-pfn-deleted", "corrupt-pfn on a page whose file was deleted", "corrupt-pfn",
    (Proc("I"), Proc("M")), (*_UNMAPPED, Unlink(), Inject("I")),
)
CORRUPT_PFN_NEVER_MAPPED = Scenario(
    "corrupt-pfn-never-mapped", "corrupt-pfn on a file page that was never mapped",
    "corrupt-pfn", (Proc("I"),), (FindPfn(), Inject("I")),
)
CORRUPT_PFN_METADATA = Scenario(
    "corrupt-pfn-metadata", "corrupt-pfn on a page of XFS metadata", "corrupt-pfn",
    (Proc("I"),), (FindMetadata(), Inject("I")),
    only_path="notify_failure",
    why_limited="only XFS with a reverse map (rmapbt) is told whose the page is; elsewhere "
                "a metadata page is any page nobody maps (corrupt-pfn-never-mapped)",
)

CORRUPT_PFN_TWICE = Scenario(
    "corrupt-pfn-twice", "corrupt-pfn on a page, then again on the poisoned page",
    "corrupt-pfn",
    (Proc("I"), Proc("C", policy=EARLY)), (Map("C"), Inject("I"), Inject("I")),
    # the second injection refused is the documented outcome (ALREADY_POISONED
    # in mfinject.expectations.sources); handled again, it logs POISONING twice
    kernel_messages=(*POISONING, ALREADY_POISONED),
)

SCENARIOS = (CORRUPT_PFN_UNMAPPED, CORRUPT_PFN_TRUNCATED, CORRUPT_PFN_DELETED,
             CORRUPT_PFN_NEVER_MAPPED, CORRUPT_PFN_METADATA, CORRUPT_PFN_UNPOISON,
             CORRUPT_PFN_TWICE)
