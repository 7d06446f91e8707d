"""The kernel's own record of a machine-check event: the mce:mce_record tracepoint.

A corrected error raises no #MC: the kernel finds it when it polls the banks
(machine_check_poll(), every check_interval seconds, 300 by default) and
queues it (mce_log()); a work item then walks the decoder chain, whose first
notifier (mce_early_notifier()) fires mce:mce_record. That record, with the
bank, status and address given, is the proof the kernel saw the error; its
"Machine check events logged" line is rate-limited (2 a minute) and proves
nothing. The watch runs in its own tracefs instance, removed afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from mfinject.observers.ftrace import TRACEFS

log = logging.getLogger(__name__)

CHECK_INTERVAL = Path("/sys/devices/system/machinecheck/machinecheck0/check_interval")


def matches(line: str, bank: int, status: int, addr: int) -> bool:
    """Whether a trace line is the record of this error (6.1's and 6.12's formats:
    "MC9: 9c0000000000009f, ... ADDR/MISC/SYND: 0000000101445000/..." or "ADDR: 0000000101445000")."""
    over = status | 1 << 62  # OVER: QEMU adds it when the bank held an error already
    return re.search(rf"\bMC{bank}: ({status:016x}|{over:016x}), "
                     rf".*\bADDR(?:/MISC/SYND)?: {addr:016x}\b", line) is not None


class McRecordWatch:
    def __init__(self) -> None:
        self.inst = TRACEFS / "instances" / f"mfinject-mce-{os.getpid()}"
        self.inst.mkdir()
        try:
            (self.inst / "events" / "mce" / "mce_record" / "enable").write_text("1")
            self._fd = os.open(self.inst / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            self.close()
            raise
        self._buf = b""

    def wait(self, bank: int, status: int, addr: int, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    raise
                chunk = b""
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if matches(line, bank, status, addr):
                    return line.strip()
            if not chunk:
                time.sleep(0.05)
        return None

    def close(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            (self.inst / "events" / "mce" / "mce_record" / "enable").write_text("0")
        with contextlib.suppress(OSError):
            self.inst.rmdir()


@contextlib.contextmanager
def polled_every(seconds: int) -> Iterator[None]:
    """The kernel polls the machine-check banks every ``seconds`` (mce_restart()),
    then as before."""
    before = CHECK_INTERVAL.read_text().strip()
    CHECK_INTERVAL.write_text(str(seconds))
    try:
        yield
    finally:
        try:
            CHECK_INTERVAL.write_text(before)
        except OSError as e:  # the injection stands; later polls are only more frequent
            log.warning("could not restore %s to %s: %s", CHECK_INTERVAL, before, e)
