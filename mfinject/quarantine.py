"""Bad blocks that outlive a namespace reset, fenced off in files no test touches.

A machine check at a pmem address leaves a bad range on the NVDIMM bus
(drivers/acpi/nfit/mce.c nfit_handle_mce()), and every enable of the
namespace copies the bus's bad ranges into the pmem device's badblocks
(nvdimm_badblocks_populate()). Only a successful Clear Uncorrectable Error
removes one, and QEMU's emulated NVDIMM offers none: so after a
machine-check test the namespace keeps a bad sector for the rest of the
VM's life, and a new filesystem would hand it to the next test's file,
where the test would judge the kernel on a page that was bad before it
began.

So each new filesystem on a namespace with bad blocks first fills its free
space with preallocated chunk files in its root, as a test's files are
(fallocate: unwritten extents, nothing written), keeps the chunks that hold
a bad sector and deletes the others.
FIEMAP tells which chunk holds what. A bad sector that no chunk could cover
is an error, never a silent risk.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from mfinject import fs
from mfinject.errors import MfinjectError

# in the filesystem's root, beside the tests' files: a subdirectory would be
# placed elsewhere (XFS puts a new directory in another allocation group, and
# its files' blocks with it), far from the blocks a test's file is given
PREFIX = ".mfinject-bad-blocks-"
CHUNK = 4 << 20
SECTOR = 512


class QuarantineError(MfinjectError):
    pass


def bad_byte_ranges(badblocks: list[str]) -> list[range]:
    """/sys/block/pmemN/badblocks lines ("SECTOR COUNT") as byte ranges of the device."""
    out = []
    for line in badblocks:
        sector, count = (int(x) for x in line.split()[:2])
        out.append(range(sector * SECTOR, (sector + count) * SECTOR))
    return out


def file_byte_ranges(path: str) -> list[range]:
    return [range(e.physical, e.physical + e.length) for e in fs.extents(path) if e.placed]


def overlaps(a: range, b: range) -> bool:
    return a.start < b.stop and b.start < a.stop


def uncovered(bad: list[range], held: list[range]) -> list[range]:
    """The bad ranges that lie not wholly inside the held ranges."""
    return [b for b in bad
            if sum(len(range(max(b.start, h.start), min(b.stop, h.stop))) for h in held)
            < len(b)]


def fence(mountpoint: str, badblocks: list[str], limit: int = 1 << 40) -> list[str]:
    """Chunk files on the filesystem that together hold every bad sector; returns them.

    ``limit`` bounds the bytes tried. QuarantineError if the filesystem fills
    (or the limit is reached) with a bad sector still outside every chunk.
    """
    bad = bad_byte_ranges(badblocks)
    if not bad:
        return []
    top = Path(mountpoint)
    kept: list[str] = []
    held: list[range] = []
    tried: list[str] = []
    try:
        for i in range(limit // CHUNK):
            if not uncovered(bad, held):
                break
            path = str(top / f"{PREFIX}{i:05d}")
            tried.append(path)
            if not _preallocate(path):
                break
            ranges = file_byte_ranges(path)
            if any(overlaps(r, b) for r in ranges for b in bad):
                kept.append(tried.pop())
                held += ranges
    finally:
        for path in tried:  # the space of every chunk that holds nothing bad is given back
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    left = uncovered(bad, held)
    if left:
        raise QuarantineError(
            f"bad sectors {', '.join(f'{r.start // SECTOR}+{len(r) // SECTOR}' for r in left)} "
            f"of {mountpoint}'s device lie outside every file the filesystem could "
            "preallocate: a test's file could land on them; reset the VM (a new boot) or, on "
            "real pmem, clear the errors (ndctl clear-errors)")
    return kept


def _preallocate(path: str) -> bool:
    """A CHUNK-sized file of unwritten extents; False when the filesystem is full."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, CHUNK)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        return os.fstat(fd).st_blocks > 0
    finally:
        os.close(fd)
    return True
