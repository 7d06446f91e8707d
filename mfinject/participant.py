"""Participant processes: the mappers, victims and injectors of a scenario.

Each participant is a child forked from the test process. It runs a small
command loop (JSON lines over a pipe) and does exactly what it is told: map a
file, touch a page, set its kill policy, call madvise, write to a file. It
never handles SIGBUS; the test process observes signals through the tracer,
so a synchronous BUS_MCEERR_AR is seen with its exact fields and then ends the
participant as the kernel intends. Poison never touches the test process.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import logging
import mmap
import os
import queue
import resource
import select
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mfinject import syscalls
from mfinject.errors import MfinjectError
from mfinject.observers.tracer import TraceeLog, Tracer

log = logging.getLogger(__name__)


class ParticipantError(MfinjectError):
    pass


class ParticipantHung(ParticipantError):
    """A participant did not answer in time: the kernel may be stuck in its call."""


@dataclass(frozen=True)
class Reply:
    ok: bool
    value: Any = None
    errno: int | None = None
    error: str | None = None


def reply_text(reply: Reply | None, ok: str = "ok", died: str = "caller killed") -> str:
    """A reply as the observations say it: ``ok``, the error, or ``died``."""
    if reply is None:
        return died
    if reply.ok:
        return ok
    return os.strerror(reply.errno) if reply.errno else str(reply.error)


@dataclass(frozen=True)
class Timed:
    """One half of a race: its reply, and when it ran (ns, CLOCK_MONOTONIC)."""
    reply: Reply | None
    start_ns: int | None = None
    end_ns: int | None = None

    @classmethod
    def of(cls, reply: Reply | None) -> Timed:
        """From the reply of participant.op_after, run on a thread."""
        if reply is None or not reply.ok or not isinstance(reply.value, dict):
            return cls(reply)
        inner = reply.value["reply"]
        return cls(Reply(bool(inner.get("ok")), inner.get("value"), inner.get("errno"),
                         inner.get("error")), reply.value["start_ns"], reply.value["end_ns"])


def overlap_us(a: Timed, b: Timed) -> float | None:
    """How long both ran at once (negative: the gap between them)."""
    if None in (a.start_ns, a.end_ns, b.start_ns, b.end_ns):
        return None
    return (min(a.end_ns, b.end_ns) - max(a.start_ns, b.start_ns)) / 1000  # type: ignore[operator]


# --- child side ---------------------------------------------------------------

class _Worker(threading.Thread):
    """One more thread of a participant: it runs the ops it is handed, one at a time."""

    def __init__(self, child: _Child) -> None:
        super().__init__(daemon=True)
        self.child = child
        self.requests: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.tid = 0
        self.ready = threading.Event()

    def run(self) -> None:
        self.tid = threading.get_native_id()
        self.ready.set()
        while True:
            op, args = self.requests.get()
            self.replies.put(self.child.dispatch(op, args))


class _Child:
    def __init__(self) -> None:
        self.maps: dict[int, tuple[int, int]] = {}  # addr -> (fd, length)
        self.workers: list[_Worker] = []
        self.rings: list[int] = []  # io_uring fds, kept open for the participant's life
        self.spin: tuple[mmap.mmap, ctypes.c_int32] | None = None  # op_spin_prepare

    def op_threads(self, count: int) -> list[int]:
        """Start ``count`` more threads; their kernel thread ids, in order (thread 1, 2, ...)."""
        for _ in range(count):
            w = _Worker(self)
            w.start()
            w.ready.wait()
            self.workers.append(w)
        return [w.tid for w in self.workers]

    def dispatch(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            if op == "on_thread":  # run an op on thread N and wait for it
                worker = self.workers[args["thread"] - 1]
                worker.requests.put((args["do"], args.get("args", {})))
                return worker.replies.get()
            if op == "start_on_thread":  # hand thread N an op; its reply waits for wait_thread
                self.workers[args["thread"] - 1].requests.put((args["do"], args.get("args", {})))
                return {"ok": True, "value": None}
            if op == "wait_thread":
                return self.workers[args["thread"] - 1].replies.get(timeout=args["timeout"])
            return {"ok": True, "value": getattr(self, f"op_{op}")(**args)}
        except OSError as e:
            return {"ok": False, "errno": e.errno, "error": str(e)}
        except queue.Empty:
            return {"ok": False, "error": "thread did not answer in time"}
        except Exception as e:  # noqa: BLE001 - reported to the parent
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    def op_mmap(self, path: str, offset: int, length: int, at: int | None = None) -> int:
        fd = os.open(path, os.O_RDWR)
        try:
            addr = syscalls.mmap(fd, length, offset, at=at)
        except OSError:
            os.close(fd)
            raise
        self.maps[addr] = (fd, length)
        return addr

    def op_munmap(self, addr: int) -> None:
        fd, length = self.maps.pop(addr)
        syscalls.munmap(addr, length)
        os.close(fd)

    def op_touch(self, addr: int) -> int:
        return syscalls.peek_byte(addr)

    def op_store(self, addr: int, value: int) -> None:
        syscalls.poke_byte(addr, value)

    def op_mce_kill(self, policy: str) -> int:
        if policy == "default":
            syscalls.prctl(syscalls.PR_MCE_KILL, syscalls.PR_MCE_KILL_CLEAR)
        else:
            mode = {"early": syscalls.PR_MCE_KILL_EARLY, "late": syscalls.PR_MCE_KILL_LATE}[policy]
            syscalls.prctl(syscalls.PR_MCE_KILL, syscalls.PR_MCE_KILL_SET, mode)
        return syscalls.prctl(syscalls.PR_MCE_KILL_GET)

    def op_madvise_hwpoison(self, addr: int, length: int) -> None:
        syscalls.madvise(addr, length, syscalls.MADV_HWPOISON)

    def op_pread(self, path: str, offset: int, length: int) -> list[int]:
        fd = os.open(path, os.O_RDONLY)
        try:
            return sorted(set(os.pread(fd, length, offset)))
        finally:
            os.close(fd)

    def op_pwrite(self, path: str, offset: int, data: list[int]) -> int:
        fd = os.open(path, os.O_RDWR)
        try:
            return os.pwrite(fd, bytes(data), offset)
        finally:
            os.close(fd)

    def op_after(self, do: str, args: dict[str, Any], seconds: float = 0.0,
                 at_ns: int | None = None) -> dict[str, Any]:
        """Wait ``seconds``, or until CLOCK_MONOTONIC reads ``at_ns``, then run ``do``.

        The racing half of a race: both halves are given one start time (each
        plus its own small delay), so the time it takes to hand each process
        its request does not keep them apart. Returns ``do``'s reply and when
        it ran, on CLOCK_MONOTONIC (one clock for every process): the race
        runner measures whether the two halves overlapped, so a race that
        never raced cannot pass.
        """
        if at_ns is not None:
            seconds = (at_ns - time.clock_gettime_ns(time.CLOCK_MONOTONIC)) / 1e9
        if seconds > 0:
            time.sleep(seconds)
        start = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        reply = self.dispatch(do, args)
        return {"reply": reply, "start_ns": start,
                "end_ns": time.clock_gettime_ns(time.CLOCK_MONOTONIC)}

    def op_run(self, argv: list[str]) -> str:
        """Run a command; a non-zero exit is an error carrying its stderr."""
        import subprocess
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=25, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def op_truncate(self, path: str, length: int) -> None:
        os.truncate(path, length)

    def op_punch_hole(self, path: str, offset: int, length: int) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            syscalls.fallocate(fd, syscalls.FALLOC_FL_PUNCH_HOLE | syscalls.FALLOC_FL_KEEP_SIZE,
                               offset, length)
        finally:
            os.close(fd)

    def op_ficlone(self, src: str, dst: str) -> None:
        from mfinject.fs import reflink_copy
        reflink_copy(src, dst)

    def op_map_touch(self, path: str, offset: int, length: int) -> int:
        """Map the file, load one byte at ``offset``, unmap: a fault racing the poison."""
        fd = os.open(path, os.O_RDWR)
        try:
            addr = syscalls.mmap(fd, length, 0)
            try:
                return syscalls.peek_byte(addr + offset)
            finally:
                syscalls.munmap(addr, length)
        finally:
            os.close(fd)

    # x86-64: mov dword [rsi], 1; 1: mov al, [rdi]; pause; jmp 1b. The flag
    # says the loop runs; RIP stays in [LOOP_START, LOOP_END) from then on.
    SPIN_CODE = bytes.fromhex("c70601000000" "8a07" "f390" "ebfa")
    LOOP_START, LOOP_END = 6, 12

    def op_spin_prepare(self) -> dict[str, int]:
        """Put the load loop in an executable page; where its loop lies."""
        code = mmap.mmap(-1, mmap.PAGESIZE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        code.write(self.SPIN_CODE)
        self.spin = (code, ctypes.c_int32(0))
        base = ctypes.addressof(ctypes.c_char.from_buffer(code))
        return {"rip_lo": base + self.LOOP_START, "rip_hi": base + self.LOOP_END}

    def op_spin_load(self, addr: int, cpu: int) -> None:
        """On this thread, pinned to ``cpu``: load ``addr`` for ever, in user mode.

        Only a machine check (or a signal) ends it: the consumer of an
        action-required check (mfinject.mce.SRAR). ctypes drops the GIL for
        the call, so the participant's other threads still answer.
        """
        assert self.spin is not None, "spin_prepare first"
        code, flag = self.spin
        os.sched_setaffinity(0, {cpu})  # 0: this thread
        loop = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
            ctypes.addressof(ctypes.c_char.from_buffer(code)))
        loop(addr, ctypes.addressof(flag))

    def op_spin_started(self, timeout: float) -> bool:
        assert self.spin is not None, "spin_prepare first"
        deadline = time.monotonic() + timeout
        while self.spin[1].value != 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the load loop did not start within {timeout} s")
            time.sleep(0.005)
        return True

    def op_mce_kill_get(self) -> int:
        return syscalls.prctl(syscalls.PR_MCE_KILL_GET)

    def op_sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def op_file_io(self, path: str, offset: int, fill: int) -> dict[str, str]:
        """read(), pread(), an O_DIRECT read, a sub-page write, a whole-page write
        and a pread() back, on one page of ``path``; each result as text."""
        def data(buf: bytes) -> str:
            values = set(buf)
            if values == {fill}:
                return "old data"
            return f"data {sorted(values)[:4]}"

        def attempt(fn: Any) -> str:
            try:
                return fn()
            except OSError as e:
                return os.strerror(e.errno) if e.errno else str(e)

        out: dict[str, str] = {}
        fd = os.open(path, os.O_RDWR)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            out["read"] = attempt(lambda: data(os.read(fd, syscalls.PAGE_SIZE)))
            out["pread"] = attempt(lambda: data(os.pread(fd, syscalls.PAGE_SIZE, offset)))
            out["odirect_read"] = attempt(lambda: self._odirect(path, offset, fill))
            out["write_partial"] = attempt(
                lambda: f"wrote {os.pwrite(fd, bytes([fill ^ 0xFF]) * 16, offset + 64)}")
            out["write_page"] = attempt(
                lambda: f"wrote {os.pwrite(fd, bytes([0x33]) * syscalls.PAGE_SIZE, offset)}")
            out["pread_after_write"] = attempt(
                lambda: data(os.pread(fd, syscalls.PAGE_SIZE, offset)))
        finally:
            os.close(fd)
        return out

    @staticmethod
    def _odirect(path: str, offset: int, fill: int) -> str:
        import mmap as _mmap
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            buf = _mmap.mmap(-1, syscalls.PAGE_SIZE)
            n = os.preadv(fd, [buf], offset)
            return "old data" if n and set(buf[:n]) == {fill} else f"{n} bytes"
        finally:
            os.close(fd)

    def op_odirect_into(self, device: str, addr: int, length: int, offset: int = 0) -> int:
        """An O_DIRECT read from ``device`` at ``offset`` into our mapping at ``addr``:
        the block layer pins the destination pages until the read completes."""
        fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
        try:
            buf = (ctypes.c_char * length).from_address(addr)
            return os.preadv(fd, [memoryview(buf).cast("B")], offset)
        finally:
            os.close(fd)

    def op_io_uring_register(self, addr: int, length: int) -> int:
        """Register [addr, addr+length) as an io_uring fixed buffer (a long-term pin)."""
        ring = syscalls.io_uring_setup(4)
        try:
            syscalls.io_uring_register_buffers(ring, addr, length)
        except OSError:
            # nothing pinned (fsdax refuses FOLL_LONGTERM): the ring holds nothing
            # worth keeping. Closed now, its teardown is not left to the exit of
            # a process that the poison kills: left to it, the next namespace
            # reset waited ~30 s (6.1, TCG; 3 s with the ring closed here)
            os.close(ring)
            raise
        self.rings.append(ring)
        return ring

    def op_write_file(self, path: str, data: str) -> int:
        fd = os.open(path, os.O_WRONLY)
        try:
            return os.write(fd, data.encode())
        finally:
            os.close(fd)

    def serve(self, cmd_fd: int, reply_fd: int) -> None:
        with os.fdopen(cmd_fd, "r") as cmds, os.fdopen(reply_fd, "w") as replies:
            for line in cmds:
                req = json.loads(line)
                op = req.pop("op")
                if op == "exit":
                    return
                reply = self.dispatch(op, req)
                replies.write(json.dumps(reply) + "\n")
                replies.flush()


def _child_main(cmd_fd: int, reply_fd: int, policy_before_fork: str | None) -> None:
    code = 0
    try:
        faulthandler.disable()
        signal.signal(signal.SIGBUS, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if policy_before_fork is not None:
            # set the kill policy, then fork: the participant is the child,
            # which only inherits the policy (PR_MCE_KILL(2const))
            _Child().op_mce_kill(policy_before_fork)
            pid = os.fork()
            if pid:
                os.write(reply_fd, (json.dumps({"forked": pid}) + "\n").encode())
                os._exit(0)
        _Child().serve(cmd_fd, reply_fd)
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


# --- parent side --------------------------------------------------------------

class Participant:
    """One traced child process with a name and a role in the scenario."""

    def __init__(self, name: str, tracer: Tracer, timeout_s: float = 30.0,
                 policy_before_fork: str | None = None) -> None:
        """With ``policy_before_fork``, the forked process sets that kill policy and
        forks again; the participant is that grandchild, which inherited it."""
        self.name = name
        self.tracer = tracer
        self.timeout_s = timeout_s
        self.thread_ids: list[int] = []  # thread 1, 2, ... (see start_threads)
        cmd_r, cmd_w = os.pipe()
        reply_r, reply_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(cmd_w)
            os.close(reply_r)
            _child_main(cmd_r, reply_w, policy_before_fork)
        os.close(cmd_r)
        os.close(reply_w)
        self._cmd_w = cmd_w
        self._reply_r = reply_r
        self._buf = b""
        if policy_before_fork is not None:
            first = self._read_line(time.monotonic() + timeout_s)
            os.waitpid(pid, 0)
            if first is None or "forked" not in first:
                raise ParticipantError(f"participant {name}: the fork after prctl failed")
            pid = first["forked"]
        self.pid = pid
        self.log: TraceeLog = tracer.seize(pid)

    def _read_line(self, deadline: float) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            if time.monotonic() > deadline:
                return None
            ready, _, _ = select.select([self._reply_r], [], [], 0.05)
            if ready:
                chunk = os.read(self._reply_r, 65536)
                if not chunk:
                    return None
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def start_threads(self, count: int) -> list[int]:
        """Start ``count`` more threads in the participant and trace each of them."""
        tids = self.call("threads", count=count)
        for tid in tids[len(self.thread_ids):]:
            self.tracer.seize_thread(self.pid, tid)
        self.thread_ids = tids
        return tids

    def thread_name(self, tid: int) -> str:
        if tid in (0, self.pid):
            return "main thread"
        return f"thread {self.thread_ids.index(tid) + 1}" if tid in self.thread_ids else f"tid {tid}"

    @property
    def alive(self) -> bool:
        return self.log.alive

    def request(self, op: str, **args: Any) -> Reply | None:
        """Send one command; return its reply, or None if the participant died."""
        if not self.alive:
            return None
        try:
            os.write(self._cmd_w, (json.dumps({"op": op, **args}) + "\n").encode())
        except BrokenPipeError:
            self._wait_dead()
            return None
        deadline = time.monotonic() + self.timeout_s
        while True:
            self.tracer.pump()
            ready, _, _ = select.select([self._reply_r], [], [], 0.01)
            if ready:
                chunk = os.read(self._reply_r, 65536)
                if not chunk:
                    self._wait_dead()
                    return None
                self._buf += chunk
                if b"\n" in self._buf:
                    line, self._buf = self._buf.split(b"\n", 1)
                    return Reply(**json.loads(line))
            if time.monotonic() > deadline:
                raise ParticipantHung(
                    f"participant {self.name} (pid {self.pid}) did not answer {op!r} "
                    f"within {self.timeout_s:.0f} s: the kernel may be hung in that call"
                )

    def _wait_dead(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while self.alive:
            self.tracer.pump()
            if time.monotonic() > deadline:
                raise ParticipantError(f"participant {self.name} closed its pipe but did not exit")
            time.sleep(0.005)

    def call(self, op: str, **args: Any) -> Any:
        """Like :meth:`request`, but any failure is a setup error."""
        reply = self.request(op, **args)
        if reply is None:
            raise ParticipantError(f"participant {self.name} died during {op!r}: {self.log.signals}")
        if not reply.ok:
            raise ParticipantError(f"participant {self.name}: {op} failed: {reply.error}")
        return reply.value

    def close(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError):
                os.write(self._cmd_w, b'{"op": "exit"}\n')
        deadline = time.monotonic() + 5
        while self.alive and time.monotonic() < deadline:
            self.tracer.pump()
            time.sleep(0.005)
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait_dead()
        for fd in (self._cmd_w, self._reply_r):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def cast(tracer: Tracer) -> Iterator[dict[str, Participant]]:
    """A registry of participants that are always ended and reaped."""
    people: dict[str, Participant] = {}
    try:
        yield people
    finally:
        for p in people.values():
            with contextlib.suppress(Exception):
                p.close()
        with contextlib.suppress(Exception):
            tracer.kill_all()
