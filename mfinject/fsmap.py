"""Who owns a block of a mounted filesystem: FS_IOC_GETFSMAP (<uapi/linux/fsmap.h>).

XFS with a reverse map answers for every block (free space, per-AG metadata,
inode data); memory-failure's notify_failure path asks the same reverse map,
and what it does depends on the answer (fs/xfs/xfs_notify_failure.c
xfs_dax_failure_fn(): a block that is not an inode's file data shuts the
filesystem down). A scenario that frees a block and then poisons it reads the
owner just before the injection, so that its verdict is judged against what
the block was, not against what the scenario assumed it would be.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

FS_IOC_GETFSMAP = 0xC0C0583B  # _IOWR('X', 59, struct fsmap_head): 192 bytes
_HEAD = struct.Struct("=IIII48x")  # fmh_iflags, fmh_oflags, fmh_count, fmh_entries, reserved
_REC = struct.Struct("=IIQQQQ24x")  # device, flags, physical, owner, offset, length, reserved
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
WHOLE_DEVICE = 1 << 62  # bytes: past the end of any device (the high key's physical)

FMR_OF_ATTR_FORK = 0x2
FMR_OF_EXTENT_MAP = 0x4
FMR_OF_SHARED = 0x8
FMR_OF_SPECIAL_OWNER = 0x10
FMR_OF_LAST = 0x20


def _owner(kind: int, code: int) -> int:
    return (kind << 32) | code


FMR_OWN_FREE = _owner(0, 1)
FMR_OWN_UNKNOWN = _owner(0, 2)  # XFS without rmapbt: every block in use
# the special owners, by name (<uapi/linux/fsmap.h>, fs/xfs/libxfs/xfs_fs.h XFS_FMR_OWN_*)
SPECIAL_OWNERS = {
    FMR_OWN_FREE: "free space",
    FMR_OWN_UNKNOWN: "unknown owner",
    _owner(0, 3): "metadata",
    _owner(ord("X"), 1): "static fs metadata",
    _owner(ord("X"), 2): "journalling log",
    _owner(ord("X"), 3): "per-AG metadata",
    _owner(ord("X"), 4): "inode btree blocks",
    _owner(ord("X"), 5): "inodes",
    _owner(ord("X"), 6): "refcount tree",
    _owner(ord("X"), 7): "cow staging",
    _owner(ord("X"), 8): "bad blocks",
}

XFS_OWN_AG = _owner(ord("X"), 3)  # free-space and reverse-map btree blocks, the AG free list

# the block_owner fact's values (mfinject.expectations: Expect.when)
FREE = "free"
METADATA = "metadata"
FILE = "file data"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Mapping:
    """One record of the filesystem's space map: ``length`` bytes at ``physical``."""

    physical: int
    length: int
    owner: int
    flags: int
    offset: int = 0  # in the owner file, for file data

    @property
    def special(self) -> bool:
        return bool(self.flags & FMR_OF_SPECIAL_OWNER)

    @property
    def kind(self) -> str:
        """FREE, METADATA or FILE: what XFS's notify_failure path makes of the block.

        A file's attribute fork and its extent-map (bmbt) blocks are metadata
        there (XFS_RMAP_ATTR_FORK | XFS_RMAP_BMBT_BLOCK shut the filesystem down
        as any non-inode owner does); so is every special owner but free space.
        """
        if self.special:
            return {FMR_OWN_FREE: FREE, FMR_OWN_UNKNOWN: UNKNOWN}.get(self.owner, METADATA)
        if self.flags & (FMR_OF_ATTR_FORK | FMR_OF_EXTENT_MAP):
            return METADATA
        return FILE

    def describe(self) -> str:
        if self.special:
            return SPECIAL_OWNERS.get(self.owner, f"special owner {self.owner:#x}")
        what = ("attribute fork" if self.flags & FMR_OF_ATTR_FORK else
                "extent map" if self.flags & FMR_OF_EXTENT_MAP else "data")
        shared = ", shared" if self.flags & FMR_OF_SHARED else ""
        return (f"inode {self.owner} {what} (an extent at file offset {self.offset:#x}, "
                f"{self.length:#x} bytes){shared}")


def _key(device: int, physical: int, owner: int, offset: int, flags: int) -> bytes:
    return _REC.pack(device, flags, physical, owner, offset, 0)


def device_cookie(st_dev: int) -> int:
    """The fmr_device XFS uses for a device: the kernel's new_encode_dev()."""
    major, minor = os.major(st_dev), os.minor(st_dev)
    return ((minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)) & U32_MAX


