"""Thin ctypes wrappers for the system calls the suite needs.

Every wrapper turns a failing call into ``OSError(errno, strerror, ...)``.
Constants are the x86_64/generic values from the kernel's uapi headers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# <asm-generic/mman-common.h>
PROT_READ = 0x1
PROT_WRITE = 0x2
MAP_SHARED = 0x01
MAP_FIXED_NOREPLACE = 0x100000  # v4.17; older kernels take the address as a hint
MAP_FAILED = ctypes.c_void_p(-1).value
MADV_HWPOISON = 100

# <uapi/linux/prctl.h>
PR_MCE_KILL = 33
PR_MCE_KILL_GET = 34
PR_MCE_KILL_CLEAR = 0
PR_MCE_KILL_SET = 1
PR_MCE_KILL_LATE = 0
PR_MCE_KILL_EARLY = 1
PR_MCE_KILL_DEFAULT = 2

# <uapi/linux/ptrace.h>
PTRACE_CONT = 7
PTRACE_GETSIGINFO = 0x4202
PTRACE_SEIZE = 0x4206
PTRACE_O_EXITKILL = 1 << 20

# <uapi/asm-generic/siginfo.h>
BUS_MCEERR_AR = 4
BUS_MCEERR_AO = 5
SI_CODE_NAMES = {
    1: "BUS_ADRALN",
    2: "BUS_ADRERR",
    3: "BUS_OBJERR",
    BUS_MCEERR_AR: "BUS_MCEERR_AR",
    BUS_MCEERR_AO: "BUS_MCEERR_AO",
}

# <uapi/linux/stat.h>
STATX_BASIC_STATS = 0x7FF
STATX_ATTR_DAX = 0x00200000
AT_FDCWD = -100


def _check(ret: int, *args: object) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), *args)
    return ret


_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.memcpy.restype = ctypes.c_void_p
_libc.memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def mmap(fd: int, length: int, offset: int, prot: int = PROT_READ | PROT_WRITE,
         flags: int = MAP_SHARED, at: int | None = None) -> int:
    """Map ``length`` bytes of ``fd`` at ``offset``; return the address.

    With ``at``, exactly there (MAP_FIXED_NOREPLACE: never over another mapping);
    an address the kernel would not give is an OSError (EEXIST).
    """
    if at is not None:
        flags |= MAP_FIXED_NOREPLACE
    addr = _libc.mmap(at, length, prot, flags, fd, offset)
    if addr is None or addr == MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "mmap")
    if at is not None and addr != at:
        munmap(addr, length)
        raise OSError(errno.EEXIST, f"mmap placed the mapping at {addr:#x}, not {at:#x}", "mmap")
    return addr


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    """mount(2): what mount(8) does once it has parsed its options, without its
    0.4 s start under TCG (libmount, blkid)."""
    _check(_libc.mount(os.fsencode(source), os.fsencode(target), fstype.encode(), flags,
                       data.encode() or None), target)


def umount(target: str) -> None:
    """umount2(target, 0): what umount(8) does, without its 0.2 s start under TCG."""
    _check(_libc.umount2(os.fsencode(target), 0), target)


def munmap(addr: int, length: int) -> None:
    _check(_libc.munmap(addr, length), "munmap")


# <uapi/linux/io_uring.h>, x86_64 syscall numbers
SYS_IO_URING_SETUP = 425
SYS_IO_URING_REGISTER = 427
IORING_REGISTER_BUFFERS = 0


class _IoUringParams(ctypes.Structure):
    _fields_ = [("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("sq_thread_cpu", ctypes.c_uint32),
                ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
                ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
                ("sq_off", ctypes.c_uint64 * 5), ("cq_off", ctypes.c_uint64 * 5)]


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def io_uring_setup(entries: int) -> int:
    params = _IoUringParams()
    return _check(_libc.syscall(SYS_IO_URING_SETUP, entries, ctypes.byref(params)),
                  "io_uring_setup")


def io_uring_register_buffers(ring: int, addr: int, length: int) -> None:
    iov = _Iovec(addr, length)
    _check(_libc.syscall(SYS_IO_URING_REGISTER, ring, IORING_REGISTER_BUFFERS,
                         ctypes.byref(iov), 1), "io_uring_register")


# <uapi/linux/falloc.h>
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    _check(_libc.fallocate(fd, mode, offset, length), "fallocate")


def madvise(addr: int, length: int, advice: int) -> None:
    _check(_libc.madvise(addr, length, advice), "madvise")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def ptrace(request: int, pid: int, addr: int = 0, data: int | ctypes.c_void_p = 0) -> int:
    ctypes.set_errno(0)
    ret = _libc.ptrace(request, pid, addr, data)
    if ret == -1 and ctypes.get_errno():
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "ptrace", request, pid)
    return ret


def peek_byte(addr: int) -> int:
    """Load one byte from ``addr``: this is the access that may fault.

    The load is libc's memcpy() through ctypes, which releases the GIL for the
    call: another thread of the process runs (and can call madvise()) while
    this one is in the fault, as two threads of a C program would.
    """
    out = ctypes.c_ubyte()
    _libc.memcpy(ctypes.byref(out), addr, 1)
    return out.value


def poke_byte(addr: int, value: int) -> None:
    ctypes.c_ubyte.from_address(addr).value = value


class Siginfo(ctypes.Structure):
    """The x86_64 layout of siginfo_t for SIGBUS (128 bytes)."""

    _fields_ = [
        ("si_signo", ctypes.c_int),
        ("si_errno", ctypes.c_int),
        ("si_code", ctypes.c_int),
        ("_pad0", ctypes.c_int),
        ("si_addr", ctypes.c_uint64),
        ("si_addr_lsb", ctypes.c_short),
        ("_pad1", ctypes.c_byte * (128 - 26)),
    ]


def ptrace_getsiginfo(pid: int) -> Siginfo:
    info = Siginfo()
    ptrace(PTRACE_GETSIGINFO, pid, 0, ctypes.addressof(info))
    return info


class _Statx(ctypes.Structure):
    _fields_ = [
        ("stx_mask", ctypes.c_uint32),
        ("stx_blksize", ctypes.c_uint32),
        ("stx_attributes", ctypes.c_uint64),
        ("stx_nlink", ctypes.c_uint32),
        ("stx_uid", ctypes.c_uint32),
        ("stx_gid", ctypes.c_uint32),
        ("stx_mode", ctypes.c_uint16),
        ("_spare0", ctypes.c_uint16),
        ("stx_ino", ctypes.c_uint64),
        ("stx_size", ctypes.c_uint64),
        ("stx_blocks", ctypes.c_uint64),
        ("stx_attributes_mask", ctypes.c_uint64),
        ("_rest", ctypes.c_uint8 * (256 - 64)),
    ]


@dataclass(frozen=True)
class StatxAttrs:
    attributes: int
    attributes_mask: int

    @property
    def dax_known(self) -> bool:
        return bool(self.attributes_mask & STATX_ATTR_DAX)

    @property
    def dax(self) -> bool:
        return bool(self.attributes & STATX_ATTR_DAX)


_libc.statx.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.POINTER(_Statx),
]


def statx(path: str) -> StatxAttrs:
    buf = _Statx()
    _check(_libc.statx(AT_FDCWD, os.fsencode(path), 0, STATX_BASIC_STATS, ctypes.byref(buf)),
           "statx", path)
    return StatxAttrs(buf.stx_attributes, buf.stx_attributes_mask)
