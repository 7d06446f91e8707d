"""The expectations of each scenario, per participant and field.

Reading guide: ``victim_ar("A")`` is the set of facts that a process which
poisons its own mapping should observe, and so on. Every fact names its
source; the memory-failure paths and kernels it holds for default to all.
"""

from __future__ import annotations

import dataclasses

from mfinject.expectations import sources as src
from mfinject.expectations.model import (
    ALL_PATHS,
    INJECTION_LIMIT,
    KERNEL_DEVIATION,
    POISONED_PAGE,
    UNSPECIFIED,
    Expect,
    KernelRange,
    KnownDeviation,
    Seen,
    Source,
    Value,
)
from mfinject.kernel import Version
from mfinject.scenarios import Scenario
from mfinject.scenarios import catalogue as scenario_catalogue
from mfinject.scenarios import (
    access,
    badblocks,
    fileio,
    first,
    locking,
    machine_check,
    pinned,
    pmd,
    policy,
    races,
    self_inject,
    shared,
    threads,
    twice_mapped,
    unbind,
)

PTE_LSB = "12"  # log2(4096): a PTE mapping of one 4 KiB page
PMD_LSB = "21"  # log2(2 MiB): a PMD mapping


def signalled(name: str, code: str, signal_source: Source,
              unmap_source: Source = src.SYSCTL_LATE) -> tuple[Expect, ...]:
    """``name`` gets SIGBUS ``code`` at the address of the poisoned page in its own mapping for one page, and is unmapped."""
    return (
        Expect(name, "signal", code, signal_source),
        Expect(name, "si_addr", POISONED_PAGE, src.SIGACTION_ADDR),
        Expect(name, "si_addr_lsb", PTE_LSB, src.SIGACTION_LSB),
        Expect(name, "mapping", "unmapped", unmap_source),
    )


