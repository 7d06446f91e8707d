"""Play a scenario's timeline on a mounted fsdax filesystem and record what happened.

:func:`run` sets the scene (the file, the participants with their kill
policies and threads), then carries out the scenario's steps in order
(:mod:`mfinject.scenarios.steps`), each through its own small method of
:class:`_Play`, and builds the :class:`Observation` from what they saw.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import signal
import time
from dataclasses import dataclass

from mfinject import fs, fsmap, kernel, ledger, pin, pmem, syscalls
from mfinject.errors import MfinjectError
from mfinject.injectors import INJECTORS, UNPOISON_PFN, Injection
from mfinject.observers import ftrace, kmsg, pagemap
from mfinject.observers.tracer import Tracer
from mfinject.participant import (Participant, ParticipantError, ParticipantHung, Reply, Timed,
                                  cast, reply_text)
from mfinject.scenarios import DEFAULT, PMD_SIZE, Proc, Scenario
from mfinject.scenarios import steps as st
from mfinject.scenarios.observation import (Observation, ParticipantObs, SigbusObs,
                                            StepObs)
from mfinject.syscalls import PAGE_SIZE
from mfinject.undo import UndoStack

log = logging.getLogger(__name__)

__all__ = ["FILL", "NotMeaningful", "Observation", "ParticipantObs", "ScenarioError",
           "SigbusObs", "choose_layout", "run"]

FILE_SIZE = 2 << 20
FILL = 0x5A  # every byte of the scenario file
# After an access, an unpoison or a probe (after an injection: the injector's
# settle_quiet_s): nothing new for this long, and no participant's thread with a
# signal still queued or an exit begun (Tracer.settle). 0.5 s before that check,
# in every test, whose signals had all come within milliseconds.
SETTLE_QUIET_S = 0.1
SETTLE_LIMIT_S = 10.0
PTE_WINDOW_PAGES = 8     # a PTE mapper's window
MAX_OFFSET_PAGE = 64     # its first file page is drawn from [1, MAX_OFFSET_PAGE)
PIN_DELAY_MS = 1500  # how long the O_DIRECT read that pins the page stays in flight
# (the injection comes PIN_SETTLE_S after the read starts and takes well under
# 0.5 s under TCG; a read not in flight across it is an error of the test)
PIN_SETTLE_S = 0.5   # after starting it, before the injection
# each participant maps at its own address, 1 GiB apart (2 MiB-aligned for a
# PMD): two processes forked alike would otherwise get the same one, and a
# kernel reporting one's address to the other would go unnoticed
MAP_BASE = 0x7D0000000000
MAP_STRIDE = 1 << 30


class ScenarioError(MfinjectError):
    """The scenario could not be set up; nothing about the kernel was learnt."""


class NotMeaningful(ScenarioError):
    """The scenario does not apply to this filesystem (say, reflink on ext4)."""


SEEDED = "seeded"  # the poisoned page drawn from the seed (the default)
FIRST = "first"    # page 0 of a mapping at file offset 0, as the suite poisoned until v0.3
LAYOUTS = (SEEDED, FIRST)


def choose_layout(scenario: Scenario, seed: int, fs_name: str, how: str = SEEDED) -> st.Layout:
    """Where the poisoned page lies, drawn from the seed: never page 0 of a mapping,
    and (PTE windows) never a mapping at file offset 0. A PMD window is the file's
    first 2 MiB (a PMD needs a 2 MiB-aligned file offset), poisoned in its middle.
    ``how`` = FIRST gives page 0 of the window, at file offset 0."""
    if how == FIRST or scenario.whole_device:
        return st.Layout(0, PMD_SIZE // PAGE_SIZE if scenario.pmd else PTE_WINDOW_PAGES, 0)
    rng = random.Random(f"{seed}:{scenario.name}:{fs_name}")
    if scenario.pmd:
        pages = PMD_SIZE // PAGE_SIZE
        return st.Layout(0, pages, rng.randrange(pages // 4, 3 * pages // 4))
    # neither the window's first page nor its last: a kernel that unmapped from the
    # mapping's start to the page, or from the page to the end, is told apart
    return st.Layout(rng.randrange(1, MAX_OFFSET_PAGE), PTE_WINDOW_PAGES,
                     rng.randrange(1, PTE_WINDOW_PAGES - 1))


class _OnThread:
    """A participant seen through one of its threads: what an injector calls."""

    def __init__(self, p: Participant, thread: int) -> None:
        self.p = p
        self.thread = thread
        self.name = f"{p.name} thread {thread}"

    def request(self, op: str, **args: object) -> Reply | None:
        # the worker's reply is passed through as the reply to "on_thread"
        return self.p.request("on_thread", thread=self.thread, do=op, args=args)


@dataclass
class _Person:
    """One participant and what the steps learnt of it."""

    proc: Proc
    p: Participant
    kill_policy: str = "?"
    vaddr: int | None = None
    file: str = st.MAIN  # the file its window maps
    # a second mapping of the same file (MapAgain): its address, how many pages
    # earlier in the file it starts, and its pages' state before and after
    vaddr2: int | None = None
    back2: int = 0
    range_before2: str | None = None
    range_after2: str | None = None
    range_before: str | None = None
    # after the injection: (poisoned page present, its pfn, pages present, bits)
    after: tuple[bool | None, int | None, int | None, str | None] = (None, None, None, None)
    access: tuple[str, SigbusObs | None] | None = None
    signals_before_access: int | None = None
    read: str | None = None
    io: tuple[tuple[str, str], ...] = ()
    pin: str | None = None
    unpoison: str | None = None
    injection: str | None = None
    injection2: str | None = None
    wrote: str | None = None


def _exit_text(status: int | None) -> str:
    if status is None:
        return "alive"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited {status}"


def _bits(entries: list[pagemap.PagemapEntry]) -> str:
    return "".join("1" if e.present else "0" for e in entries)


POLICY_NAMES = {syscalls.PR_MCE_KILL_EARLY: "early", syscalls.PR_MCE_KILL_LATE: "late",
                syscalls.PR_MCE_KILL_DEFAULT: "default"}


def _check_meaningful(scenario: Scenario, mount: fs.Mount) -> None:
    if scenario.only_path and mount.mf_path != scenario.only_path:
        raise NotMeaningful(f"{scenario.name} on {mount.kind.name} ({mount.mf_path} path): "
                            + scenario.why_limited)
    if scenario.needs_reflink and not mount.reflink:
        raise NotMeaningful(f"{scenario.name} needs shared extents: {mount.kind.name} has "
                            "no reflink")
    if scenario.since:
        v = kernel.Version.parse(kernel.release())
        if (v.major, v.minor) < scenario.since:
            raise NotMeaningful(f"{scenario.name} on {kernel.release()}: "
                                + scenario.why_limited)


class _Play:
    """The state of one run of a scenario, and one method per kind of step."""

    def __init__(self, scenario: Scenario, mount: fs.Mount, namespace: pmem.Namespace,
                 trace_session: ftrace.FunctionTrace | None, layout: st.Layout,
                 tracer: Tracer) -> None:
        self.scenario, self.mount, self.namespace = scenario, mount, namespace
        self.trace_session, self.layout, self.tracer = trace_session, layout, tracer
        self.injector = INJECTORS[scenario.injector](namespace)
        self.files = {st.MAIN: fs.create_file(mount, f"{scenario.name}.dat", FILE_SIZE,
                                              fill=FILL, align=scenario.pmd)}
        ledger.check_fresh_ranges(fs.pfn_ranges(self.files[st.MAIN], pmem.data_start(namespace)),
                                  self.files[st.MAIN])
        self.people: dict[str, _Person] = {}
        self.pfns: dict[str, int] = {}
        self.pin_device: str | None = None
        self.shift: dict[str, int] = {st.MAIN: 0}  # where each file holds the main file's pages
        self.pins: list[_Person] = []  # O_DIRECT reads in flight, to be waited for
        self.t0: int | None = None
        self.injection: Injection | None = None
        self.inj_window = Timed(None)
        self.hw_before = 0
        self.mf_before: dict[str, int] = {}
        # bad blocks already recorded (a machine check's outlive its test): not this test's
        self.bad_before = frozenset(pmem.badblocks(namespace))
        self.trace: ftrace.Trace | None = None
        self.observed_after = False
        self.hung: str | None = None  # a call the kernel never returned from
        # what owned the poisoned page's block just before the injection (fsmap)
        self.owner: tuple[str, str] | None = None
        self.owner_after: str | None = None  # read again after the injection
        self.done: list[StepObs] = []
        self.start_ms: list[float] = []  # each participant's start, to its first answer

    # -- helpers --------------------------------------------------------------
    @property
    def window(self) -> int:
        return self.layout.pages * PAGE_SIZE

    def file_offset(self, file: str) -> int:
        """The poisoned page's byte offset in ``file``."""
        return (self.layout.file_page + self.shift[file]) * PAGE_SIZE

    def window_offset(self, file: str) -> int:
        return (self.layout.offset_page + self.shift[file]) * PAGE_SIZE

    def address_for(self, who: _Person) -> int:
        return MAP_BASE + MAP_STRIDE * (1 + list(self.people).index(who.proc.name))

    def poison_addr(self, who: _Person) -> int | None:
        return None if who.vaddr is None else who.vaddr + self.layout.index * PAGE_SIZE

    @property
    def pfn(self) -> int:
        if len(set(self.pfns.values())) != 1:
            raise ScenarioError(f"mappers see different pfns (or none): {self.pfns}")
        return next(iter(self.pfns.values()))

    def t0_or_now(self) -> int:
        return self.t0 if self.t0 is not None else time.monotonic_ns()

    def _state(self, who: _Person, vaddr: int | None = None, index: int | None = None
               ) -> tuple[bool | None, int | None, int | None, str | None]:
        """The poisoned page's entry and the window's present bits: now, or when a
        fatal signal stopped the process. Of the first mapping, or of ``vaddr``
        where the poisoned page is page ``index``."""
        vaddr = who.vaddr if vaddr is None else vaddr
        index = self.layout.index if index is None else index
        if vaddr is None:
            return None, None, None, None
        try:
            if who.p.alive:
                entries = pagemap.read_range(who.p.pid, vaddr, self.window)
            else:
                raws = [r for ev in who.p.log.signals for a, r in ev.pagemap if a == vaddr]
                entries = [pagemap.PagemapEntry(r) for r in (raws[-1] if raws else ())]
        except OSError:  # the process went away between the check and the read
            entries = []
        if len(entries) < self.layout.pages:
            return None, None, None, None
        page = entries[index]
        return page.present, page.pfn, sum(e.present for e in entries), _bits(entries)

    def observe_after(self) -> None:
        """The mappings as the injection left them: taken once, before any later step."""
        if self.observed_after or self.t0 is None:
            return
        self.observed_after = True
        for who in self.people.values():
            if who.vaddr is not None:
                who.after = self._state(who)
            if who.vaddr2 is not None:
                who.range_after2 = self._state(who, who.vaddr2,
                                               self.layout.index + who.back2)[3]

    def access(self, who: _Person, addr: int) -> str:
        """Load one byte; a SIGBUS ends the participant and is the answer."""
        p = who.p
        before = len(p.log.signals)
        if who.signals_before_access is None and self.t0 is not None:
            who.signals_before_access = before
        reply = p.request("touch", addr=addr)
        new = [ev for ev in p.log.signals[before:] if ev.signo == signal.SIGBUS]
        if new:
            ev = new[0]
            who.access = (f"SIGBUS {ev.code_name}",
                          SigbusObs(ev.code_name, ev.addr, ev.addr_lsb,
                                    (ev.at_ns - self.t0_or_now()) / 1e6))
        elif reply is None:
            who.access = (f"died ({p.log.exit_status})", None)
        elif not reply.ok:
            who.access = (f"error {reply.error}", None)
        else:
            who.access = ("old data" if reply.value == FILL else f"data {reply.value:#x}", None)
        return who.access[0]

    def step_hung(self, step: st.Step, e: ParticipantHung) -> str:
        """A step after the injection never returned: the kernel is stuck in it."""
        name = getattr(step, "who", None) or self.scenario.injection.who
        pid = self.people[name].p.pid
        self.hung = (f"{step.describe()}: no return within {self.people[name].p.timeout_s:.0f} "
                     f"s: " + kernel.stuck_stack(pid))
        log.error("%s: %s (%s)", self.scenario.name, self.hung, e)
        self.tracer.pump()
        return "hung"

    def play(self, step: st.Step) -> None:
        """Carry out one step and record what it came to."""
        try:
            outcome = getattr(self, type(step).__name__.lower())(step)
        except ParticipantHung as e:
            if self.t0 is None:  # before any poison: the scene could not be set
                raise ScenarioError(f"{step.describe()}: {e}") from e
            outcome = self.step_hung(step, e)
        self.done.append(StepObs(step.describe(), outcome))

    def injection_hung(self) -> None:
        """Collect what the tracer has queued: the injection never returned."""
        self.tracer.pump()

    def mount_facts(self) -> list[tuple[str, str]]:
        """The filesystem's features as read back after mkfs and mount."""
        return list(self.mount.features.as_facts())

    # -- the steps ------------------------------------------------------------
    def clone(self, s: st.Clone) -> str:
        self.files[s.dst] = self.mount.path(f"{self.scenario.name}.{s.dst}")
        try:
            fs.reflink_range(self.files[s.src], self.files[s.dst], FILE_SIZE,
                             (self.shift[s.src] + s.shift_pages) * PAGE_SIZE)
            self.shift[s.dst] = self.shift[s.src] + s.shift_pages
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # e.g. XFS before v6.2 shares no blocks of a file with the DAX flag
            raise NotMeaningful(f"{self.scenario.name} on {self.mount.kind.name}: FICLONE of a "
                                f"DAX file refused ({e.strerror}): this kernel shares no blocks "
                                "between DAX files here") from e
        fs.verify_dax(self.files[s.dst])
        return "ok"

    def map(self, s: st.Map) -> str:
        who = self.people[s.who]
        p = who.p
        addr = p.call("mmap", path=self.files[s.file], offset=self.window_offset(s.file),
                      length=self.window, at=self.address_for(who))
        who.vaddr, who.file = addr, s.file
        self.tracer.watch(p.pid, addr, self.window)
        if not s.fault:
            return f"mapped at {addr:#x}"
        with ftrace.trace_injection(self.trace_session) as fault_trace:
            for i in range(1 if self.scenario.pmd else self.layout.pages):
                p.call("touch", addr=addr + i * PAGE_SIZE)
        if self.scenario.pmd:
            got = [res for a, res in fault_trace.pmd_faults if a == addr]
            if "NOPAGE" not in got:
                raise ScenarioError(
                    f"{s.who}: no PMD mapping at {addr:#x} (fs_dax:dax_pmd_fault_done: "
                    f"{got or 'no event'}): the file's extent is not 2 MiB-aligned on "
                    f"{self.mount.kind.name}")
        entries = pagemap.read_range(p.pid, addr, self.window)
        who.range_before = _bits(entries)
        pfn = entries[self.layout.index].pfn
        ledger.check_fresh((e.pfn for e in entries), f"{s.who}'s window of {self.files[s.file]}")
        if pfn is None or "0" in who.range_before:
            raise ScenarioError(f"{s.who}: pages of {addr:#x} not present after a touch of "
                                f"each: {who.range_before}")
        if not self.namespace.contains_pfn(pfn):
            raise ScenarioError(
                f"{s.who}: {self.files[s.file]} maps pfn {pfn:#x}, outside "
                f"{self.namespace.name} {self.namespace.describe_range()}: the mapping is not DAX")
        self.pfns[s.who] = pfn
        return f"mapped at {addr:#x}, poisoned page pfn {pfn:#x}"

    def mapagain(self, s: st.MapAgain) -> str:
        who = self.people[s.who]
        if who.vaddr is None or self.scenario.pmd or s.back_pages > self.layout.offset_page \
                or self.layout.index + s.back_pages >= self.layout.pages:
            raise ScenarioError(f"{s.describe()}: needs a first PTE window that starts at least "
                                f"{s.back_pages} page(s) into the file, with room after the page")
        addr = who.p.call("mmap", path=self.files[who.file],
                          offset=self.window_offset(who.file) - s.back_pages * PAGE_SIZE,
                          length=self.window, at=self.address_for(who) + MAP_STRIDE // 2)
        who.vaddr2, who.back2 = addr, s.back_pages
        self.tracer.watch(who.p.pid, addr, self.window)
        for i in range(self.layout.pages):
            who.p.call("touch", addr=addr + i * PAGE_SIZE)
        entries = pagemap.read_range(who.p.pid, addr, self.window)
        who.range_before2 = _bits(entries)
        pfn = entries[self.layout.index + s.back_pages].pfn
        if pfn != self.pfns.get(s.who):
            raise ScenarioError(f"{s.who}'s second mapping maps pfn {pfn} where the first maps "
                                f"{self.pfns.get(s.who)}: not the same page")
        return f"mapped at {addr:#x}, poisoned page its page {self.layout.index + s.back_pages}"

    def touch(self, s: st.Touch) -> str:
        """Before the injection, a fault that brings the page in; after it, a load whose
        answer (data or SIGBUS) is the participant's access."""
        who = self.people[s.who]
        addr = self.poison_addr(who)
        if addr is None:
            raise ScenarioError(f"{s.who} loads from a mapping it does not have")
        if self.t0 is None:
            who.p.call("touch", addr=addr)
            entries = pagemap.read_range(who.p.pid, who.vaddr, self.window)  # type: ignore[arg-type]
            who.range_before = _bits(entries)
            pfn = entries[self.layout.index].pfn
            if pfn is None:
                raise ScenarioError(f"{s.who}: the page at {addr:#x} is not present after a touch")
            ledger.check_fresh((pfn,), f"{s.who}'s page of {self.files[who.file]}")
            self.pfns[s.who] = pfn
            return f"faulted, pfn {pfn:#x}"
        self.observe_after()
        outcome = self.access(who, addr)
        self.tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
        return outcome

    def unmap(self, s: st.Unmap) -> str:
        who = self.people[s.who]
        who.p.call("munmap", addr=who.vaddr)
        self.tracer.tracees[who.p.pid].watch.clear()
        return "ok"

    def truncate(self, s: st.Truncate) -> str:
        ino = self.own_block(self.files[s.file])
        os.truncate(self.files[s.file], 0)
        os.sync()
        return self.give_back(ino, self.files[s.file])

    def unlink(self, s: st.Unlink) -> str:
        ino = self.own_block(self.files[s.file])
        os.unlink(self.files[s.file])
        os.sync()
        return self.give_back(ino, self.files[s.file])

    def device_offset(self) -> int:
        """The poisoned page's byte offset on the filesystem's block device."""
        return self.pfn * PAGE_SIZE - pmem.data_start(self.namespace)

    def block_owner(self, blocks_on: int = 0) -> tuple[str, str]:
        """What the space map says owns the poisoned page's block (or the one
        ``blocks_on`` after it): the block_owner fact and its description."""
        return fsmap.owner_of(self.mount.mountpoint, self.device_offset() + blocks_on * PAGE_SIZE,
                              PAGE_SIZE)

    def own_block(self, path: str) -> int:
        """The file's inode; where XFS's reverse map will be asked, checked to own the
        poisoned page's block, as the pfn says (the namespace's data start right)."""
        ino = os.stat(path).st_ino
        if self.mount.mf_path == "notify_failure" and not fsmap.owns(
                self.mount.mountpoint, ino, self.device_offset(), PAGE_SIZE):
            raise ScenarioError(
                f"{path} (inode {ino}) does not own device offset {self.device_offset():#x} "
                f"of pfn {self.pfn:#x} by GETFSMAP ({self.block_owner()[1]}): the pfn and the "
                "device disagree on the namespace's data start")
        return ino

    def give_back(self, ino: int, path: str) -> str:
        """Where XFS is told of the failure (its reverse map), wait until the freed
        file owns no block any more: an unlinked inode's blocks are freed by a
        deferred worker. Then say what the poisoned page's block is now."""
        if self.mount.mf_path != "notify_failure":
            return "ok"
        if not fsmap.given_back(self.mount.mountpoint, ino):
            raise ScenarioError(
                f"{path}: inode {ino} still owns blocks {fsmap.GIVE_BACK_LIMIT_S:.0f} s after "
                "it was freed (GETFSMAP): the scenario's freed page never came to be")
        return "ok; its block: " + self.block_owner()[1]

    def findpfn(self, s: st.FindPfn) -> str:
        path = self.files[s.file]
        pfn = (pmem.data_start(self.namespace) + fs.physical_offset(path, self.file_offset(s.file))
               ) // PAGE_SIZE
        if not self.namespace.contains_pfn(pfn):
            raise ScenarioError(f"{path}: its page {self.layout.file_page} maps to pfn "
                                f"{pfn:#x}, outside {self.namespace.name}")
        ledger.check_fresh((pfn,), f"page {self.layout.file_page} of {path}")
        _confirm_extent_pfn(self.tracer, self.namespace, path, self.layout.file_page + 1)
        self.pfns["(extent map)"] = pfn
        return f"pfn {pfn:#x}"

    def findmetadata(self, s: st.FindMetadata) -> str:
        found = fsmap.first_of(self.mount.mountpoint, fsmap.XFS_OWN_AG)
        if found is None:
            raise ScenarioError(f"GETFSMAP on {self.mount.mountpoint} names no per-AG "
                                "metadata block")
        pfn = (pmem.data_start(self.namespace) + found.physical) // PAGE_SIZE
        if not self.namespace.contains_pfn(pfn):
            raise ScenarioError(f"XFS metadata at device offset {found.physical:#x} is pfn "
                                f"{pfn:#x}, outside {self.namespace.name}")
        ledger.check_fresh((pfn,), f"{found.describe()} at {found.physical:#x}")
        self.pfns["(space map)"] = pfn
        return f"pfn {pfn:#x}: {found.describe()} at device offset {found.physical:#x}"

    def pin(self, s: st.Pin) -> str:
        who = self.people[s.who]
        if s.how == "io_uring":
            who.pin = reply_text(who.p.request("io_uring_register", addr=self.poison_addr(who),
                                               length=PAGE_SIZE), "registered")
            return who.pin
        # through op_after: the read reports when it ran, to prove it was in
        # flight across the injection
        who.p.call("start_on_thread", thread=1, do="after", args={
            "seconds": 0, "do": "odirect_into",
            "args": {"device": self.pin_device, "addr": self.poison_addr(who),
                     "length": PAGE_SIZE, "offset": pin.DELAYED_OFFSET}})
        self.pins.append(who)
        time.sleep(PIN_SETTLE_S)
        return "O_DIRECT read started"

    def inject(self, s: st.Inject) -> str:
        who = self.people[s.who]
        by = _OnThread(who.p, s.thread) if s.thread else who.p
        if self.injection is not None:  # again, on the poisoned page
            who.injection2 = self.injector.inject(by, self.poison_addr(who), self.pfn).outcome()
            self.tracer.settle(self.injector.settle_quiet_s, SETTLE_LIMIT_S)
            return who.injection2
        pfn = self.pfn
        addrs = [self.poison_addr(w) for w in self.people.values() if w.vaddr is not None]
        addrs += [w.vaddr2 for w in self.people.values() if w.vaddr2 is not None]
        if len(set(addrs)) != len(addrs):
            raise ScenarioError(f"two mappers map the poisoned page at one address ({addrs}): "
                                "a signal sent to the wrong one could not be told apart")
        if self.mount.mf_path == "notify_failure":  # what XFS's reverse map will say
            kind, what = self.block_owner()
            # a kernel before 5cf32f63b0f4 (v6.5) asks about the next block too
            self.owner = (kind, f"{what} (the next block: {self.block_owner(1)[1]})")
        self.hw_before = kernel.hardware_corrupted_kb()
        self.mf_before = kernel.memory_failure_stats()
        self.t0 = time.monotonic_ns()
        with ftrace.trace_injection(self.trace_session) as trace:
            self.trace = trace
            try:
                self.injection = self.injector.inject(by, self.poison_addr(who), pfn)
                self.inj_window = Timed(self.injection.reply, self.t0, time.monotonic_ns())
            except ParticipantError as e:
                # the call never returned: the kernel is stuck in it
                hung = f"no return within {who.p.timeout_s:.0f} s: " + kernel.stuck_stack(
                    who.p.pid)
                log.error("%s: %s (%s)", self.scenario.name, hung, e)
                self.injection = Injection(self.injector.name, who.p.name, pfn,
                                           self.poison_addr(who), None, hung=hung)
                self.hung = hung
            self.tracer.settle(self.injector.settle_quiet_s, SETTLE_LIMIT_S)
        who.injection = self.injection.outcome()
        if self.scenario.pmd:
            # the kernel may flag the PMD's head page rather than the one injected
            # (mf_dax_kill_procs() on a PMD entry, large fsdax folios): the whole
            # 2 MiB stays off-limits until the namespace is reset
            head = pfn & ~(PMD_SIZE // PAGE_SIZE - 1)
            for p in range(head, head + PMD_SIZE // PAGE_SIZE):
                ledger.note(p)
        if self.owner is not None and not self.injection.hung:
            # the fact judged by must still hold: a block whose owner changed around
            # the injection was judged against the wrong expectation. (Unless the
            # device is gone: unbind-mounted takes it, on 6.12 for good.)
            try:
                self.owner_after = self.block_owner()[0]
            except pmem.PmemError as e:
                log.info("the poisoned block's owner not read again: %s", e)
                self.owner_after = fsmap.UNKNOWN
        if not self.injection.hung:
            for pinned in self.pins:
                pinned.pin = _pin_outcome(pinned.p, self.inj_window)
        return who.injection

    def unpoison(self, s: st.Unpoison) -> str:
        who = self.people[s.who]
        self.observe_after()
        who.unpoison = reply_text(who.p.request("write_file", path=UNPOISON_PFN,
                                                data=f"{self.pfn:#x}\n"))
        self.tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
        return who.unpoison

    def mapafter(self, s: st.MapAfter) -> str:
        who = self.people[s.who]
        self.observe_after()
        reply = who.p.request("mmap", path=self.files[s.file], offset=self.window_offset(s.file),
                              length=self.window, at=self.address_for(who))
        if reply is None or not reply.ok:
            return f"mmap: {reply_text(reply, died='died')}"
        who.vaddr, who.file = reply.value, s.file
        return self.access(who, self.poison_addr(who))  # type: ignore[arg-type]

    def pread(self, s: st.Pread) -> str:
        who = self.people[s.who]
        self.observe_after()
        reply = who.p.request("pread", path=self.files[s.file], offset=self.file_offset(s.file),
                              length=PAGE_SIZE)
        data = reply.value if reply is not None else None
        who.read = reply_text(reply, "old data" if data == [FILL] else f"data {data}",
                              died="died")
        return who.read

    def fileio(self, s: st.FileIO) -> str:
        who = self.people[s.who]
        self.observe_after()
        reply = who.p.request("file_io", path=self.files[s.file], offset=self.file_offset(s.file),
                              fill=FILL)
        io = reply.value if reply is not None and reply.ok else {"file_io": reply_text(reply)}
        who.io = tuple(io.items())
        return "; ".join(f"{k}: {v}" for k, v in who.io)

    def write(self, s: st.Write) -> str:
        who = self.people[s.who]
        self.observe_after()
        who.wrote = reply_text(who.p.request("pwrite", path=self.files[s.file],
                                             offset=self.file_offset(s.file),
                                             data=[FILL ^ 0xFF] * 16),
                               "16 bytes written", died="died")
        return who.wrote

    def probe(self, s: st.Probe) -> str:
        self.observe_after()
        out = []
        for name in self.scenario.mappers():
            who = self.people[name]
            if who.p.alive and who.access is None:
                out.append(f"{name}: {self.access(who, self.poison_addr(who))}")  # type: ignore[arg-type]
        self.tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
        return "; ".join(out) or "nobody left to probe"

    # -- the observation --------------------------------------------------------
    def participant_obs(self, who: _Person, t0: int) -> ParticipantObs:
        p, name = who.p, who.proc.name
        end = who.signals_before_access
        bus = [ev for ev in p.log.signals[:end] if ev.signo == signal.SIGBUS]
        mapped, pfn_after, present, bits = who.after
        maps = self.scenario.maps(name)
        return ParticipantObs(
            name=name, role=self.scenario.describe(name), pid=p.pid, maps=maps,
            policy=who.proc.policy, vaddr=who.vaddr, pfn_before=self.pfns.get(name),
            sigbus=tuple(SigbusObs(ev.code_name, ev.addr, ev.addr_lsb, (ev.at_ns - t0) / 1e6)
                         for ev in bus),
            other_signals=tuple(ev.signal_name for ev in p.log.signals
                                if ev.signo != signal.SIGBUS),
            exit=_exit_text(p.log.exit_status), mapped_after=mapped, pfn_after=pfn_after,
            injection=who.injection, range_present=present,
            range_pages=self.layout.pages if maps else None,
            access=who.access[0] if who.access else None,
            access_sigbus=who.access[1] if who.access else None,
            read=who.read, unpoison=who.unpoison,
            signal_thread=p.thread_name(bus[0].tid) if bus else None,
            kill_policy=who.kill_policy, io=who.io, pin=who.pin, injection2=who.injection2,
            wrote=who.wrote,
            poison_addr=self.poison_addr(who),
            map_offset_page=self.window_offset(who.file) // PAGE_SIZE if maps else None,
            poison_index=self.layout.index if maps else None,
            range_before=who.range_before, range_after=bits,
            poison_addr2=(None if who.vaddr2 is None else
                          who.vaddr2 + (self.layout.index + who.back2) * PAGE_SIZE),
            poison_index2=None if who.vaddr2 is None else self.layout.index + who.back2,
            range_before2=who.range_before2, range_after2=who.range_after2,
        )


def _confirm_extent_pfn(tracer: Tracer, namespace: pmem.Namespace, path: str, page: int) -> None:
    """The extent map's PFN is the page's own: checked on another page of the file.

    FIEMAP gives where a block lies in the filesystem; the namespace's data
    start turns that into a PFN. A wrong sum would poison another page, and
    on the generic path could still pass (EBUSY either way). The poisoned
    page must stay never mapped, so a fresh process maps and faults ``page``
    instead and pagemap must give the PFN the same sum gives for it.
    """
    want = (pmem.data_start(namespace) + fs.physical_offset(path, page * PAGE_SIZE)) // PAGE_SIZE
    # its own process, closed alone (a nested cast() would kill every traced
    # participant of the scenario on its way out)
    x = Participant("X", tracer)
    try:
        addr = x.call("mmap", path=path, offset=page * PAGE_SIZE, length=PAGE_SIZE)
        x.call("touch", addr=addr)
        got = pagemap.read_entry(x.pid, addr).pfn
    finally:
        x.close()
    if got != want:
        raise ScenarioError(f"{path}: the extent map gives pfn {want:#x} for page {page}, but "
                            f"the page mapped there is pfn {got if got is None else hex(got)}: "
                            "the extent-map pfn of the poisoned page cannot be trusted either")


def _pin_outcome(p: Participant, injection: Timed) -> str:
    """The pinning O_DIRECT read's outcome, once it is shown to have spanned the injection.

    A read that completed before the injection began (or began after it)
    pinned nothing at the moment that matters: the scenario could not set up
    what it is about, an error of the test rather than a claim on the kernel.
    """
    read = Timed.of(p.request("wait_thread", thread=1, timeout=PIN_DELAY_MS / 1000 + 10))
    done = reply_text(read.reply, f"completed, {read.reply.value if read.reply else 0} bytes")
    if None in (read.start_ns, read.end_ns, injection.start_ns, injection.end_ns):
        raise ScenarioError(f"the O_DIRECT read that pins the page did not say when it ran "
                            f"({done})")
    before = (injection.start_ns - read.start_ns) / 1e6  # type: ignore[operator]
    after = (read.end_ns - injection.end_ns) / 1e6  # type: ignore[operator]
    log.info("O_DIRECT read began %.0f ms before the injection, ended %.0f ms after it",
             before, after)
    if before <= 0 or after <= 0:
        raise ScenarioError(f"the O_DIRECT read was not in flight across the injection (it "
                            f"began {before:.0f} ms before it and ended {after:.0f} ms after "
                            f"it): the pin this scenario is about was not there ({done})")
    return f"O_DIRECT read in flight at the injection: {done}"


def _cast(play: _Play, people: dict[str, Participant]) -> None:
    """Start every participant with its kill policy and threads."""
    for proc in play.scenario.procs:
        t0 = time.monotonic()
        p = Participant(proc.name, play.tracer, policy_before_fork=proc.policy_before_fork)
        people[proc.name] = p
        p.call("mce_kill_get")  # forked, seized and answering: what a participant costs
        play.start_ms.append(round((time.monotonic() - t0) * 1000, 1))
        if proc.policy != DEFAULT:
            p.call("mce_kill", policy=proc.policy)
        if proc.threads:
            p.start_threads(proc.threads)
        for thread, pol in proc.thread_policies:
            p.call("on_thread", thread=thread, do="mce_kill", args={"policy": pol})
        play.people[proc.name] = _Person(proc, p, POLICY_NAMES.get(p.call("mce_kill_get"), "?"))


def _observation(play: _Play, records: list[object], started: float) -> Observation:
    injection = play.injection
    hung = injection is not None and injection.hung  # nothing after it was measured
    t0 = play.t0_or_now()
    trace = play.trace
    facts = [("layout", play.layout.describe()), *play.mount_facts(),
             ("fs_device", os.path.basename(play.mount.devpath)),
             ("participant_start_ms", ", ".join(f"{ms:g}" for ms in play.start_ms))]
    if play.hung:
        facts.append(("kernel_hung", play.hung))
    if play.owner is not None:
        facts += [("block_owner", play.owner[0]), ("block_owner_detail", play.owner[1])]
    if play.owner_after is not None:
        facts.append(("block_owner_after", play.owner_after))
    if not hung:
        facts += [("memory_failure_stats",
                   kernel.stats_delta(play.mf_before, kernel.memory_failure_stats())),
                  ("nd_bus_commands", pmem.bus_commands(play.namespace))]
    return Observation(
        scenario=play.scenario.name, title=play.scenario.title, injector=play.scenario.injector,
        fs=play.mount.kind.name, path=play.mount.mf_path, kernel=kernel.release(),
        pfn=play.pfn,
        participants=tuple(play.participant_obs(w, t0) for w in play.people.values()),
        dmesg=tuple(str(r) for r in records),
        hardware_corrupted_delta_kb=0 if hung else kernel.hardware_corrupted_kb() - play.hw_before,
        badblocks=() if hung else tuple(b for b in pmem.badblocks(play.namespace)
                                        if b not in play.bad_before),
        duration_s=round(time.monotonic() - started, 3),
        path_observed=trace.path if trace else "not traced",
        trace_calls=() if hung or not trace else tuple(trace.calls),
        memory_failure_events=() if hung or not trace else tuple(trace.events),
        facts=tuple(facts), steps=tuple(play.done),
    )


def pins_with_odirect(scenario: Scenario) -> bool:
    return any(isinstance(s, st.Pin) and s.how == "odirect" for s in scenario.steps)


def run(scenario: Scenario, mount: fs.Mount, namespace: pmem.Namespace,
        trace_session: ftrace.FunctionTrace | None = None, seed: int = 0,
        layout: str = SEEDED, pin_device: pin.SessionDevice | None = None) -> Observation:
    started = time.monotonic()
    _check_meaningful(scenario, mount)
    tracer = Tracer()
    play = _Play(scenario, mount, namespace, trace_session,
                 choose_layout(scenario, seed, mount.kind.name, layout), tracer)
    log.info("%s: %s", scenario.name, play.layout.describe())
    with UndoStack() as undo, cast(tracer) as people, contextlib.ExitStack() as stack:
        if pins_with_odirect(scenario):
            try:
                play.pin_device = (pin_device.get() if pin_device is not None
                                   else stack.enter_context(pin.delayed_device(PIN_DELAY_MS)))
            except pin.PinError as e:
                raise ScenarioError(f"cannot pin a page with O_DIRECT: {e}") from e
        if scenario.early_kill_sysctl:
            undo.sysctl("vm.memory_failure_early_kill", str(scenario.early_kill_sysctl))
        _cast(play, people)
        with kmsg.capture() as log_capture:
            for step in scenario.steps:
                play.play(step)
                if play.hung:
                    # nothing more can be asked of this kernel: record what was seen
                    play.injection_hung()
                    break
            play.observe_after()
            records = log_capture.read()
        return _observation(play, records, started)
