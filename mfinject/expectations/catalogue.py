"""The expectations of each scenario, per participant and field.

Reading guide: ``victim_ar("A")`` is the set of facts that a process which
poisons its own mapping should observe, and so on. Every fact names its
source; the memory-failure paths and kernels it holds for default to all.
"""

from __future__ import annotations

from mfinject.expectations import sources as src
from mfinject.expectations.model import (
    INJECTION_LIMIT,
    KERNEL_DEVIATION,
    Expect,
    KnownDeviation,
    Source,
)
from mfinject.scenarios import access, badblocks, first, locking, pmd, policy

PTE_LSB = "12"  # log2(4096): a PTE mapping of one 4 KiB page
PMD_LSB = "21"  # log2(2 MiB): a PMD mapping


def signalled(name: str, code: str, signal_source: Source,
              unmap_source: Source = src.SYSCTL_LATE) -> tuple[Expect, ...]:
    """``name`` gets SIGBUS ``code`` at its own address for one page, and is unmapped."""
    return (
        Expect(name, "signal", code, signal_source),
        Expect(name, "si_addr", "own address", src.SIGACTION_ADDR),
        Expect(name, "si_addr_lsb", PTE_LSB, src.SIGACTION_LSB),
        Expect(name, "mapping", "unmapped", unmap_source),
    )


def victim_ar(name: str) -> tuple[Expect, ...]:
    """The process that poisons a page it maps gets BUS_MCEERR_AR at its own address.

    mf_generic_kill_procs() (commit 6100e34b2526) and mf_dax_kill_procs()
    (commit c36e20249571) both add MF_ACTION_REQUIRED | MF_MUST_KILL, and
    kill_proc() sends BUS_MCEERR_AR to the current task.
    """
    return signalled(name, "BUS_MCEERR_AR", src.MADVISE_HWPOISON)


def bystander_late(name: str) -> tuple[Expect, ...]:
    """A late-kill mapper is unmapped but not signalled at injection time."""
    return (
        Expect(name, "signal", "none", src.PRCTL_MCE_KILL),
        Expect(name, "mapping", "unmapped", src.SYSCTL_LATE),
    )


def bystander_early(name: str) -> tuple[Expect, ...]:
    """An early-kill mapper gets BUS_MCEERR_AO at its own address and is unmapped."""
    return signalled(name, "BUS_MCEERR_AO", src.PRCTL_MCE_KILL)


def signalled_pmd(name: str, code: str, signal_source: Source) -> tuple[Expect, ...]:
    """As :func:`signalled`, for a PMD mapping: lsb 21 and the whole 2 MiB torn down."""
    return (
        Expect(name, "signal", code, signal_source),
        Expect(name, "si_addr", "own address", src.SIGACTION_ADDR),
        Expect(name, "si_addr_lsb", PMD_LSB, src.MAPPING_SHIFT),
        Expect(name, "range", "all unmapped", src.UNMAP_LARGEST),
    )


def late_access(name: str) -> tuple[Expect, ...]:
    """A late-kill mapper that touches the poisoned page afterwards gets SIGBUS then."""
    return (Expect(name, "access", "SIGBUS BUS_MCEERR_AR", src.HWPOISON_LATE),)


def outside_injector(name: str) -> tuple[Expect, ...]:
    """A corrupt-pfn writer that maps nothing: the write succeeds, no signal."""
    return (
        Expect(name, "injection", "ok", src.HWPOISON_CORRUPT_PFN),
        Expect(name, "signal", "none", src.SIGACTION_AO),
    )


# Which path handles the failure: the pmem driver's ->memory_failure() hands it
# to XFS when the filesystem has rmapbt (6f643c57d57c); without rmapbt XFS
# answers -EOPNOTSUPP and ext4 registers no holder, so memory_failure_dev_pagemap()
# falls back to mf_generic_kill_procs() (6100e34b2526).
PATH = (
    Expect("kernel", "path", "notify_failure", src.COMMIT_XFS_NOTIFY_FAILURE,
           paths=frozenset({"notify_failure"})),
    Expect("kernel", "path", "generic", src.COMMIT_DEV_PAGEMAP, paths=frozenset({"generic"})),
)
# one 4 KiB page of a mapped file poisoned, once
HW_CORRUPTED = (Expect("kernel", "hardware_corrupted_kb", "+4", src.PROC_HARDWARE_CORRUPTED),)

