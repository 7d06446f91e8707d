"""Scenarios: who maps the page, with which kill policy, and who poisons it.

A scenario is data (:class:`Scenario`); :mod:`mfinject.scenarios.runner`
plays it on a mounted fsdax filesystem and returns an
:class:`~mfinject.scenarios.runner.Observation`. What the kernel should do is
not here but in :mod:`mfinject.expectations`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mfinject.observers.mflog import POISONING, KernelMessage

PMD_SIZE = 2 << 20
DEFAULT = "default"  # follows vm.memory_failure_early_kill, which the suite sets to 0
EARLY = "early"      # prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY)
LATE = "late"        # prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_LATE)


@dataclass(frozen=True)
class Role:
    name: str
    maps: bool
    policy: str = DEFAULT
    injects: bool = False
    # maps and touches the page (so the suite learns its PFN), then unmaps it
    # before the injection: nobody maps the page when the poison arrives
    unmaps_before: bool = False
    # maps and touches the page only after the injection (a fresh fault)
    maps_after: bool = False
    # after the injection, reads the poisoned page with pread()
    reads_after: bool = False
    # more threads in the process (thread 1, 2, ...), and per-thread kill policies
    threads: int = 0
    thread_policies: tuple[tuple[int, str], ...] = ()
    # which thread issues the injection call: 0 is the main thread
    inject_thread: int = 0
    # the policy is set by a parent that then forks this participant: inherited
    policy_before_fork: str | None = None
    # after the injection: read(), pread(), O_DIRECT read, a sub-page write, a
    # whole-page write and a read back, on the poisoned page through the file
    io_after: bool = False
    # the page is pinned at the injection: "odirect" (an O_DIRECT read into the
    # mapping is in flight) or "io_uring" (the mapping registered as a fixed buffer)
    pin: str | None = None
    # which file it maps: "main", or "clone" (a FICLONE reflink copy of main)
    maps_file: str = "main"

    def describe(self) -> str:
        parts = ["maps the page" if self.maps else "maps nothing", f"{self.policy} kill"]
        if self.unmaps_before:
            parts[0] = "mapped the page, unmapped it before the injection"
        if self.injects:
            parts.append("injects")
        return f"{self.name} ({', '.join(parts)})"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    injector: str  # a key of mfinject.injectors.INJECTORS
    roles: tuple[Role, ...]
    # after the injection has settled, every mapper still alive loads a byte
    # from its mapping again: SIGBUS (which code), or the data it reads
    probe_access: bool = False
    # how much of the file each mapper maps; PMD_SIZE asks for a PMD mapping
    # (2 MiB-aligned extent and address), checked through smaps FilePmdMapped
    map_size: int = 4096
    # vm.memory_failure_early_kill during the scenario (the suite's default is 0)
    early_kill_sysctl: int = 0
    # truncate the file to 0 after the mappers unmapped: the page then belongs
    # to no file, the zero-reference case dax_lock_page() must refuse
    truncate_before: bool = False
    # unlink the file instead (nobody holds it open): its blocks are freed
    unlink_before: bool = False
    # nobody ever maps the page: its PFN comes from the file's extent map
    # (FIEMAP) and the namespace's physical start, so page->mapping was never set
    pfn_from_extent_map: bool = False
    # after the injection, the injecting process writes the PFN to unpoison-pfn
    unpoison_after: bool = False
    # inject a second time once the first injection has settled
    inject_twice: bool = False
    # the scenario needs a filesystem with reflink (FICLONE); elsewhere it is not meaningful
    needs_reflink: bool = False
    # the scenario is meaningful only on this memory-failure path, from this release
    only_path: str | None = None
    since: tuple[int, int] | None = None
    why_limited: str = ""
    # what it may make mm/memory-failure.c log (mfinject.observers.mflog): any
    # other memory-failure line is a kernel-health finding
    kernel_messages: tuple[KernelMessage, ...] = POISONING

    @property
    def injecting_role(self) -> Role:
        (role,) = [r for r in self.roles if r.injects]
        return role
