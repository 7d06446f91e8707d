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


def _run(cmd: list[str], fix: str) -> str:
    log.info("+ %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as e:
        raise PinError(f"{cmd[0]} not found: {fix}") from e
    if proc.returncode != 0:
        raise PinError(f"{' '.join(cmd)} failed: {proc.stderr.strip()} ({fix})")
    return proc.stdout.strip()


@contextlib.contextmanager
def delayed_device(delay_ms: int, size: int = 1 << 20) -> Iterator[str]:
    """A block device whose every I/O completes ``delay_ms`` late; always removed."""
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
        _run(["dmsetup", "create", "--noudevsync", name, "--table",
              f"0 {size // 512} delay {loop} 0 {delay_ms}"], "apt-get install dmsetup")
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
