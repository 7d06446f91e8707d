"""Ways to hold a reference on a DAX page while poison arrives.

- ``delayed_device()``: a dm-delay device over a loop device. An O_DIRECT read
  from it into a DAX mapping pins the destination page (FOLL_PIN) for as long
  as the delayed bio is in flight.
- io_uring fixed buffers are registered by the participant itself
  (:meth:`mfinject.participant._Child.op_io_uring_register`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

from mfinject.errors import MfinjectError

log = logging.getLogger(__name__)


class PinError(MfinjectError):
    pass


def _run(cmd: list[str], fix: str, stdin: str | None = None) -> str:
    log.info("+ %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False,
                              input=stdin)
    except FileNotFoundError as e:
        raise PinError(f"{cmd[0]} not found: {fix}") from e
    if proc.returncode != 0:
        raise PinError(f"{' '.join(cmd)} failed: {proc.stderr.strip()} ({fix})")
    return proc.stdout.strip()


# Only one page of the device is slow, at DELAYED_OFFSET, where the pinned read
# goes: udev probes every new block device (blkid reads its start, its end and
# a few signature offsets), and with every I/O delayed its worker sat in D
# state for about 30 s, which held up the next namespace reset (6.1, TCG: the
# tests after corrupt-pfn-pinned-* waited 31 s; sysrq w showed the
# udev-worker in blkdev_read_iter). 4 MiB into an 8 MiB device is none of
# blkid's offsets (the ZFS labels at size - 512 KiB are the nearest).
DEVICE_SIZE = 8 << 20
DELAYED_OFFSET = 4 << 20
DELAYED_LENGTH = 64 << 10


def delay_table(loop: str, size: int, delay_ms: int) -> str:
    """A dm table: linear, delay over the delayed window, linear (in 512-byte sectors)."""
    a, b, end = DELAYED_OFFSET // 512, (DELAYED_OFFSET + DELAYED_LENGTH) // 512, size // 512
    return "\n".join([f"0 {a} linear {loop} 0",
                      f"{a} {b - a} delay {loop} {a} {delay_ms}",
                      f"{b} {end - b} linear {loop} {b}"])


@contextlib.contextmanager
def delayed_device(delay_ms: int, size: int = DEVICE_SIZE) -> Iterator[str]:
    """A block device whose I/O to [DELAYED_OFFSET, +DELAYED_LENGTH) completes
    ``delay_ms`` late (the rest at once); always removed."""
    _run(["modprobe", "dm_delay"], "the kernel needs CONFIG_DM_DELAY")
    _run(["modprobe", "loop"], "the kernel needs CONFIG_BLK_DEV_LOOP")
    fd, backing = tempfile.mkstemp(prefix="mfinject-delay-", dir="/run")
    name = f"mfinject-delay-{uuid.uuid4().hex[:8]}"  # a removal udev delayed may linger
    loop = None
    try:
        os.ftruncate(fd, size)
        os.close(fd)
        loop = _run(["losetup", "--find", "--show", backing],
                    "apt-get install mount (losetup); the kernel needs CONFIG_BLK_DEV_LOOP")
        # --noudevsync: no waiting on udev, which is slow under emulation
        # a table of three lines: on standard input (--table takes one)
        _run(["dmsetup", "create", "--noudevsync", name], "apt-get install dmsetup",
             stdin=delay_table(loop, size, delay_ms) + "\n")
        _run(["dmsetup", "mknodes", name], "apt-get install dmsetup")
        yield f"/dev/mapper/{name}"
    finally:
        try:
            _run(["dmsetup", "remove", "--noudevsync", "--retry", name],
                 "apt-get install dmsetup")
        except PinError as e:
            log.warning("%s was not removed: %s", name, e)
        if loop:
            with contextlib.suppress(PinError):
                _run(["losetup", "-d", loop], "apt-get install mount")
        os.unlink(backing)


class SessionDevice:
    """One delayed device for a whole session, made when a test first asks for it.

    Making and removing it per test cost seven programs (modprobe twice,
    losetup, dmsetup create, mknodes and remove, losetup -d): about 1.2 s a
    test under TCG. Nothing of a test stays on it: each pinned read only
    reads its delayed window.
    """

    def __init__(self, delay_ms: int) -> None:
        self.delay_ms = delay_ms
        self._stack = contextlib.ExitStack()
        self._path: str | None = None

    def get(self) -> str:
        if self._path is None:
            self._path = self._stack.enter_context(delayed_device(self.delay_ms))
        return self._path

    def close(self) -> None:
        self._path = None
        self._stack.close()
