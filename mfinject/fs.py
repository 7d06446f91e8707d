"""Filesystems on an fsdax namespace, mounted with ``-o dax=always``.

Three kinds cover the two memory-failure paths:
- ``xfs``: XFS without rmapbt. xfs_dax_notify_failure() returns -EOPNOTSUPP
  without rmapbt, so memory_failure_dev_pagemap() falls back to the generic
  mf_generic_kill_procs() path.
- ``xfs-rmapbt``: XFS with rmapbt and reflink: the pmem driver's
  ->memory_failure() calls dax_holder_notify_failure() and XFS walks its
  reverse map (xfs_notify_failure.c) down to mf_dax_kill_procs().
- ``ext4``: 4 KiB blocks; no holder ops, so the generic path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from mfinject.errors import MfinjectError
from mfinject.syscalls import statx

log = logging.getLogger(__name__)


class FsError(MfinjectError):
    pass


GENERIC = "generic"
NOTIFY_FAILURE = "notify_failure"


@dataclass(frozen=True)
class FsKind:
    name: str
    fstype: str
    mkfs: tuple[str, ...]
    path: str  # which memory-failure path the kernel should take
    package: str
    reflink: bool = False  # FICLONE shares blocks between files

    def mkfs_command(self, devpath: str) -> list[str]:
        return [*self.mkfs, devpath]


FS_KINDS: dict[str, FsKind] = {
    k.name: k
    for k in (
        # a 2 MiB stripe unit makes large files start on 2 MiB boundaries, which
        # a PMD mapping of an fsdax file needs
        FsKind("xfs", "xfs", ("mkfs.xfs", "-f", "-q", "-m", "reflink=0,rmapbt=0",
                              "-d", "su=2m,sw=1"), GENERIC, "xfsprogs"),
        FsKind("xfs-rmapbt", "xfs", ("mkfs.xfs", "-f", "-q", "-m", "reflink=1,rmapbt=1",
                                     "-d", "su=2m,sw=1"), NOTIFY_FAILURE, "xfsprogs",
               reflink=True),
        FsKind("ext4", "ext4", ("mkfs.ext4", "-F", "-q", "-b", "4096",
                                "-E", "stride=512,stripe_width=512"), GENERIC, "e2fsprogs"),
    )
}


@dataclass(frozen=True)
class Mount:
    kind: FsKind
    devpath: str
    mountpoint: str

    def path(self, name: str) -> str:
        return os.path.join(self.mountpoint, name)


def _run(cmd: list[str], what: str, timeout: float = 120.0) -> None:
    log.info("+ %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise FsError(f"{cmd[0]} not found: install it ({what})") from e
    except subprocess.TimeoutExpired as e:
        raise FsError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise FsError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


def mkfs(kind: FsKind, devpath: str) -> None:
    _run(kind.mkfs_command(devpath), f"apt-get install {kind.package}")


@contextlib.contextmanager
def mounted(kind: FsKind, devpath: str, *, make: bool = True,
            options: str = "dax=always") -> Iterator[Mount]:
    """mkfs (if ``make``) and mount (with dax=always unless told); always unmount."""
    if make:
        mkfs(kind, devpath)
    mountpoint = tempfile.mkdtemp(prefix=f"mfinject-{kind.name}-", dir="/run")
    try:
        _run(["mount", "-t", kind.fstype, "-o", options, devpath, mountpoint],
             "apt-get install mount")
        try:
            yield Mount(kind, devpath, mountpoint)
        finally:
            _run(["umount", mountpoint], "apt-get install mount")
    finally:
        os.rmdir(mountpoint)


PMD_ALIGN = 2 << 20


def create_file(mount: Mount, name: str, size: int, fill: int = 0x5A,
                align: bool = False) -> str:
    """A fully written file (no holes, no unwritten extents), synced.

    With ``align``, its blocks are allocated in one go on a 2 MiB boundary, as
    a PMD mapping needs: XFS through a 2 MiB extent size hint (with the 2 MiB
    stripe unit of mkfs), ext4 through fallocate() (with its stripe hint).
    """
    path = mount.path(name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if align:
            if mount.kind.fstype == "xfs":
                _run(["xfs_io", "-c", f"extsize {PMD_ALIGN}", path], "apt-get install xfsprogs")
            os.posix_fallocate(fd, 0, size)
        chunk = bytes([fill]) * min(size, 1 << 20)
        done = 0
        while done < size:
            done += os.pwrite(fd, chunk[: size - done], done)
        os.fsync(fd)
    finally:
        os.close(fd)
    verify_dax(path)
    return path


def verify_dax(path: str) -> None:
    """statx must report STATX_ATTR_DAX (Linux 5.8, commit 712b2698e4c0)."""
    attrs = statx(path)
    if not attrs.dax_known:
        raise FsError(
            f"statx on {path} does not report STATX_ATTR_DAX: this kernel predates 5.8, "
            "run on a newer kernel"
        )
    if not attrs.dax:
        raise FsError(
            f"{path} is not DAX (statx STATX_ATTR_DAX clear): the mount fell back to the "
            "page cache. Put the namespace in fsdax mode "
            "(ndctl create-namespace -f -e NAMESPACE -m fsdax) and mount with -o dax=always"
        )


FICLONE = 0x40049409  # _IOW(0x94, 9, int), <uapi/linux/fs.h>


def reflink_copy(src: str, dst: str) -> None:
    """dst shares every block of src (ioctl FICLONE)."""
    import fcntl

    s = os.open(src, os.O_RDONLY)
    try:
        d = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.ioctl(d, FICLONE, s)
            os.fsync(d)
        finally:
            os.close(d)
    finally:
        os.close(s)


FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap), <uapi/linux/fs.h>
FIEMAP_FLAG_SYNC = 0x1


def physical_offset(path: str, offset: int) -> int:
    """Byte offset on the block device of the file's byte ``offset`` (FIEMAP)."""
    import fcntl
    import struct

    # struct fiemap: start, length, flags, mapped_extents, extent_count, reserved,
    # then one struct fiemap_extent: logical, physical, length, 2 reserved, flags, 3 reserved
    req = struct.pack("=QQIIII", offset, 1, FIEMAP_FLAG_SYNC, 0, 1, 0) + bytes(56)
    fd = os.open(path, os.O_RDONLY)
    try:
        out = fcntl.ioctl(fd, FS_IOC_FIEMAP, req)
    finally:
        os.close(fd)
    mapped = struct.unpack_from("=I", out, 20)[0]
    if not mapped:
        raise FsError(f"{path}: no extent at offset {offset} (FIEMAP)")
    logical, physical = struct.unpack_from("=QQ", out, 32)
    return physical + (offset - logical)