_EXPECTATIONS: dict[str, tuple[Expect, ...]] = {
    first.MADVISE_SELF.name: victim_ar("A"),
    first.MADVISE_LATE.name: victim_ar("A") + bystander_late("B"),
    first.MADVISE_EARLY.name: victim_ar("A") + bystander_early("C"),
    first.CORRUPT_PFN.name: outside_injector("I") + bystander_late("B") + bystander_early("C"),
    access.MADVISE_LATE_ACCESS.name: victim_ar("A") + bystander_late("B") + late_access("B"),
    access.CORRUPT_PFN_LATE_ONLY.name: outside_injector("I") + bystander_late("B")
    + late_access("B"),
    # vm.rst: with the sysctl at 1, a default-policy mapper is an early-kill one
    policy.SYSCTL_EARLY.name: outside_injector("I")
    + signalled("B", "BUS_MCEERR_AO", src.SYSCTL_EARLY, src.SYSCTL_EARLY),
    pmd.MADVISE_SELF_PMD.name: signalled_pmd("A", "BUS_MCEERR_AR", src.MADVISE_HWPOISON),
    pmd.CORRUPT_PFN_PMD.name: outside_injector("I")
    + signalled_pmd("C", "BUS_MCEERR_AO", src.PRCTL_MCE_KILL),
    # the record the fault path consults: a fresh fault gets SIGBUS
    badblocks.BADBLOCKS.name: (
        Expect("I", "injection", "ok", src.DAX_MEDIA_ERRORS),
        Expect("N", "fault", "SIGBUS", src.DAX_MEDIA_ERRORS),
    ),
    # a page of a file that nobody maps: locked through its file, nobody to signal
    locking.CORRUPT_PFN_UNMAPPED.name: outside_injector("I") + (
        Expect("M", "signal", "none", src.PRCTL_MCE_KILL),
    ),
    locking.CORRUPT_PFN_UNPOISON.name: outside_injector("I") + (
        Expect("M", "signal", "none", src.PRCTL_MCE_KILL),
        Expect("I", "unpoison", "ok", src.HWPOISON_UNPOISON),
    ),
    # a page that belongs to no file: the generic path cannot lock it and
    # refuses (-EBUSY); XFS's reverse map finds no owner and has nothing to do
    locking.CORRUPT_PFN_TRUNCATED.name: (
        Expect("I", "injection", "Device or resource busy", src.DAX_LOCK_PAGE,
               paths=frozenset({"generic"})),
        Expect("I", "injection", "ok", src.COMMIT_XFS_NOTIFY_FAILURE,
               paths=frozenset({"notify_failure"})),
        Expect("I", "signal", "none", src.SIGACTION_AO),
        Expect("M", "signal", "none", src.PRCTL_MCE_KILL),
    ),
}
# memory_failure() is not involved in the badblocks path: no path, no counter
_NO_POISON_PAGE = {s.name for s in locking.SCENARIOS}
_NO_MEMORY_FAILURE = {s.name for s in badblocks.SCENARIOS}
EXPECTATIONS = {
    name: (() if name in _NO_MEMORY_FAILURE else PATH)
    + (() if name in _NO_POISON_PAGE | _NO_MEMORY_FAILURE else HW_CORRUPTED) + exps
    for name, exps in _EXPECTATIONS.items()
}

# Cases where the kernel does not do what the sources above say, each found by
# a run, understood and explained. They are reported as deviations (never as
# passes); a kernel that starts doing the documented thing simply passes.
_REFAULT = ("the page was unmapped, but the next load faults it in again: the fsdax fault "
            "path checks only the pmem bad-block list, which software injection leaves "
            "empty, so the process reads the old data. On real hardware the load would "
            "consume the poison and raise BUS_MCEERR_AR.")
_NO_UNMAP = ("no process qualified for a signal (no early-kill mapper, and the injecting "
             "process maps nothing), so unmap_and_kill() unmapped nothing and the late-kill "
             "mapper keeps a live mapping of the poisoned page.")
KNOWN_DEVIATIONS: tuple[KnownDeviation, ...] = (
    KnownDeviation(locking.CORRUPT_PFN_UNPOISON.name, "I", "unpoison", "Input/output error",
                   KERNEL_DEVIATION, "unpoison-pfn refuses a software-poisoned fsdax page "
                   "(seen on 6.1, 6.12 and 7.3, both paths): the page stays poisoned until its "
                   "namespace is re-enabled. Where in unpoison_memory() it is refused is not "
                   "yet traced.",
                   src.UNPOISON_MEMORY),
    KnownDeviation(access.MADVISE_LATE_ACCESS.name, "B", "access", "old data", INJECTION_LIMIT,
                   _REFAULT, src.PMEM_BADBLOCKS),
    KnownDeviation(access.CORRUPT_PFN_LATE_ONLY.name, "B", "mapping", "mapped", KERNEL_DEVIATION,
                   _NO_UNMAP, src.UNMAP_AND_KILL),
    KnownDeviation(access.CORRUPT_PFN_LATE_ONLY.name, "B", "access", "old data",
                   KERNEL_DEVIATION, "the page is still mapped (see B.mapping), so the load "
                   "reads it without any fault: " + _NO_UNMAP, src.UNMAP_AND_KILL),
)
