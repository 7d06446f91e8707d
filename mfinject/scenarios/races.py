"""Poison racing a change of the mapping: the heart of the dax_lock_page() contract.

An fsdax page's page->mapping may change while its refcount is zero, so
memory-failure pins the pgmap, reads page->mapping under RCU and rechecks it
under the xarray lock (dax_lock_page(), later dax_lock_folio()). Each race
below runs many iterations: M (late kill) maps and faults a page of a fresh
file, then I writes its PFN to corrupt-pfn while R changes the mapping, each
after a delay drawn from the run's seed. Every iteration must end in one of
the documented outcomes, and the kernel must not crash, hang or warn.

race-madvise-fault is the one race inside a single process: M maps the page
without faulting it; its thread 2 poisons it with madvise(MADV_HWPOISON)
while its thread 1 takes the first fault on it. BUS_MCEERR_AR goes to
thread 2 alone (commit 03151c6e0b66); the tracer records it and keeps the
process alive, so that thread 1's outcome and both threads' times are seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from mfinject.observers.mflog import DAX_RECOVERY, HWPOISON_FAULT, SIGBUS_SENT, KernelMessage

TRUNCATE = "truncate"      # R truncates the file to 0
PUNCH_HOLE = "punch-hole"  # R punches the page out of the file
MUNMAP = "munmap"          # M's own thread 1 unmaps the page
FAULT = "fault"            # R maps the file and faults the page in
REFLINK = "reflink"        # R clones the file (FICLONE): the block becomes shared
OWN_FAULT = "own-fault"    # M's thread 1 takes the first fault on the page

CORRUPT_PFN = "corrupt-pfn"  # I, which maps nothing, writes the PFN on its thread 1
MADVISE = "madvise"          # M's thread 2 calls madvise(MADV_HWPOISON) on the page


@dataclass(frozen=True)
class Race:
    name: str
    title: str
    racer: str
    needs_reflink: bool = False
    injector: str = CORRUPT_PFN
    # what it may make mm/memory-failure.c log: the recovery action of each
    # injection (Failed where dax_lock_page() refused); nobody is signalled,
    # as the mapper is late kill and I maps nothing
    kernel_messages: tuple[KernelMessage, ...] = (DAX_RECOVERY,)


RACES = (
    Race("race-truncate", "corrupt-pfn racing truncate() of the file", TRUNCATE),
    Race("race-punch-hole", "corrupt-pfn racing a hole punched over the page", PUNCH_HOLE),
    Race("race-munmap", "corrupt-pfn racing munmap() by the mapper", MUNMAP),
    # the racing fault may meet the poison: SIGBUS BUS_MCEERR_AR, which the x86
    # fault handler announces
    Race("race-fault", "corrupt-pfn racing a fault on the page by another process", FAULT,
         kernel_messages=(DAX_RECOVERY, HWPOISON_FAULT)),
    Race("race-reflink", "corrupt-pfn racing FICLONE of the file", REFLINK, needs_reflink=True),
    # madvise() sends BUS_MCEERR_AR to its caller, which kill_proc() logs; the
    # fault may meet the poison and be refused, which the x86 fault handler logs
    Race("race-madvise-fault", "madvise() by thread 2 racing the first fault on the page by "
         "thread 1 of the same process", OWN_FAULT, injector=MADVISE,
         kernel_messages=(SIGBUS_SENT, DAX_RECOVERY, HWPOISON_FAULT)),
)