def victim_ar(name: str) -> tuple[Expect, ...]:
    """The process that poisons a page it maps gets BUS_MCEERR_AR at the address of the poisoned page in its own mapping.

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
    """An early-kill mapper gets BUS_MCEERR_AO at the address of the poisoned page in its own mapping and is unmapped."""
    return signalled(name, "BUS_MCEERR_AO", src.PRCTL_MCE_KILL)


def signalled_pmd(name: str, code: str, signal_source: Source) -> tuple[Expect, ...]:
    """As :func:`signalled`, for a PMD mapping: lsb 21 and the whole 2 MiB torn down.

    si_addr need only fall in the 2 MiB extent si_addr_lsb reports (sigaction(2):
    the low bits are not significant): the poisoned page's own address and the
    PMD's base both hold the poison; any other 2 MiB does not.
    """
    return (
        Expect(name, "signal", code, signal_source),
        Expect(name, "si_addr_extent", "covers the poisoned page", src.SIGACTION_LSB),
        Expect(name, "si_addr_lsb", PMD_LSB, src.MAPPING_SHIFT),
        Expect(name, "range", "all unmapped", src.UNMAP_LARGEST),
    )


def late_access(name: str) -> tuple[Expect, ...]:
    """A late-kill mapper that touches the poisoned page afterwards gets SIGBUS then."""
    return (Expect(name, "access", "SIGBUS BUS_MCEERR_AR", src.HWPOISON_LATE),
            Expect(name, "access_si_addr", POISONED_PAGE, src.SIGACTION_ADDR))


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
# one 4 KiB page poisoned, once: the proof that the injection landed
HW_CORRUPTED_KB = (Expect("kernel", "hardware_corrupted_kb", "+4", src.PROC_HARDWARE_CORRUPTED),)
# ... of a mapped file, and memory-failure says it recovered
HW_CORRUPTED = HW_CORRUPTED_KB + (
    Expect("kernel", "recovery_action", "Recovered", src.DAX_ACTION_RESULT),)

# the per-node counters (commit 44b8f8bf2438, v6.4): one raw poisoned page, recovered
_V6_4 = Version(6, 4, 0)
_V6_5 = Version(6, 5, 0)
ONE_PAGE_STATS = (
    Expect("kernel", "memory_failure_stats", "total +1, recovered +1", src.NODE_STATS,
           kernels=KernelRange(since=_V6_4)),
    Expect("kernel", "memory_failure_stats", "absent", src.COMMIT_NODE_STATS,
           kernels=KernelRange(until=_V6_4)),
)


def unlockable_page(name: str) -> tuple[Expect, ...]:
    """corrupt-pfn on a page whose page->mapping was never set (a file page nobody
    mapped): the generic path cannot lock it and refuses with -EBUSY; XFS asks its
    reverse map, which finds the file and no mapper to signal. Nobody is signalled."""
    return (
        Expect(name, "injection", "Device or resource busy", src.DAX_LOCK_PAGE,
               paths=frozenset({"generic"})),
        Expect(name, "injection", "ok", src.COMMIT_XFS_NOTIFY_FAILURE,
               paths=frozenset({"notify_failure"})),
        Expect(name, "signal", "none", src.SIGACTION_AO),
        Expect("kernel", "recovery_action", "Failed", src.DAX_ACTION_RESULT,
               paths=frozenset({"generic"})),
        Expect("kernel", "recovery_action", "Recovered", src.DAX_ACTION_RESULT,
               paths=frozenset({"notify_failure"})),
    )


_NOTIFY = frozenset({"notify_failure"})
_GENERIC = frozenset({"generic"})
# the block_owner fact (mfinject.fsmap), read just before the injection on the
# notify_failure path
FREE_BLOCK = ("block_owner", "free")
METADATA_BLOCK = ("block_owner", "metadata")


def xfs_metadata_page(name: str) -> tuple[Expect, ...]:
    """corrupt-pfn on a block XFS's reverse map gives to XFS itself (per-AG metadata,
    an inode btree, a file's extent map): the filesystem shuts down, and
    memory-failure fails the injection with the EUCLEAN XFS returned."""
    return (
        Expect(name, "injection", "Structure needs cleaning", src.XFS_METADATA_FAILURE,
               paths=_NOTIFY, when=METADATA_BLOCK),
        Expect("kernel", "recovery_action", "Failed", src.DAX_ACTION_RESULT, paths=_NOTIFY,
               when=METADATA_BLOCK),
        Expect("kernel", "fs_shutdown", "shut down", src.XFS_METADATA_FAILURE, paths=_NOTIFY,
               when=METADATA_BLOCK),
        Expect(name, "signal", "none", src.SIGACTION_AO),
    )


def freed_page(name: str) -> tuple[Expect, ...]:
    """corrupt-pfn on a page whose file gave its block back (truncated, deleted).

    The generic path cannot lock a page that belongs to no file, as
    :func:`unlockable_page`. XFS asks its reverse map, whose answer depends on
    what the block became: free space (no owner, nobody signalled, the
    filesystem untouched), or XFS's own metadata (a free block may be taken at
    once for the AG free list or a btree block: :func:`xfs_metadata_page`).
    Which it was is read (GETFSMAP) before the injection; a block that became
    another file's data has no expectation, and is an error.
    """
    return (
        Expect(name, "injection", "Device or resource busy", src.DAX_LOCK_PAGE, paths=_GENERIC),
        Expect("kernel", "recovery_action", "Failed", src.DAX_ACTION_RESULT, paths=_GENERIC),
        # the generic path tells no filesystem anything: none shuts down
        Expect("kernel", "fs_shutdown", "none", src.COMMIT_DEV_PAGEMAP, paths=_GENERIC),
        Expect(name, "injection", "ok", src.XFS_FREE_BLOCK, paths=_NOTIFY, when=FREE_BLOCK),
        Expect("kernel", "recovery_action", "Recovered", src.DAX_ACTION_RESULT, paths=_NOTIFY,
               when=FREE_BLOCK),
        Expect("kernel", "fs_shutdown", "none", src.XFS_FREE_BLOCK, paths=_NOTIFY,
               when=FREE_BLOCK),
    ) + xfs_metadata_page(name)


# A page that still belongs to its file, which nobody maps: the generic path
# locks it through page->mapping (dax_lock_page() succeeds), XFS finds its owner
# in the reverse map and mf_dax_kill_procs() returns 0. Either way
# memory_failure_dev_pagemap() gets rc 0, the same 0 that makes the corrupt-pfn
# write "ok" (hwpoison_inject() returns memory_failure()'s result), and logs
# action_result(pfn, MF_MSG_DAX, MF_RECOVERED).
FILE_PAGE_RECOVERED = (Expect("kernel", "recovery_action", "Recovered", src.DAX_ACTION_RESULT),)


def io_on_media_error(name: str) -> tuple[Expect, ...]:
    """Reads of a page with a media error fail; a whole-page write clears it."""
    return (
        Expect(name, "io:read", "Input/output error", src.PMEM_READ_EIO),
        Expect(name, "io:pread", "Input/output error", src.PMEM_READ_EIO),
        Expect(name, "io:odirect_read", "Input/output error", src.PMEM_READ_EIO),
        Expect(name, "io:write_page", "wrote 4096", src.DAX_CLEAR_ON_WRITE),
        Expect(name, "io:pread_after_write", "data [51]", src.DAX_CLEAR_ON_WRITE),
    )




def shared_early(name: str, pmd: bool = False) -> tuple[Expect, ...]:
    """An early-kill mapper of a shared block gets BUS_MCEERR_AO, whichever file it maps.

    On the notify_failure path XFS walks its reverse map to every owner; the
    generic path has no such walk, and prctl(2) promises the signal to every
    thread whose address space the corruption is in.
    """
    build = signalled_pmd if pmd else signalled
    return (tuple(dataclasses.replace(e, paths=_NOTIFY)
                  for e in build(name, "BUS_MCEERR_AO", src.XFS_SHARED_OWNERS))
            + tuple(dataclasses.replace(e, paths=_GENERIC)
                    for e in build(name, "BUS_MCEERR_AO", src.PRCTL_MCE_KILL)))


def injecting_mapper(name: str) -> tuple[Expect, ...]:
    """A corrupt-pfn writer that maps the page is the current task: BUS_MCEERR_AR."""
    return signalled(name, "BUS_MCEERR_AR", src.AR_TO_CURRENT)


def mapped_twice(name: str, code: str, source: Source) -> tuple[Expect, ...]:
    """A process that maps the poisoned page twice: one SIGBUS, at the poisoned page of
    either mapping; the page gone from both mappings, and nothing else."""
    return (
        Expect(name, "signal", code, source),
        Expect(name, "si_addr_any", "a poisoned page's address", src.SIGACTION_ADDR),
        Expect(name, "si_addr_lsb", PTE_LSB, src.SIGACTION_LSB),
        Expect(name, "mapping", "unmapped", src.SYSCTL_LATE),
        Expect(name, "window2", "only the poisoned page unmapped", src.UNMAP_ONE_PAGE),
    )


_EXPECTATIONS: dict[str, tuple[Expect, ...]] = {
    first.MADVISE_SELF.name: victim_ar("A"),
    first.MADVISE_LATE.name: victim_ar("A") + bystander_late("B"),
    first.MADVISE_EARLY.name: victim_ar("A") + bystander_early("C"),
    first.CORRUPT_PFN.name: outside_injector("I") + bystander_late("B") + bystander_early("C")
    + ONE_PAGE_STATS,
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
        # which SIGBUS: the fault path learnt to say hardware poison in v6.5
        Expect("N", "access", "SIGBUS BUS_ADRERR", src.COMMIT_DAX_HWPOISON,
               kernels=KernelRange(until=_V6_5)),
        Expect("N", "access", "SIGBUS BUS_MCEERR_AR", src.COMMIT_DAX_HWPOISON,
               kernels=KernelRange(since=_V6_5)),
        Expect("N", "access_si_addr", POISONED_PAGE, src.SIGACTION_ADDR),
    ),
    # a page of a file that nobody maps: locked through its file, nobody to signal
    locking.CORRUPT_PFN_UNMAPPED.name: outside_injector("I") + FILE_PAGE_RECOVERED + (
        Expect("M", "signal", "none", src.PRCTL_MCE_KILL),
    ),
    locking.CORRUPT_PFN_UNPOISON.name: outside_injector("I") + FILE_PAGE_RECOVERED + (
        Expect("M", "signal", "none", src.PRCTL_MCE_KILL),
        Expect("I", "unpoison", "ok", src.HWPOISON_UNPOISON),
    ),
    # the file is gone: as truncated, the page belongs to no file
    locking.CORRUPT_PFN_DELETED.name: freed_page("I") + (
        Expect("M", "signal", "none", src.PRCTL_MCE_KILL),
    ),
    # page->mapping was never set: the generic path cannot lock it either;
    # XFS finds the owner in its reverse map, and nobody maps the page
    locking.CORRUPT_PFN_NEVER_MAPPED.name: unlockable_page("I"),
    # the block is XFS's own: only XFS with rmapbt is told (the scenario runs nowhere else)
    locking.CORRUPT_PFN_METADATA.name: xfs_metadata_page("I"),
    locking.CORRUPT_PFN_TRUNCATED.name: freed_page("I") + (
        Expect("M", "signal", "none", src.PRCTL_MCE_KILL),
    ),
    # a page is poisoned once: the second injection finds it poisoned, and
    # nothing is counted twice
    locking.CORRUPT_PFN_TWICE.name: outside_injector("I") + bystander_early("C") + (
        Expect("I", "injection2", "Memory page has hardware error", src.ALREADY_POISONED),
    ) + ONE_PAGE_STATS,
    threads.MADVISE_THREAD.name: victim_ar("A") + (
        Expect("A", "thread", "thread 2", src.COMMIT_AR_CURRENT_THREAD),
    ),
    threads.CORRUPT_PFN_EARLY_THREAD.name: outside_injector("I") + (
        Expect("C", "kill_policy", "default", src.PRCTL_INHERITED),
        Expect("C", "thread", "thread 2", src.EARLY_KILL_THREAD),
    ) + signalled("C", "BUS_MCEERR_AO", src.EARLY_KILL_THREAD),
    threads.CORRUPT_PFN_FORK_EARLY.name: outside_injector("I") + (
        Expect("C", "kill_policy", "early", src.PRCTL_INHERITED),
    ) + signalled("C", "BUS_MCEERR_AO", src.PRCTL_INHERITED),
    fileio.CORRUPT_PFN_FILE_IO.name: outside_injector("I") + io_on_media_error("R"),
    fileio.BADBLOCKS_FILE_IO.name: (
        Expect("I", "injection", "ok", src.DAX_MEDIA_ERRORS),
        Expect("R", "io:write_partial", "Bad address", src.DAX_RECOVERY_WRITE),
        Expect("kernel", "badblocks", "none", src.DAX_CLEAR_ON_WRITE),
    ) + io_on_media_error("R"),
    shared.CORRUPT_PFN_REFLINK.name: outside_injector("I") + shared_early("X")
    + shared_early("Y"),
    shared.CORRUPT_PFN_SHARED.name: outside_injector("I") + shared_early("XE")
    + shared_early("YE") + bystander_late("XL") + bystander_late("YL"),
    shared.MADVISE_SHARED.name: victim_ar("A") + shared_early("YE") + bystander_late("YL"),
    # Y maps the clone but has no page-table entry when the poison arrives: nothing
    # to collect (add_to_kill() skips a mapping without the page); its first load
    # then runs into the poisoned page
    shared.CORRUPT_PFN_SHARED_FAULT.name: outside_injector("I") + shared_early("X")
    + late_access("Y"),
    shared.CORRUPT_PFN_SHARED_UNSHARE.name: outside_injector("I") + shared_early("X")
    + bystander_late("Y") + late_access("Y") + (
        Expect("W", "write", UNSPECIFIED, src.COW_UNSPECIFIED),
        Expect("W", "read", UNSPECIFIED, src.COW_UNSPECIFIED),
    ),
    shared.CORRUPT_PFN_SHARED_PMD.name: outside_injector("I") + shared_early("X", pmd=True)
    + shared_early("Y", pmd=True),
    # one SIGBUS though memory-failure collects one entry per mapping: signal(7)
    twice_mapped.CORRUPT_PFN_TWO_MAPPINGS.name: outside_injector("I")
    + mapped_twice("C", "BUS_MCEERR_AO", src.SIGNAL_NOT_QUEUED),
    twice_mapped.MADVISE_TWO_MAPPINGS.name: mapped_twice("A", "BUS_MCEERR_AR",
                                                         src.SIGNAL_NOT_QUEUED),
    self_inject.CORRUPT_PFN_BY_EARLY_MAPPER.name: injecting_mapper("E"),
    self_inject.CORRUPT_PFN_BY_LATE_MAPPER.name: injecting_mapper("L"),
    # a short-term pin does not hold memory-failure off: the DAX entry lock does
    pinned.CORRUPT_PFN_PINNED_ODIRECT.name: outside_injector("I") + bystander_late("P")
    + bystander_early("C") + (
        Expect("P", "pin", "O_DIRECT read in flight at the injection: completed, 4096 bytes",
               src.PIN_DIO),
    ),
    pinned.CORRUPT_PFN_PINNED_IO_URING.name: outside_injector("I") + (
        Expect("P", "pin", "Operation not supported", src.FOLL_LONGTERM_FSDAX),
    ) + bystander_early("P"),
    # the holder is told before the device goes: every mapping is revoked
    unbind.UNBIND_MOUNTED.name: (
        Expect("I", "injection", "ok", src.COMMIT_PRE_REMOVE),
        Expect("kernel", "path", "notify_failure", src.COMMIT_PRE_REMOVE),
    ) + signalled("M", "BUS_MCEERR_AO", src.PRE_REMOVE_ALL_TASKS, src.COMMIT_PRE_REMOVE),
}


def by_machine_check(exps: tuple[Expect, ...]) -> tuple[Expect, ...]:
    """A corrupt-pfn scenario's expectations for its machine-check twin: the same
    mappers and outcomes; the injection is the machine check's, and the NFIT
    driver records the bad range (which the pmem driver consults afterwards)."""
    return tuple(dataclasses.replace(e, source=src.MCE_SRAO)
                 if (e.field, e.source) == ("injection", src.HWPOISON_CORRUPT_PFN) else e
                 for e in exps)


MCE_BAD_RANGE = (Expect("kernel", "badblocks", "1 bad range", src.NFIT_MCE),)
_EXPECTATIONS.update({
    machine_check.MCE.name: by_machine_check(_EXPECTATIONS[first.CORRUPT_PFN.name])
    + MCE_BAD_RANGE,
    # C's early kill makes memory-failure unmap every mapper; B's next load
    # faults, and the fault meets the bad range: -EIO (SIGBUS BUS_ADRERR)
    # until v6.5, then -EHWPOISON (BUS_MCEERR_AR), commit 1ea7ca1b0901
    machine_check.MCE_LATE_ACCESS.name: by_machine_check(_EXPECTATIONS[first.CORRUPT_PFN.name])
    + MCE_BAD_RANGE + (
        Expect("B", "access", "SIGBUS BUS_ADRERR", src.COMMIT_DAX_HWPOISON,
               kernels=KernelRange(until=_V6_5)),
        Expect("B", "access", "SIGBUS BUS_MCEERR_AR", src.COMMIT_DAX_HWPOISON,
               kernels=KernelRange(since=_V6_5)),
        Expect("B", "access_si_addr", POISONED_PAGE, src.SIGACTION_ADDR)),
    machine_check.MCE_LATE_ONLY.name:
        by_machine_check(_EXPECTATIONS[access.CORRUPT_PFN_LATE_ONLY.name]) + MCE_BAD_RANGE,
    machine_check.MCE_SHARED.name: by_machine_check(_EXPECTATIONS[shared.CORRUPT_PFN_SHARED.name])
    + MCE_BAD_RANGE,
    # the whole-page write clears the bad range, as after badblocks-file-io
    machine_check.MCE_FILE_IO.name:
        by_machine_check(_EXPECTATIONS[fileio.CORRUPT_PFN_FILE_IO.name])
        + (Expect("kernel", "badblocks", "none", src.DAX_CLEAR_ON_WRITE),),
})


def by_action_required(exps: tuple[Expect, ...]) -> tuple[Expect, ...]:
    """A madvise scenario's expectations for its action-required twin: A, who
    called madvise() on its own mapping, consumed the poison instead; the
    kernel's answer is kill_me_maybe()'s memory_failure(pfn, MF_ACTION_REQUIRED)
    (madvise's flags but MF_SW_SIMULATED; the fsdax path adds MF_MUST_KILL
    itself). The signal goes to the consuming thread (A's thread 1, its load
    loop), not to the process; A's injection (the loop started, QEMU raised
    the check inside it) is judged too."""
    return tuple(dataclasses.replace(e, source=src.MCE_SRAR)
                 if e.source == src.MADVISE_HWPOISON else e for e in exps) + MCE_BAD_RANGE + (
        Expect("A", "thread", "thread 1", src.COMMIT_AR_CURRENT_THREAD),
        Expect("A", "injection", "ok", src.MCE_SRAR))


# a corrected error poisons nothing: every mapper keeps the page and reads it
_EXPECTATIONS[machine_check.MCE_CORRECTED.name] = (
    Expect("I", "injection", "ok", src.MCE_CORRECTED),
    Expect("kernel", "badblocks", "none", src.MCE_CORRECTED),
    Expect("kernel", "hardware_corrupted_kb", "+0", src.MCE_CORRECTED),
    Expect("kernel", "recovery_action", "none", src.MCE_CORRECTED),
) + tuple(e for who in ("B", "C") for e in (
    Expect(who, "signal", "none", src.MCE_CORRECTED),
    Expect(who, "mapping", "mapped", src.MCE_CORRECTED),
    Expect(who, "access", "old data", src.MCE_CORRECTED),
))
_EXPECTATIONS.update({
    ar.name: by_action_required(_EXPECTATIONS[machine_check.TWINS[ar.name]])
    for ar in machine_check.AR_SCENARIOS})
# memory_failure() is not involved in the badblocks path: no path, no counter
_NO_POISON_PAGE = {s.name for s in locking.SCENARIOS} - {locking.CORRUPT_PFN_TWICE.name}
_NO_MEMORY_FAILURE = {s.name for s in badblocks.SCENARIOS} | {fileio.BADBLOCKS_FILE_IO.name,
                                                               machine_check.MCE_CORRECTED.name,
                                                               unbind.UNBIND_MOUNTED.name}
KILLED = "killed by SIGBUS"  # runner._exit_text() of SIGBUS's default action
ALIVE = "alive"  # not ended when the scenario's last step was done


def _kills(e: Expect) -> bool:
    """Does ``e`` name a SIGBUS for its participant? Nobody handles one: it ends them."""
    return ((e.field == "signal" and e.value != "none")
            or (e.field in ("access", "fault") and e.value.startswith("SIGBUS")))


def lifecycle(scenario: Scenario, exps: tuple[Expect, ...]) -> tuple[Expect, ...]:
    """What each participant receives and how it ends, in full.

    Exactly the SIGBUS its expectations name (none, where they name none), no
    other signal, and the end that follows: killed by the SIGBUS named
    (signal(7): the default action; the participants never handle it), alive
    otherwise. ``signal`` lists every SIGBUS, so one named means exactly one.
    """
    out: list[Expect] = []
    for proc in scenario.procs:
        mine = [e for e in exps if e.participant == proc.name]
        if not any(e.field == "signal" for e in mine):
            out.append(Expect(proc.name, "signal", "none", src.COLLECT_PROCS))
        out.append(Expect(proc.name, "other_signals", "none", src.KILL_PROCS))
        out.append(Expect(proc.name, "exit", KILLED, src.SIGBUS_DEFAULT) if any(map(_kills, mine))
                   else Expect(proc.name, "exit", ALIVE, src.KILL_PROCS))
    return tuple(out)


# what becomes of the rest of a mapper's window: memory-failure unmaps the
# poisoned page alone (a PTE mapping), MF_MEM_PRE_REMOVE revokes the whole file
WINDOW = {"unmapped": "only the poisoned page unmapped", "mapped": "all mapped"}


def window_state(scenario: Scenario, exps: tuple[Expect, ...]) -> tuple[Expect, ...]:
    """The whole window's state after the injection, for every mapper whose poisoned
    page's state is expected: the page alone gone (or nothing gone, where the page
    stays mapped), so a kernel that tears down more than the page fails."""
    out = []
    for e in exps:
        # (an unbind revokes page after page while the first signal already ends
        # the mapper: the rest of its window is gone or not, by timing alone)
        if e.field != "mapping" or e.value not in WINDOW or scenario.pmd \
                or scenario.whole_device:
            continue
        out.append(Expect(e.participant, "window", WINDOW[e.value], src.UNMAP_ONE_PAGE,
                          paths=e.paths, kernels=e.kernels))
    return tuple(out)


_SCENARIOS = {s.name: s for s in scenario_catalogue.ALL}
EXPECTATIONS = {
    name: (() if name in _NO_MEMORY_FAILURE else PATH)
    + (() if name in _NO_MEMORY_FAILURE else
       HW_CORRUPTED_KB if name in _NO_POISON_PAGE else HW_CORRUPTED) + exps
    + lifecycle(_SCENARIOS[name], exps) + window_state(_SCENARIOS[name], exps)
    for name, exps in _EXPECTATIONS.items()
}

# every iteration of a race ends in a documented outcome (see race_runner.violations)
EXPECTATIONS.update({race.name: (Expect("kernel", "violations", "none",
                                        src.MADVISE_FAULT_RACE if race.injector == races.MADVISE
                                        else src.DAX_LOCK_RACE),)
                     for race in races.RACES})

# Cases where the kernel does not do what the sources above say, each found by
# a run, understood and explained. They are reported as deviations (never as
# passes); a kernel that starts doing the documented thing simply passes.
#
# A case explains an observation only as a whole: every value it names must be
# observed together (a late-only B that is unmapped but reads the old data is
# not the "still mapped" case), on a kernel series it was seen on (elsewhere:
# a failure, "unconfirmed"), and where it depends on a fact, with the fact read.
# Seen: README, "Known deviations": 6.1.0-56, 6.12.118+deb13, 7.3.4+deb13
# unless said otherwise, and 7.2.13 for the unbind hang.
SEEN = Seen("6.1.0-56", "7.3.4")


def deviation(scenario: str, case: str, values: tuple[Value, ...], kind: str,
              explanation: str, source: Source, seen: Seen = SEEN, *,
              paths: frozenset[str] = ALL_PATHS,
              fact_lacks: tuple[str, str] | None = None) -> tuple[KnownDeviation, ...]:
    """One known case: the values it explains, one entry each, all of them jointly."""
    return tuple(KnownDeviation(scenario, v.participant, v.field, v.observed, kind, explanation,
                                source, seen, paths, v.kernels, fact_lacks, v.regex, case)
                 for v in values)


_REFAULT = ("the page was unmapped, but the next load faults it in again: the fsdax fault "
            "path checks only the pmem bad-block list, which software injection leaves "
            "empty, so the process reads the old data and lives on. On real hardware the "
            "load would consume the poison and raise BUS_MCEERR_AR.")
_NO_UNMAP = ("no process qualified for a signal (no early-kill mapper, and the injecting "
             "process maps nothing), so unmap_and_kill() unmapped nothing and the late-kill "
             "mapper keeps a live mapping of the poisoned page: its load reads it without "
             "any fault, and it lives on.")
_TWICE = ("the fsdax path (memory_failure_dev_pagemap()) runs before, and instead of, the "
          "PG_hwpoison test that ends a second injection of an ordinary page with -EHWPOISON: "
          "the already poisoned page is handled again, its mappers are signalled again, and "
          "it is counted again ('recovery action for dax page: Recovered' twice).")
_NO_CLEAR = ("the NVDIMM bus offers no clear_error command (see the nd_bus_commands fact: "
             "QEMU's emulated NVDIMM implements no Clear Uncorrectable Error function), so "
             "pmem_clear_poison() clears nothing, pmem_recovery_write() writes nothing and "
             "the whole-page write fails with EFAULT; the bad block stays, and the read back "
             "fails. On an NVDIMM that can clear errors the write succeeds and clears it.")
_CLEAR = ("nd_bus_commands", "clear_error")
# the unbind's stuck task, innermost frame first (kernel.stuck_stack())
_UNBIND_HANG_STACK = (r"no return within \d+ s: .*\bdax_lock_mapping_entry\b.*"
                      r"\bmf_dax_kill_procs\b.*\bxfs_dax_notify_dev_failure\b.*")
_REFLINK_WARN = (r"(WARN fs/dax\.c dax_(insert|disassociate)_entry|new taint W)"
                 r"(; (WARN fs/dax\.c dax_(insert|disassociate)_entry|new taint W))*")
_NO_BAD_RANGE = "none"  # kernel.badblocks: software poison records no bad block

_LAST_OWNER = ("before v6.2 a fsdax page has one page->mapping, and the last file to fault "
               "the shared block overwrote it (the WARN in dax_associate_entry()): "
               "dax_lock_page() locks that file's mapping, and mf_generic_kill_procs() "
               "collects and unmaps only that file's mappers (here the clone's, mapped "
               "last). The other file's early-kill mapper is not signalled and its mappers "
               "keep the poisoned page mapped. XFS with rmapbt walks every owner and does "
               "not lose them.")
_OWNER_UNMAPPED_NOTHING = (
    "nothing was collected for the clone: its only mapper Y is late kill (and, on the "
    "generic path before v6.2, page->mapping named the clone alone), and unmap_and_kill() "
    "unmaps an owner's mapping only when it collected a process of that owner, as for "
    "corrupt-pfn-late-only. So Y keeps the poisoned page mapped although X, the file's "
    "early mapper, was handled (notify_failure: mf_dax_kill_procs() runs once per owner); "
    "its load reads the page without a fault, and it lives on.")
_SHARED_REFAULT = ("Y had no page-table entry for the page when it was poisoned, so nothing "
                   "was collected for it; its first load faults the page in, and the fsdax "
                   "fault path checks only the pmem bad-block list, which software injection "
                   "leaves empty: it reads the old data and lives on. On real hardware the "
                   "load would consume the poison and raise BUS_MCEERR_AR.")
_6_1 = Seen("6.1.0-56", "6.1.0-56")
_FIRST_MAPPER_ZAPPED = (
    "from v6.2 every fault on a shared extent unmaps that page from every other mapping of "
    "the same file (fs/dax.c dax_insert_entry(): 'if (shared || ...) unmap_mapping_pages("
    "mapping, index, 1, false)'), so when the file's second mapper faulted its window, the "
    "first one lost every page-table entry of it (its window is all unmapped before the "
    "poison arrives); with no entry for the page nothing is collected for it "
    "(dev_pagemap_mapping_shift() is 0, add_to_kill() skips it): the early-kill mapper gets "
    "no signal, and with nobody collected for that file its late mapper keeps the page.")
_SHARED_REFUSED = (
    "from v6.15 ('fs/dax: Remove PAGE_MAPPING_DAX_SHARED mapping flag') a page that a "
    "second file faults has folio->mapping NULL; on the generic path dax_lock_folio() then "
    "cannot lock it and memory_failure() returns -EBUSY: nobody is signalled or unmapped, "
    "'recovery action for dax page: Failed'. The commit assumes a filesystem with shared "
    "pages handles ->notify_failure, which XFS without rmapbt does not.")
_7_3 = Seen("7.3.4", "7.3.4")
_NEWER = Seen("6.12.118", "7.3.4")
# where the shared-extent cases that hold on every path were seen (6.12: on
# xfs-rmapbt; its generic path oopses first, see vm.outcomes.KNOWN_CRASHES)
_SHARED_SEEN = Seen("6.1.0-56", "7.3.4")


def _unsignalled(name: str, pmd: bool = False) -> tuple[Value, ...]:
    """An early-kill mapper that memory-failure never collected: no signal, still mapped."""
    where = (Value(name, "si_addr_extent", "no signal"), Value(name, "range", "512 of 512 pages "
                                                                 "mapped")) if pmd else (
        Value(name, "si_addr", "no signal"), Value(name, "mapping", "mapped"),
        Value(name, "window", "all mapped"))
    return (Value(name, "signal", "none"), Value(name, "si_addr_lsb", "no signal"), *where,
            Value(name, "exit", ALIVE))


def _kept(name: str) -> tuple[Value, ...]:
    """A late-kill mapper left mapped."""
    return (Value(name, "mapping", "mapped"), Value(name, "window", "all mapped"))


def _zapped_first(name: str) -> tuple[Value, ...]:
    """An early-kill first mapper whose entries a later fault of the file took away."""
    return (Value(name, "signal", "none"), Value(name, "si_addr", "no signal"),
            Value(name, "si_addr_lsb", "no signal"), Value(name, "window", "all unmapped"),
            Value(name, "exit", ALIVE))


_ZAPPED_CASES = (
    (shared.CORRUPT_PFN_SHARED.name, (*_zapped_first("XE"), *_kept("XL"),
                                      *_zapped_first("YE"), *_kept("YL"))),
    (shared.MADVISE_SHARED.name, (*_zapped_first("YE"), *_kept("YL"))),
)
_BUSY = (Value("I", "injection", "Device or resource busy"),
         Value("kernel", "recovery_action", "Failed"))
_REFUSED_CASES = (
    (shared.CORRUPT_PFN_REFLINK.name, (*_BUSY, *_unsignalled("X"), *_unsignalled("Y"))),
    (shared.CORRUPT_PFN_SHARED.name, _BUSY),
    (shared.MADVISE_SHARED.name, (Value("kernel", "recovery_action", "Failed"),
                                  *_unsignalled("A"))),
    (shared.CORRUPT_PFN_SHARED_UNSHARE.name, (*_BUSY, *_unsignalled("X"))),
    (shared.CORRUPT_PFN_SHARED_PMD.name, (*_BUSY, *_unsignalled("X", pmd=True),
                                          *_unsignalled("Y", pmd=True))),
)

_LOST_OWNER_CASES = (
    (shared.CORRUPT_PFN_REFLINK.name, _unsignalled("X")),
    (shared.CORRUPT_PFN_SHARED.name, (*_unsignalled("XE"), *_kept("XL"))),
    (shared.MADVISE_SHARED.name, _unsignalled("A")),
    (shared.CORRUPT_PFN_SHARED_UNSHARE.name, _unsignalled("X")),
    (shared.CORRUPT_PFN_SHARED_PMD.name, _unsignalled("X", pmd=True)),
)

KNOWN_DEVIATIONS: tuple[KnownDeviation, ...] = (
    *(d for name, values in _ZAPPED_CASES for d in deviation(
        name, "first mapper zapped by a shared fault", values, KERNEL_DEVIATION,
        _FIRST_MAPPER_ZAPPED, src.DAX_SHARED_FAULT_UNMAP, _NEWER)),
    *(d for name, values in _REFUSED_CASES for d in deviation(
        name, "shared page refused", values, KERNEL_DEVIATION, _SHARED_REFUSED,
        src.DAX_LOCK_PAGE, _7_3, paths=_GENERIC)),
    *(d for name, values in _LOST_OWNER_CASES for d in deviation(
        name, "last owner only", values, KERNEL_DEVIATION, _LAST_OWNER, src.COMMIT_DAX_SHARE,
        _6_1, paths=_GENERIC)),
    *deviation(shared.CORRUPT_PFN_SHARED_UNSHARE.name, "clone not unmapped",
               (*_kept("Y"), Value("Y", "access", "old data"),
                Value("Y", "access_si_addr", "no signal"), Value("Y", "exit", ALIVE)),
               KERNEL_DEVIATION, _OWNER_UNMAPPED_NOTHING, src.UNMAP_AND_KILL, _SHARED_SEEN),
    *deviation(shared.CORRUPT_PFN_SHARED_FAULT.name, "refault",
               (Value("Y", "access", "old data"), Value("Y", "access_si_addr", "no signal"),
                Value("Y", "exit", ALIVE), Value("kernel", "badblocks", _NO_BAD_RANGE)),
               INJECTION_LIMIT, _SHARED_REFAULT, src.PMEM_BADBLOCKS, _SHARED_SEEN),
    *deviation(locking.CORRUPT_PFN_UNPOISON.name, "unpoison refused",
               (Value("I", "unpoison", "Input/output error"),),
               KERNEL_DEVIATION, "unpoison_memory() starts with pfn_to_online_page(), which "
               "is NULL for every ZONE_DEVICE page, and returns -EIO without a message: a "
               "software-poisoned fsdax page can never be unpoisoned (traced with the "
               "function_graph tracer on 6.12; seen on 6.1, 6.12 and 7.3, both paths). It "
               "stays poisoned until its namespace is disabled and enabled again.",
               src.UNPOISON_MEMORY),
    # before v6.2 a block shared by two files cannot be mapped from both
    *(d for sc in shared.SCENARIOS for d in deviation(
        sc.name, "shared block WARN",
        (Value("kernel", "health", _REFLINK_WARN, regex=True,
               kernels=KernelRange(until=Version(6, 2, 0))),),
        KERNEL_DEVIATION, "mapping a reflinked block from the second file hits "
        "WARN_ON_ONCE(page->mapping) in dax_associate_entry() (seen at "
        "fs/dax.c:380 dax_insert_entry on 6.1, and dax_disassociate_entry at "
        "unmount): a fsdax page could belong to one file only until shared pages "
        "got page->share, and the second file's fault overwrites page->mapping (the "
        "kernel itself warns 'DAX enabled. Warning: EXPERIMENTAL' on this XFS).",
        src.COMMIT_DAX_SHARE, Seen("6.1.0-56", "6.1.0-56"))),
    # the hang is this stuck stack; a call that failed otherwise is no such hang
    *deviation(unbind.UNBIND_MOUNTED.name, "unbind hang",
               (Value("I", "injection", "hung"),
                Value("kernel", "kernel_hung", _UNBIND_HANG_STACK, regex=True)),
               KERNEL_DEVIATION,
               "the unbind never returns: xfs_dax_notify_dev_failure() with "
               "MF_MEM_PRE_REMOVE signals the first mapper, then spins in "
               "dax_lock_mapping_entry() called from mf_dax_kill_procs() (the stuck CPU's "
               "backtrace is kept in the kernel_hung fact), and the nvdimm bus lock stays "
               "held, so ndctl blocks too. The session ends after this test; the kernel "
               "needs a reboot. A regression after 6.12: 6.12.118 completes the unbind "
               "and passes, 7.2.13 and 7.3.4 hang.",
               src.COMMIT_PRE_REMOVE, Seen("7.2.13", "7.3.4"),
               paths=frozenset({"notify_failure"})),
    *deviation(locking.CORRUPT_PFN_TWICE.name, "handled twice",
               (Value("I", "injection2", "ok"),
                Value("kernel", "hardware_corrupted_kb", "+8"),
                Value("kernel", "memory_failure_stats", "total +2, recovered +2",
                      kernels=KernelRange(since=_V6_4))),
               KERNEL_DEVIATION, _TWICE, src.ALREADY_POISONED),
    *deviation(fileio.CORRUPT_PFN_FILE_IO.name, "reads old data",
               (*(Value("R", f"io:{op}", "old data") for op in ("read", "pread", "odirect_read")),
                Value("kernel", "badblocks", _NO_BAD_RANGE)),
               INJECTION_LIMIT, "software poison sets PG_hwpoison only; the pmem driver "
               "checks its bad-block list, which stays empty, so the reads return the old "
               "data. On real hardware they would consume the poison and fail with EIO.",
               src.PMEM_BADBLOCKS),
    *deviation(fileio.BADBLOCKS_FILE_IO.name, "no clear_error",
               (Value("R", "io:write_page", "Bad address"),
                Value("kernel", "badblocks", "1 bad range"),
                Value("R", "io:pread_after_write", "Input/output error")),
               INJECTION_LIMIT, _NO_CLEAR, src.DAX_RECOVERY_WRITE, fact_lacks=_CLEAR),
    # the same emulated bus under a machine check's bad range
    *deviation(machine_check.MCE_FILE_IO.name, "no clear_error",
               (Value("R", "io:write_page", "Bad address"),
                Value("kernel", "badblocks", "1 bad range"),
                Value("R", "io:pread_after_write", "Input/output error")),
               INJECTION_LIMIT, _NO_CLEAR, src.DAX_RECOVERY_WRITE, fact_lacks=_CLEAR),
    *deviation(access.MADVISE_LATE_ACCESS.name, "refault",
               (Value("B", "access", "old data"), Value("B", "access_si_addr", "no signal"),
                Value("B", "exit", ALIVE),
                Value("B", "mapping", "unmapped"), Value("kernel", "badblocks", _NO_BAD_RANGE)),
               INJECTION_LIMIT, _REFAULT, src.PMEM_BADBLOCKS),
    *deviation(access.CORRUPT_PFN_LATE_ONLY.name, "nothing unmapped",
               (Value("B", "mapping", "mapped"), Value("B", "window", "all mapped"),
                Value("B", "access", "old data"), Value("B", "access_si_addr", "no signal"),
                Value("B", "exit", ALIVE)),
               KERNEL_DEVIATION, _NO_UNMAP, src.UNMAP_AND_KILL),
)

# The kernel deviations of a corrupt-pfn scenario are memory-failure's on a dax
# page, whoever called it: its machine-check twin inherits them (memory_failure()
# is the same function; the machine check's flags lack only MF_SW_SIMULATED,
# which hwpoison_filter() and the accounting read). A twin that behaves
# otherwise fails, and says so. The software-injection limits are not
# inherited: under a machine check they are re-judged.
# What the corrupt-pfn write returned (EBUSY where memory-failure refuses the
# page) has no counterpart under a machine check, whose injection is QEMU's
# answer: the refusal shows in the recovery action alone (seen on 7.3.4, the
# shared page refused on the generic path: "ok", "recovery action for dax
# page: Failed", nobody signalled).
_TWIN_DROPS = {("I", "injection")}
KNOWN_DEVIATIONS += tuple(dataclasses.replace(d, scenario=name)
                          for name, twin in machine_check.TWINS.items()
                          for d in KNOWN_DEVIATIONS
                          if d.kind == KERNEL_DEVIATION and d.scenario == twin
                          and (d.participant, d.field) not in _TWIN_DROPS)
# Before v6.5 a user-mode action-required check with RIPV clear never reached
# memory_failure(): do_machine_check() queued kill_me_now() whenever RIPV was
# clear, usable address or not; commit e40879b6d7d8 (not in 6.1.y) queues
# kill_me_maybe() for every usable address, so that the page is marked poisoned.
KNOWN_DEVIATIONS += deviation(
    machine_check.MCE_AR_NORIPV_SELF.name, "kill_me_now",
    (Value("A", "signal", "128"), Value("A", "si_addr", "0x0"), Value("A", "si_addr_lsb", "0"),
     Value("A", "mapping", "mapped"), Value("A", "window", "all mapped"),
     Value("kernel", "path", "none"), Value("kernel", "hardware_corrupted_kb", "+0"),
     Value("kernel", "recovery_action", "none")),
    KERNEL_DEVIATION, "with MCG_STATUS.RIPV clear the #MC handler killed the consuming task "
    "with kill_me_now() (SIGBUS, si_code SI_KERNEL, no address) and never called "
    "memory_failure(): the page is not marked poisoned (HardwareCorrupted +0) and stays "
    "mapped; only the NFIT notifier records the bad range. Fixed in v6.5 by commit "
    "e40879b6d7d8, which hands every usable address to memory_failure() with MF_MUST_KILL.",
    src.COMMIT_MCE_USABLE_ADDRESS, Seen("6.1.0-57", "6.1.0-57"))