def _records(fd: int, high_physical: int, count: int) -> Iterator[Mapping]:
    """Every space-map record of the data device up to byte ``high_physical``, from
    its first byte on, paging through (each call's last record is the next call's
    low key). A low key inside a record loses that record on 6.1 (seen on
    6.1.0-57: no record at all for a block inside free space), so the query
    never starts in the middle."""
    # both keys on the data device: a low key on another device (0: any)
    # would start from the first device's first block
    dev = device_cookie(os.fstat(fd).st_dev)
    low = _key(dev, 0, 0, 0, 0)
    high = _key(dev, high_physical, U64_MAX, U64_MAX, U32_MAX)
    while True:
        buf = bytearray(_HEAD.pack(0, 0, count, 0) + low + high + bytes(_REC.size * count))
        fcntl.ioctl(fd, FS_IOC_GETFSMAP, buf)
        entries = min(_HEAD.unpack_from(buf, 0)[3], count)
        flags = 0
        for i in range(entries):
            _dev, flags, physical, owner, offset, size = _REC.unpack_from(
                buf, _HEAD.size + _REC.size * (2 + i))
            yield Mapping(physical, size, owner, flags, offset)
        if entries < count or flags & FMR_OF_LAST:
            return
        at = _HEAD.size + _REC.size * (1 + entries)  # the last record: the next low key
        if bytes(buf[at:at + _REC.size]) == low:  # a kernel that repeats itself: no hang
            raise OSError(errno.EIO, "GETFSMAP did not advance past its low key")
        low = bytes(buf[at:at + _REC.size])


def query(mountpoint: str, start: int, length: int, count: int = 128) -> list[Mapping]:
    """The space-map records that overlap bytes [start, start + length) of the data
    device; OSError where the filesystem has no GETFSMAP (ENOTTY).

    The high key lies one block further: 6.1 ends the free-space record of a gap
    at the high key's block, leaving that block out (seen on 6.1.0-57: the record
    before a freed block "free space ending at" the block's own start).
    """
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [m for m in _records(fd, start + 2 * length - 1, count)
                if m.physical < start + length and m.physical + m.length > start]
    finally:
        os.close(fd)


def first_of(mountpoint: str, owner: int) -> Mapping | None:
    """The data device's first space-map record that the special owner ``owner``
    holds (None: none)."""
    found = query(mountpoint, 0, WHOLE_DEVICE)
    return next((m for m in found if m.special and m.owner == owner), None)


def owner_of(mountpoint: str, start: int, length: int) -> tuple[str, str]:
    """What the bytes [start, start + length) of the data device belong to: the
    block_owner fact (FREE, METADATA, FILE or UNKNOWN) and its description."""
    try:
        found = query(mountpoint, start, length)
    except OSError as e:
        return UNKNOWN, f"GETFSMAP on {mountpoint}: {e.strerror or e}"
    return summarize(found)


def summarize(found: list[Mapping]) -> tuple[str, str]:
    """The block_owner fact of the records that cover one block, and what they say:
    metadata wins over file data, file data over an unknown owner; free only when
    every record is free space."""
    if not found:
        return UNKNOWN, "no GETFSMAP record covers the block"
    kinds = {m.kind for m in found}
    kind = next(k for k in (METADATA, FILE, UNKNOWN) if k in kinds) if kinds != {FREE} else FREE
    return kind, "; ".join(m.describe() for m in found)


# an unlinked XFS inode's blocks are freed by its inactivation, which runs from
# a per-cpu worker since v5.15 (commit ab23a7768739, "xfs: per-cpu deferred
# inode inactivation queues"): after unlink() returns they may still be the file's
GIVE_BACK_LIMIT_S = 10.0
GIVE_BACK_POLL_S = 0.02


def owns(mountpoint: str, ino: int, start: int = 0, length: int | None = None) -> bool:
    """Whether inode ``ino`` owns any of the bytes [start, start + length) of the data
    device (the whole device by default)."""
    if length is None:
        length = WHOLE_DEVICE - start
    return any(not m.special and m.owner == ino for m in query(mountpoint, start, length))


def given_back(mountpoint: str, ino: int, limit_s: float = GIVE_BACK_LIMIT_S) -> bool:
    """Wait until inode ``ino`` owns no block of the data device: False if it still
    does at the limit. statfs() expedites XFS's inode inactivation worker
    (xfs_fs_statfs(): xfs_inodegc_push()). OSError where there is no space map."""
    deadline = time.monotonic() + limit_s
    while owns(mountpoint, ino):
        if time.monotonic() >= deadline:
            return False
        os.statvfs(mountpoint)
        time.sleep(GIVE_BACK_POLL_S)
    return True
