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
import faulthandler
import json
import logging
import os
import resource
import select
import signal
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


@dataclass(frozen=True)
class Reply:
    ok: bool
    value: Any = None
    errno: int | None = None
    error: str | None = None


# --- child side ---------------------------------------------------------------

class _Child:
    def __init__(self) -> None:
        self.maps: dict[int, tuple[int, int]] = {}  # addr -> (fd, length)

    def op_mmap(self, path: str, offset: int, length: int) -> int:
        fd = os.open(path, os.O_RDWR)
        addr = syscalls.mmap(fd, length, offset)
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
                try:
                    value = getattr(self, f"op_{op}")(**req)
                    reply = {"ok": True, "value": value}
                except OSError as e:
                    reply = {"ok": False, "errno": e.errno, "error": str(e)}
                except Exception as e:  # noqa: BLE001 - reported to the parent
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                replies.write(json.dumps(reply) + "\n")
                replies.flush()


def _child_main(cmd_fd: int, reply_fd: int) -> None:
    code = 0
    try:
        faulthandler.disable()
        signal.signal(signal.SIGBUS, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _Child().serve(cmd_fd, reply_fd)
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


# --- parent side --------------------------------------------------------------

class Participant:
    """One traced child process with a name and a role in the scenario."""

    def __init__(self, name: str, tracer: Tracer, timeout_s: float = 30.0) -> None:
        self.name = name
        self.tracer = tracer
        self.timeout_s = timeout_s
        cmd_r, cmd_w = os.pipe()
        reply_r, reply_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(cmd_w)
            os.close(reply_r)
            _child_main(cmd_r, reply_w)
        os.close(cmd_r)
        os.close(reply_w)
        self.pid = pid
        self._cmd_w = cmd_w
        self._reply_r = reply_r
        self._buf = b""
        self.log: TraceeLog = tracer.seize(pid)

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
                raise ParticipantError(
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
