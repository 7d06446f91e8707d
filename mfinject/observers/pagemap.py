"""/proc/PID/pagemap: one 64-bit entry per virtual page.

Documentation/admin-guide/mm/pagemap.rst: bit 63 page present, bit 62
swapped, bit 61 file-page or shared-anon, bit 56 exclusively mapped,
bits 0-54 the PFN when present (zero without CAP_SYS_ADMIN).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from mfinject.syscalls import PAGE_SIZE

PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_FILE = 1 << 61
PM_MMAP_EXCLUSIVE = 1 << 56
PM_PFN_MASK = (1 << 55) - 1


@dataclass(frozen=True)
class PagemapEntry:
    raw: int

    @property
    def present(self) -> bool:
        return bool(self.raw & PM_PRESENT)

    @property
    def swapped(self) -> bool:
        return bool(self.raw & PM_SWAP)

    @property
    def file(self) -> bool:
        return bool(self.raw & PM_FILE)

    @property
    def pfn(self) -> int | None:
        return self.raw & PM_PFN_MASK if self.present else None

    def describe(self) -> str:
        if not self.present:
            return "not present"
        return f"present pfn={self.pfn:#x}"


def parse_entry(data: bytes) -> PagemapEntry:
    (raw,) = struct.unpack("<Q", data)
    return PagemapEntry(raw)


def read_entry(pid: int, vaddr: int) -> PagemapEntry:
    """Read the entry for the page containing ``vaddr`` in process ``pid``."""
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        data = os.pread(fd, 8, (vaddr // PAGE_SIZE) * 8)
    finally:
        os.close(fd)
    if len(data) != 8:
        raise OSError(f"short read from /proc/{pid}/pagemap at {vaddr:#x}")
    return parse_entry(data)


def read_range(pid: int, vaddr: int, length: int) -> list[PagemapEntry]:
    """Entries for every page of [vaddr, vaddr + length)."""
    n = length // PAGE_SIZE
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        data = os.pread(fd, 8 * n, (vaddr // PAGE_SIZE) * 8)
    finally:
        os.close(fd)
    return [parse_entry(data[i:i + 8]) for i in range(0, len(data) - 7, 8)]

