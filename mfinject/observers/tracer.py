"""SIGBUS delivery observed from outside the victim, through ptrace.

A Python signal handler cannot return from a synchronous BUS_MCEERR_AR: the
faulting access would repeat for ever. So the victim never handles SIGBUS
itself. The test process seizes every participant with PTRACE_SEIZE; each
signal stops the tracee in signal-delivery-stop, where PTRACE_GETSIGINFO gives
the exact si_code, si_addr and si_addr_lsb the kernel queued. At that moment,
before the signal takes effect, the tracer also reads the tracee's pagemap for
the addresses it was asked to watch. The signal is then delivered as the
kernel meant it (SIGBUS's default action ends the process), except on a
thread the scenario asked to keep (:meth:`Tracer.keep_alive`): there the
tracer records the SIGBUS and suppresses it, which is safe only for a signal
raised inside a system call (madvise(MADV_HWPOISON) sends BUS_MCEERR_AR to
its caller), never for one raised by a faulting load, which would repeat.

All ptrace calls happen on the thread that seized the tracees, as the kernel
requires.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field

from mfinject.errors import MfinjectError
from mfinject.observers import pagemap
from mfinject.syscalls import (
    PTRACE_CONT,
    PTRACE_O_EXITKILL,
    PTRACE_SEIZE,
    SI_CODE_NAMES,
    ptrace,
    ptrace_getsiginfo,
)

log = logging.getLogger(__name__)

WAIT_ALL = 0x40000000


class TracerError(MfinjectError):
    pass


@dataclass(frozen=True)
class SignalEvent:
    """One signal as the kernel queued it for a tracee."""

    pid: int
    signo: int
    code: int
    addr: int
    addr_lsb: int
    at_ns: int
    # for each watched range at signal-delivery-stop: (start, the raw pagemap
    # entry of each of its pages)
    pagemap: tuple[tuple[int, tuple[int, ...]], ...] = ()
    tid: int = 0  # the thread that took the signal-delivery-stop (pid: the main thread)
    delivered: bool = True  # False: recorded, then suppressed (Tracer.keep_alive)

    @property
    def code_name(self) -> str:
        if self.signo == signal.SIGBUS:
            return SI_CODE_NAMES.get(self.code, str(self.code))
        return str(self.code)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signo).name
        except ValueError:
            return str(self.signo)


@dataclass
class TraceeLog:
    pid: int
    watch: list[tuple[int, int]] = field(default_factory=list)  # (address, length)
    signals: list[SignalEvent] = field(default_factory=list)
    exit_status: int | None = None  # os.waitstatus_to_exitcode() form
    # other threads seized with seize_thread(): tid -> still being traced
    threads: dict[int, bool] = field(default_factory=dict)
    # threads whose SIGBUS is recorded but not delivered (Tracer.keep_alive)
    keep: set[int] = field(default_factory=set)
    # a signal it neither catches nor ignores was delivered: its exit is coming
    dying: bool = False

    @property
    def alive(self) -> bool:
        return self.exit_status is None


# signal(7): the signals whose default action ends the process ("Term" or "Core")
FATAL_BY_DEFAULT = frozenset({
    signal.SIGBUS, signal.SIGSEGV, signal.SIGKILL, signal.SIGTERM, signal.SIGABRT,
    signal.SIGILL, signal.SIGFPE, signal.SIGQUIT, signal.SIGINT, signal.SIGHUP})


def _mask(status: str, key: str) -> int:
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.strip(), 16)
    return 0


def _handled(tid: int, sig: int) -> bool:
    """Whether thread ``tid`` catches or ignores ``sig`` (proc(5): SigCgt, SigIgn)."""
    try:
        with open(f"/proc/{tid}/status") as f:
            status = f.read()
    except OSError:
        return False
    return bool((_mask(status, "SigCgt") | _mask(status, "SigIgn")) & (1 << (sig - 1)))


PF_EXITING = 0x4  # include/linux/sched.h: "Getting shut down", set first thing in do_exit()


def exiting(stat: str) -> bool:
    """Whether a thread's /proc/PID/task/TID/stat says it is in do_exit() and not a zombie
    yet (proc(5): field 3 state, field 9 flags; the command name may hold spaces)."""
    fields = stat.rpartition(")")[2].split()
    return len(fields) > 6 and fields[0] not in ("Z", "X", "x") \
        and bool(int(fields[6]) & PF_EXITING)


def _thread_state(pid: int, tid: str) -> tuple[int, bool] | None:
    """(deliverable pending signals, in its exit) of one thread; None if it is gone."""
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            mask = deliverable_pending(f.read())
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            return mask, exiting(f.read())
    except (OSError, ValueError):
        return None


def deliverable_pending(status: str) -> int:
    """The signals queued for a thread and not blocked, from its /proc/PID/task/TID/status
    (proc(5): SigPnd, thread-directed; ShdPnd, process-wide; SigBlk, blocked)."""
    return (_mask(status, "SigPnd") | _mask(status, "ShdPnd")) & ~_mask(status, "SigBlk")


class Tracer:
    """Seizes processes and records every signal they are sent."""

    def __init__(self) -> None:
        self.tracees: dict[int, TraceeLog] = {}

    def seize(self, pid: int) -> TraceeLog:
        ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_EXITKILL)
        entry = TraceeLog(pid)
        self.tracees[pid] = entry
        log.debug("seized %d", pid)
        return entry

    def seize_thread(self, pid: int, tid: int) -> None:
        """Trace one more thread of a seized process, so its signals are seen as its own."""
        ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_EXITKILL)
        self.tracees[pid].threads[tid] = True
        log.debug("seized thread %d of %d", tid, pid)

    def keep_alive(self, pid: int, tid: int) -> None:
        """Record thread ``tid``'s SIGBUS, then suppress it: the process lives on.

        Only for a thread that poisons with madvise() and does nothing else: a
        SIGBUS raised by a faulting load, suppressed, would fault again for ever.
        """
        self.tracees[pid].keep.add(tid)

    def watch(self, pid: int, addr: int, length: int) -> None:
        self.tracees[pid].watch.append((addr, length))

    def pump(self) -> bool:
        """Handle every pending stop and exit; return True if anything happened."""
        progressed = False
        for entry in list(self.tracees.values()):
            for tid, traced in list(entry.threads.items()):
                while traced:
                    try:
                        got, status = os.waitpid(tid, os.WNOHANG | WAIT_ALL)
                    except ChildProcessError:
                        got, status = tid, -1
                    if got == 0:
                        break
                    progressed = True
                    if status == -1 or os.WIFEXITED(status) or os.WIFSIGNALED(status):
                        traced = entry.threads[tid] = False
                    else:
                        self._handle(entry, status, tid)
            while entry.alive:
                try:
                    pid, status = os.waitpid(entry.pid, os.WNOHANG | WAIT_ALL)
                except ChildProcessError:
                    entry.exit_status = -255
                    break
                if pid == 0:
                    break
                progressed = True
                self._handle(entry, status)
        return progressed

    def _handle(self, entry: TraceeLog, status: int, tid: int | None = None) -> None:
        tid = entry.pid if tid is None else tid
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            entry.exit_status = os.waitstatus_to_exitcode(status)
            log.debug("%d ended: %s", entry.pid, entry.exit_status)
            return
        if not os.WIFSTOPPED(status):
            return
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if event:  # PTRACE_EVENT_* stops: nothing to inject
            ptrace(PTRACE_CONT, tid, 0, 0)
            return
        info = ptrace_getsiginfo(tid)
        snap = []
        for addr, length in entry.watch:
            try:
                entries = pagemap.read_range(entry.pid, addr, length)
            except OSError:
                continue
            snap.append((addr, tuple(e.raw for e in entries)))
        ev = SignalEvent(
            pid=entry.pid,
            signo=info.si_signo,
            code=info.si_code,
            addr=info.si_addr,
            addr_lsb=info.si_addr_lsb,
            at_ns=time.monotonic_ns(),
            pagemap=tuple(snap),
            tid=tid,
            delivered=not (sig == signal.SIGBUS and tid in entry.keep),
        )
        entry.signals.append(ev)
        log.info("pid %d (thread %d) got %s %s addr=%#x lsb=%d%s", entry.pid, tid, ev.signal_name,
                 ev.code_name, ev.addr, ev.addr_lsb, "" if ev.delivered else " (suppressed)")
        if ev.delivered and sig in FATAL_BY_DEFAULT and not _handled(tid, sig):
            entry.dying = True
        ptrace(PTRACE_CONT, tid, 0, sig if ev.delivered else 0)

    def settle(self, quiet_s: float, limit_s: float) -> None:
        """Pump until nothing has happened for ``quiet_s`` and no live tracee has a
        signal queued that it has not taken yet (at most ``limit_s``).

        The signals memory-failure sends are queued before the call that injects
        returns (kill_procs() runs inside memory_failure(); the machine-check
        injectors return after memory-failure's result line): a thread that has
        one pending has not reached its signal-delivery-stop yet, however long
        the quiet. So the quiet can be short; it covers what is not queued yet.
        A tracee sent a signal that ends it is waited for until its exit is seen.
        """
        deadline = time.monotonic() + limit_s
        last = time.monotonic()
        waiting: list[str] = []
        while time.monotonic() < deadline:
            if self.pump():
                last = time.monotonic()
            elif time.monotonic() - last >= quiet_s:
                waiting = self.unsettled()
                # a signal taken between that pump and the look at /proc is a stop
                # now, which waitpid() sees: pump once more before calling it quiet
                if not waiting:
                    if not self.pump():
                        return
                    last = time.monotonic()
            time.sleep(0.005)
        if waiting:
            log.warning("settle: still waiting after %.0f s: %s", limit_s, "; ".join(waiting))

    def unsettled(self) -> list[str]:
        """What a live tracee has still to go through: a thread with a deliverable signal
        queued ("pid/tid: mask"), or in its exit ("pid/tid: exiting"), or the exit a
        delivered fatal signal began. A SIGKILL, which stops nobody, is seen only
        here: its tracee is then waited for until it ends."""
        found = []
        for entry in self.tracees.values():
            if not entry.alive:
                continue
            try:
                tids = os.listdir(f"/proc/{entry.pid}/task")
            except OSError:
                tids = []
            for tid in tids:
                state = _thread_state(entry.pid, tid)
                if state is None:
                    continue  # gone: its exit is the tracer's to see
                mask, in_exit = state
                if mask & (1 << (signal.SIGKILL - 1)):
                    entry.dying = True
                if mask or in_exit:
                    found.append(f"{entry.pid}/{tid}: {f'{mask:#x}' if mask else 'exiting'}")
            if entry.dying:
                found.append(f"{entry.pid}: a fatal signal delivered, no exit yet")
        return found

    def kill_all(self) -> None:
        for entry in self.tracees.values():
            if entry.alive:
                try:
                    os.kill(entry.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while any(e.alive for e in self.tracees.values()):
            self.pump()
            if time.monotonic() > deadline:
                raise TracerError("tracees did not exit within 10 s of SIGKILL")
            time.sleep(0.005)
