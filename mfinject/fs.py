"""Filesystems on an fsdax namespace, named by what they are.

Each kind is a mkfs command and mount options; what mkfs made is read back
after mounting (:func:`read_features`), and the memory-failure path of a
mount follows from that, not from the kind's name:

- ``xfs``: XFS as plain ``mkfs.xfs`` makes it (xfsprogs 6.1: crc=1,
  reflink=1, rmapbt=0), with only the 2 MiB stripe hint added. Without
  rmapbt xfs_dax_notify_failure() returns -EOPNOTSUPP, so
  memory_failure_dev_pagemap() falls back to the generic
  mf_generic_kill_procs() path. It has reflink.
- ``xfs-noreflink``: XFS with reflink=0,rmapbt=0 (the suite's ``xfs`` before
  issue #11): generic path, no reflink.
- ``xfs-rmapbt``: XFS with rmapbt and reflink: the pmem driver's
  ->memory_failure() calls dax_holder_notify_failure() and XFS walks its
  reverse map (xfs_notify_failure.c) down to mf_dax_kill_procs().
- ``ext4``: 4 KiB blocks; no holder ops, so the generic path.
- ``xfs-daxinode``, ``ext4-daxinode``: made as ``xfs`` and ``ext4``, mounted
  ``-o dax=inode``; the root directory gets FS_XFLAG_DAX right after the
  mount, so every file created in it inherits it (dax.rst, "Enabling DAX").

All the others are mounted ``-o dax=always``. A user's own kind
(``custom-xfs``, ``custom-ext4``: ``--mfinject-mkfs-options``) declares no
path and no reflink: both are what was read back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import shlex
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from mfinject.errors import MfinjectError
from mfinject import syscalls
from mfinject.syscalls import PAGE_SIZE, statx

log = logging.getLogger(__name__)


class FsError(MfinjectError):
    pass


GENERIC = "generic"
NOTIFY_FAILURE = "notify_failure"
DAX_ALWAYS = "dax=always"
DAX_INODE = "dax=inode"
PACKAGES = {"xfs": "xfsprogs", "ext4": "e2fsprogs"}
# mkfs of each fstype, forced (the namespace held the last test's filesystem) and quiet
MKFS = {"xfs": ("mkfs.xfs", "-f", "-q"), "ext4": ("mkfs.ext4", "-F", "-q")}
CUSTOM_PREFIX = "custom-"


@dataclass(frozen=True)
class FsKind:
    name: str
    fstype: str
    mkfs: tuple[str, ...]
    # which memory-failure path the kernel should take; None: whatever mkfs made
    path: str | None
    package: str
    reflink: bool | None = False  # FICLONE shares blocks; None: whatever mkfs made
    mount_options: str = DAX_ALWAYS
    # set FS_XFLAG_DAX on the root directory after mounting (for -o dax=inode)
    dax_inode: bool = False

    def mkfs_command(self, devpath: str) -> list[str]:
        return [*self.mkfs, devpath]


# a 2 MiB stripe unit makes large files start on 2 MiB boundaries, which a PMD
# mapping of an fsdax file needs
_XFS_SU = ("-d", "su=2m,sw=1")
_XFS = (*MKFS["xfs"], *_XFS_SU)
_EXT4 = (*MKFS["ext4"], "-b", "4096", "-E", "stride=512,stripe_width=512")

FS_KINDS: dict[str, FsKind] = {
    k.name: k
    for k in (
        # mkfs.xfs's own defaults (xfsprogs 6.1: crc=1, reflink=1, rmapbt=0)
        FsKind("xfs", "xfs", _XFS, GENERIC, "xfsprogs", reflink=True),
        FsKind("xfs-noreflink", "xfs", (*MKFS["xfs"], "-m", "reflink=0,rmapbt=0", *_XFS_SU),
               GENERIC, "xfsprogs"),
        FsKind("xfs-rmapbt", "xfs", (*MKFS["xfs"], "-m", "reflink=1,rmapbt=1", *_XFS_SU),
               NOTIFY_FAILURE, "xfsprogs", reflink=True),
        FsKind("ext4", "ext4", _EXT4, GENERIC, "e2fsprogs"),
        FsKind("xfs-daxinode", "xfs", _XFS, GENERIC, "xfsprogs", reflink=True,
               mount_options=DAX_INODE, dax_inode=True),
        FsKind("ext4-daxinode", "ext4", _EXT4, GENERIC, "e2fsprogs",
               mount_options=DAX_INODE, dax_inode=True),
    )
}


def custom_name(fstype: str) -> str:
    return CUSTOM_PREFIX + fstype


def kind_names() -> tuple[str, ...]:
    """Every name a kind can have: the built-in ones, then custom-<fstype>."""
    return (*FS_KINDS, *(custom_name(t) for t in MKFS))


def check_fstype(fstype: str) -> str:
    """``fstype`` if the suite knows its memory-failure path; ValueError naming the choice."""
    name = fstype.strip()
    if name not in MKFS:
        raise ValueError(f"unknown filesystem type {name!r}: choose {' or '.join(MKFS)} "
                         "(the filesystems whose memory-failure path the suite knows)")
    return name


def split_mkfs_options(text: str) -> tuple[str, ...]:
    """mkfs options split as a shell would; ValueError for a device among them."""
    try:
        args = tuple(shlex.split(text))
    except ValueError as e:
        raise ValueError(f"cannot split the mkfs options ({e}): quote them as a shell "
                         "would") from None
    devices = [a for a in args if a.startswith("/dev/") or "=/dev/" in a]
    if devices:
        raise ValueError(f"the mkfs options name a device ({', '.join(devices)}): give options "
                         "only; the suite appends the device it formats (the designated "
                         "namespace)")
    return args


# <uapi/linux/mount.h>: the options mount(8) turns into mount(2)'s flags, each
# with the flags it sets and those it clears; all others go to the filesystem
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS = 1, 2, 4, 8, 16
MS_MANDLOCK, MS_DIRSYNC, MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME = 64, 128, 256, 1024, 2048
MS_SILENT, MS_RELATIME, MS_I_VERSION = 1 << 15, 1 << 21, 1 << 23
MS_STRICTATIME, MS_LAZYTIME = 1 << 24, 1 << 25
MOUNT_FLAGS: dict[str, tuple[int, int]] = {
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0), "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0), "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0), "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0), "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0), "nosymfollow": (MS_NOSYMFOLLOW, 0),
    "noatime": (MS_NOATIME, 0), "atime": (0, MS_NOATIME),
    "nodiratime": (MS_NODIRATIME, 0), "diratime": (0, MS_NODIRATIME),
    "relatime": (MS_RELATIME, 0), "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0), "nostrictatime": (0, MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0), "nolazytime": (0, MS_LAZYTIME),
    "silent": (MS_SILENT, 0), "loud": (0, MS_SILENT),
    "mand": (MS_MANDLOCK, 0), "nomand": (0, MS_MANDLOCK),
    "iversion": (MS_I_VERSION, 0), "noiversion": (0, MS_I_VERSION),
    "defaults": (0, 0),
}
# options only mount(8) and fstab know (libmount's optmap): they mean nothing to
# a mount made here; and those that make another kind of mount than a new one
FSTAB_ONLY = frozenset({"auto", "noauto", "nofail", "user", "nouser", "users", "nousers",
                        "owner", "noowner", "group", "nogroup", "_netdev", "loop",
                        "bind", "rbind", "remount", "move", "sub", "nosub",
                        "private", "rprivate", "shared", "rshared", "slave", "rslave",
                        "unbindable", "runbindable"})
FSTAB_PREFIXES = ("x-", "X-", "comment=", "user=", "loop=", "offset=", "sizelimit=",
                  "encryption=", "helper=", "uhelper=", "verity.")


def split_mount_options(opts: str) -> tuple[int, str]:
    """mount(2)'s flags and data for mount(8)'s ``-o`` list, as mount(8) splits it."""
    flags, data = 0, []
    for opt in filter(None, opts.split(",")):
        if opt in MOUNT_FLAGS:
            on, off = MOUNT_FLAGS[opt]
            flags = (flags | on) & ~off
        else:
            data.append(opt)
    return flags, ",".join(data)


def check_mount_options(text: str) -> str:
    """Mount options that ask for DAX; ValueError naming the fix otherwise."""
    opts = text.strip()
    if not opts or any(c.isspace() for c in opts):
        raise ValueError("give the mount options as one comma-separated list without spaces, "
                         "as for mount -o (dax=always,noatime)")
    if '"' in opts:
        raise ValueError("quoted mount options are not supported: the suite splits the list "
                         "at every comma, as mount(2) takes it")
    fstab = [o for o in opts.split(",") if o in FSTAB_ONLY or o.startswith(FSTAB_PREFIXES)]
    if fstab:
        raise ValueError(f"{', '.join(fstab)}: options of mount(8) and fstab, not of a new "
                         "mount of a filesystem; the suite mounts through mount(2): leave them "
                         "out")
    if dax_mode(opts, default="") not in ("always", "inode"):
        raise ValueError(f"the mount options {opts!r} do not ask for DAX: the suite poisons DAX "
                         "pages; add dax=always (or dax=inode)")
    return opts


def custom_kind(fstype: str, mkfs_options: str, mount_options: str = DAX_ALWAYS) -> FsKind:
    """The user's own kind, as xfstests' MKFS_OPTIONS: ``mkfs.FSTYPE -f -q OPTIONS DEVICE``.

    ValueError (from the checks above) names what to give instead. The kind
    declares no path and no reflink: :func:`mounted` fills them in from what
    mkfs made. ``dax=inode`` among the mount options sets FS_XFLAG_DAX on the
    root directory, as the ``-daxinode`` kinds do.
    """
    name = check_fstype(fstype)
    args = split_mkfs_options(mkfs_options)
    opts = check_mount_options(mount_options)
    return FsKind(custom_name(name), name, (*MKFS[name], *args), None, PACKAGES[name],
                  reflink=None, mount_options=opts, dax_inode=dax_mode(opts) == "inode")


def dax_mode(options: str, default: str = "inode") -> str:
    """The DAX mode mount options select: always, inode or never.

    ``dax`` alone is the old spelling of dax=always. Without a dax option both
    XFS and ext4 behave as dax=inode (the per-file flag decides), and XFS
    never shows dax=inode among its options; ``default`` is what to say then.
    """
    mode = default
    for opt in options.split(","):
        if opt == "dax":
            mode = "always"
        elif opt.startswith("dax="):
            mode = opt.removeprefix("dax=")
    return mode


@dataclass(frozen=True)
class FsFeatures:
    """What a filesystem is, as read back from the device and the mount.

    The parsers of the tools' output fill in the on-disk part; the mount part
    (``mount_options``, ``dax_mode``) stays empty until :func:`read_features`
    adds it from /proc/self/mountinfo.
    """
    fstype: str
    reflink: bool
    rmapbt: bool
    crc: bool  # XFS crc=1 (v5); ext4 metadata_csum
    bigalloc: bool  # ext4 clusters of several blocks
    block_size: int
    mount_options: str = ""  # as /proc/mounts shows them: rw,relatime,attr2,dax=always,...
    dax_mode: str = ""  # always, inode or never

    @property
    def mf_path(self) -> str:
        """The memory-failure path the kernel takes: only XFS with rmapbt is told.

        xfs_dax_notify_failure() returns -EOPNOTSUPP without rmapbt (commit
        6f643c57d57c, "xfs: implement ->notify_failure() for XFS", v6.0), so
        memory_failure_dev_pagemap() falls back to mf_generic_kill_procs();
        ext4 registers no holder ops at all.
        """
        return NOTIFY_FAILURE if self.fstype == "xfs" and self.rmapbt else GENERIC

    def describe(self) -> str:
        return (f"{self.fstype} reflink={int(self.reflink)} rmapbt={int(self.rmapbt)} "
                f"crc={int(self.crc)} bigalloc={int(self.bigalloc)} bsize={self.block_size} "
                f"dax={self.dax_mode or '?'} mount={self.mount_options or '?'}")

    def as_facts(self) -> tuple[tuple[str, str], ...]:
        """For an observation's facts: ("fs_features", "xfs reflink=1 rmapbt=0 ... mount=...")."""
        return (("fs_features", self.describe()),)


def _flag(value: str | None) -> bool:
    return value is not None and value.strip() == "1"


def parse_xfs_info(text: str) -> FsFeatures:
    """The features in xfs_info's output (``xfs_db -c info`` prints the same).

    Sections start with their name (meta-data=, data, naming, log, realtime)
    and continue on lines that start with blanks and "="; each holds
    key=value pairs. A feature the output does not name is off (older
    xfsprogs print no reflink or rmapbt).
    """
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        head = re.match(r"^([a-z-]+)\s*=", line)
        if head:
            current = sections.setdefault(head.group(1), {})
            line = line[head.end():]
        elif current is None or not re.match(r"^\s+=", line):
            continue
        for key, value in re.findall(r"([a-z][a-z0-9_-]*)=([^\s,]+)", line):
            current.setdefault(key, value)
    meta, data = sections.get("meta-data"), sections.get("data")
    if meta is None or data is None or not data.get("bsize", "").isdigit():
        raise FsError("xfs_info printed no meta-data and data sections with a data bsize "
                      f"(is it XFS?): {text.strip()[:300]!r}")
    return FsFeatures("xfs", reflink=_flag(meta.get("reflink")), rmapbt=_flag(meta.get("rmapbt")),
                      crc=_flag(meta.get("crc")), bigalloc=False, block_size=int(data["bsize"]))


def parse_dumpe2fs(text: str) -> FsFeatures:
    """The features in ``dumpe2fs -h`` output ("Filesystem features:", "Block size:")."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    features = fields.get("Filesystem features")
    bsize = fields.get("Block size", "")
    if features is None or not bsize.isdigit():
        raise FsError("dumpe2fs -h printed no \"Filesystem features:\" and \"Block size:\" "
                      f"lines (is it ext4?): {text.strip()[:300]!r}")
    names = set(features.split())
    return FsFeatures("ext4", reflink=False, rmapbt=False, crc="metadata_csum" in names,
                      bigalloc="bigalloc" in names, block_size=int(bsize))


def _unescape(field: str) -> str:
    """A mountinfo field: blanks and backslashes are octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str, mountpoint: str) -> str:
    """The options of the mount at ``mountpoint``, as /proc/mounts shows them.

    proc(5): ``ID PARENT MAJ:MIN ROOT MOUNTPOINT MOUNT-OPTIONS [OPTIONAL...] -
    FSTYPE SOURCE SUPER-OPTIONS``; /proc/mounts joins the mount's options and
    the superblock's (whose rw/ro repeats the first). The last mount there wins.
    """
    found = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if _unescape(fields[4]) != mountpoint or len(fields) < sep + 4:
            continue
        per_mount = fields[5].split(",")
        per_sb = [o for o in fields[sep + 3].split(",") if o not in ("rw", "ro")]
        found = ",".join([*per_mount, *per_sb])
    if found is None:
        raise FsError(f"nothing is mounted at {mountpoint} (/proc/self/mountinfo)")
    return found


@dataclass(frozen=True)
class Mount:
    kind: FsKind  # as made: a custom kind's path and reflink filled in from ``features``
    devpath: str
    mountpoint: str
    features: FsFeatures

    def path(self, name: str) -> str:
        return os.path.join(self.mountpoint, name)

    @property
    def mf_path(self) -> str:
        """The memory-failure path this filesystem takes, from what was read back."""
        return self.features.mf_path

    @property
    def reflink(self) -> bool:
        return self.features.reflink


def _run(cmd: list[str], what: str, timeout: float = 120.0) -> str:
    """Run ``cmd``; its standard output. FsError naming the fix when it cannot."""
    log.info("+ %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise FsError(f"{cmd[0]} not found: install it ({what})") from e
    except subprocess.TimeoutExpired as e:
        raise FsError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise FsError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def mkfs(kind: FsKind, devpath: str) -> None:
    _run(kind.mkfs_command(devpath), f"apt-get install {kind.package}")


def _mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def read_features(mount: Mount) -> FsFeatures:
    """What the mounted filesystem is (see :func:`features_of`)."""
    return features_of(mount.kind.fstype, mount.devpath, mount.mountpoint)


# what xfs_info prints, asked of the kernel: xfs_info is a shell script that runs
# xfs_spaceman (0.5 s a filesystem under TCG, one filesystem per kind and reset)
XFS_IOC_FSGEOMETRY = 0x8100587E  # _IOR('X', 126, struct xfs_fsop_geom): 256 bytes, v5.1
XFS_FSOP_GEOM_FLAGS_V5SB = 1 << 15  # crc=1
XFS_FSOP_GEOM_FLAGS_RMAPBT = 1 << 19
XFS_FSOP_GEOM_FLAGS_REFLINK = 1 << 20
_XFS_GEOM = struct.Struct("=I88xI")  # blocksize ... flags (at byte 92)


def parse_xfs_geometry(geom: bytes) -> FsFeatures:
    """The features in a struct xfs_fsop_geom (fs/xfs/libxfs/xfs_fs.h)."""
    bsize, flags = _XFS_GEOM.unpack_from(geom)
    return FsFeatures("xfs", reflink=bool(flags & XFS_FSOP_GEOM_FLAGS_REFLINK),
                      rmapbt=bool(flags & XFS_FSOP_GEOM_FLAGS_RMAPBT),
                      crc=bool(flags & XFS_FSOP_GEOM_FLAGS_V5SB), bigalloc=False,
                      block_size=bsize)


def xfs_geometry(mountpoint: str) -> FsFeatures:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return parse_xfs_geometry(fcntl.ioctl(fd, XFS_IOC_FSGEOMETRY, bytes(256)))
    except OSError as e:
        raise FsError(f"XFS_IOC_FSGEOMETRY on {mountpoint}: {e.strerror} (is it XFS?)") from e
    finally:
        os.close(fd)


EXT4_SUPER_MAGIC = 0xEF53
EXT4_FEATURE_RO_COMPAT_BIGALLOC = 0x200
EXT4_FEATURE_RO_COMPAT_METADATA_CSUM = 0x400
# struct ext4_super_block, 1024 bytes into the device: s_log_block_size at 24,
# s_magic at 56, s_feature_ro_compat at 100 (fs/ext4/ext4.h)
_EXT4_SB = struct.Struct("=24xI28xH42xI")


def parse_ext4_superblock(sb: bytes) -> FsFeatures:
    """What ``dumpe2fs -h`` reads first: block size and features, from the superblock."""
    log_bsize, magic, ro_compat = _EXT4_SB.unpack_from(sb)
    if magic != EXT4_SUPER_MAGIC:
        raise FsError(f"no ext4 superblock (magic {magic:#x}, not {EXT4_SUPER_MAGIC:#x})")
    return FsFeatures("ext4", reflink=False, rmapbt=False,
                      crc=bool(ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM),
                      bigalloc=bool(ro_compat & EXT4_FEATURE_RO_COMPAT_BIGALLOC),
                      block_size=1024 << log_bsize)


def ext4_superblock(devpath: str) -> FsFeatures:
    fd = os.open(devpath, os.O_RDONLY)
    try:
        return parse_ext4_superblock(os.pread(fd, _EXT4_SB.size, 1024))
    finally:
        os.close(fd)


def features_of(fstype: str, devpath: str, mountpoint: str) -> FsFeatures:
    """XFS's geometry of the mount point or ext4's superblock on the device, and the
    mount's options from /proc/self/mountinfo."""
    if fstype == "xfs":
        disk = xfs_geometry(mountpoint)
    elif fstype == "ext4":
        disk = ext4_superblock(devpath)
    else:
        raise FsError(f"cannot read the features of {fstype}: the suite knows "
                      f"{' and '.join(MKFS)}")
    options = parse_mountinfo(_mountinfo(), mountpoint)
    return dataclasses.replace(disk, mount_options=options, dax_mode=dax_mode(options))


def as_made(kind: FsKind, features: FsFeatures) -> FsKind:
    """``kind`` with the path and reflink ``features`` show.

    A declared path or reflink that the filesystem contradicts is an FsError:
    mkfs ignored an option, or its defaults are not the ones the kind was
    written for.
    """
    wrong = []
    if kind.path is not None and kind.path != features.mf_path:
        wrong.append(f"the {kind.path} memory-failure path, but rmapbt={int(features.rmapbt)} "
                     f"gives the {features.mf_path} one")
    if kind.reflink is not None and kind.reflink != features.reflink:
        wrong.append(f"reflink={int(kind.reflink)}, but it has reflink={int(features.reflink)}")
    if wrong:
        raise FsError(f"{kind.name} should have {'; and '.join(wrong)} ({features.describe()}): "
                      f"{' '.join(kind.mkfs)} did not make what the kind says (mkfs ignored an "
                      "option, or its defaults differ from xfsprogs 6.1 / e2fsprogs 1.47): "
                      "pin the feature in the kind's mkfs options")
    return dataclasses.replace(kind, path=features.mf_path, reflink=features.reflink)


def _dax_inherited(directory: str) -> None:
    """FS_XFLAG_DAX on ``directory``, checked: its new files are DAX under -o dax=inode."""
    try:
        set_dax_flag(directory)
        ok = dax_flag(directory)
    except OSError as e:
        raise FsError(f"cannot set FS_XFLAG_DAX on {directory} ({e.strerror}): the device "
                      "cannot do DAX; put the namespace in fsdax mode "
                      "(ndctl create-namespace -f -e NAMESPACE -m fsdax)") from e
    if not ok:
        raise FsError(f"FS_XFLAG_DAX did not stick on {directory}: the filesystem ignores the "
                      "per-inode DAX flag; mount with -o dax=always instead")


def _mount(kind: FsKind, devpath: str, mountpoint: str) -> None:
    flags, data = split_mount_options(kind.mount_options)
    log.info("+ mount -t %s -o %s %s %s", kind.fstype, kind.mount_options, devpath, mountpoint)
    try:
        syscalls.mount(devpath, mountpoint, kind.fstype, flags, data)
    except OSError as e:
        raise FsError(f"mount -t {kind.fstype} -o {kind.mount_options} {devpath} {mountpoint}: "
                      f"{e.strerror}: the kernel's log says why (dmesg | tail)") from e


def _umount(mountpoint: str) -> None:
    try:
        syscalls.umount(mountpoint)
    except OSError as e:
        raise FsError(f"umount {mountpoint}: {e.strerror}: a process still uses it? "
                      f"(fuser -vm {mountpoint})") from e


@contextlib.contextmanager
def mounted(kind: FsKind, devpath: str, *, make: bool = True) -> Iterator[Mount]:
    """mkfs (if ``make``), mount with the kind's options, read back what it is; always unmount.

    A ``dax_inode`` kind's root directory gets FS_XFLAG_DAX before anything is
    created in it. The Mount's kind is the kind as made (:func:`as_made`).
    """
    if make:
        mkfs(kind, devpath)
    mountpoint = tempfile.mkdtemp(prefix=f"mfinject-{kind.name}-", dir="/run")
    try:
        _mount(kind, devpath, mountpoint)
        try:
            if kind.dax_inode:
                _dax_inherited(mountpoint)
            features = features_of(kind.fstype, devpath, mountpoint)
            yield Mount(as_made(kind, features), devpath, mountpoint, features)
        finally:
            _umount(mountpoint)
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
    try:
        # never O_TRUNC: truncating an earlier test's file would free its blocks,
        # poisoned ones among them, on a filesystem kept for the next test
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FsError(f"{path} exists already: a scenario's file names are its own, once per "
                      "filesystem (a test that ran twice on one kept filesystem? run it with "
                      "--mfinject-fresh-fs)") from None
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
            "(ndctl create-namespace -f -e NAMESPACE -m fsdax) and mount with -o dax=always "
            "(or -o dax=inode with FS_XFLAG_DAX on the file's directory)"
        )


# <uapi/linux/fs.h>: struct fsxattr is five __u32 (xflags, extsize, nextents,
# projid, cowextsize) and 8 bytes of padding
FSXATTR = struct.Struct("=5I8x")
FS_IOC_FSGETXATTR = 0x801C581F  # _IOR('X', 31, struct fsxattr)
FS_IOC_FSSETXATTR = 0x401C5820  # _IOW('X', 32, struct fsxattr)
FS_XFLAG_DAX = 0x00008000


def _xflags(fd: int, path: str) -> tuple[int, ...]:
    try:
        return FSXATTR.unpack(fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size)))
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def dax_flag(path: str) -> bool:
    """Whether FS_XFLAG_DAX is set on ``path`` (ioctl FS_IOC_FSGETXATTR).

    Raises OSError with its errno (ENOTTY: the filesystem has no fsxattr).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return bool(_xflags(fd, path)[0] & FS_XFLAG_DAX)
    finally:
        os.close(fd)


def set_dax_flag(path: str) -> None:
    """Set FS_XFLAG_DAX on ``path`` (FS_IOC_FSGETXATTR, then FS_IOC_FSSETXATTR).

    On a directory, files created in it afterwards inherit it; under
    ``-o dax=inode`` such a file is DAX (Documentation/filesystems/dax.rst).
    Raises OSError with its errno (EOPNOTSUPP or EINVAL where the device
    cannot do DAX, ENOTTY where the filesystem has no fsxattr).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        xflags, *rest = _xflags(fd, path)
        try:
            fcntl.ioctl(fd, FS_IOC_FSSETXATTR, FSXATTR.pack(xflags | FS_XFLAG_DAX, *rest))
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None
    finally:
        os.close(fd)


FICLONE = 0x40049409  # _IOW(0x94, 9, int), <uapi/linux/fs.h>


def reflink_copy(src: str, dst: str) -> None:
    """dst shares every block of src (ioctl FICLONE)."""
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


FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range), <uapi/linux/fs.h>


def reflink_range(src: str, dst: str, length: int, dst_offset: int) -> None:
    """dst's bytes [dst_offset, dst_offset + length) share src's first ``length`` bytes
    (ioctl FICLONERANGE); dst is created, and before dst_offset it is a hole."""
    s = os.open(src, os.O_RDONLY)
    try:
        d = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # struct file_clone_range: s64 src_fd, u64 src_offset, src_length, dest_offset
            fcntl.ioctl(d, FICLONERANGE, struct.pack("=qQQQ", s, 0, length, dst_offset))
            os.fsync(d)
        finally:
            os.close(d)
    finally:
        os.close(s)


FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap), <uapi/linux/fs.h>
FIEMAP_FLAG_SYNC = 0x1


def physical_offset(path: str, offset: int) -> int:
    """Byte offset on the block device of the file's byte ``offset`` (FIEMAP)."""
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


FIEMAP_EXTENT_LAST = 0x1
# where the extent lies is not known (yet): it cannot be placed on the device
FIEMAP_EXTENT_UNPLACED = (0x2 | 0x4 | 0x8 | 0x200)  # UNKNOWN, DELALLOC, ENCODED, DATA_INLINE
FIEMAP_EXTENT_SHARED = 0x2000
FIEMAP_MAX_OFFSET = (1 << 64) - 1
_FIEMAP_HEADER = struct.Struct("=QQIIII")      # start, length, flags, mapped, count, reserved
_FIEMAP_EXTENT = struct.Struct("=QQQ16xI12x")  # logical, physical, length, ..., flags, ...


@dataclass(frozen=True)
class Extent:
    logical: int
    physical: int
    length: int
    flags: int

    @property
    def placed(self) -> bool:
        return not self.flags & FIEMAP_EXTENT_UNPLACED

    @property
    def shared(self) -> bool:
        return bool(self.flags & FIEMAP_EXTENT_SHARED)


def extents(path: str, per_call: int = 64) -> list[Extent]:
    """Every extent of the file, in bytes (FIEMAP)."""
    found: list[Extent] = []
    start = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            buf = bytearray(_FIEMAP_HEADER.pack(start, FIEMAP_MAX_OFFSET - start,
                                                FIEMAP_FLAG_SYNC, 0, per_call, 0)
                            + bytes(_FIEMAP_EXTENT.size * per_call))
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
            mapped = _FIEMAP_HEADER.unpack_from(buf)[3]
            if not mapped:
                return found
            for i in range(mapped):
                ext = Extent(*_FIEMAP_EXTENT.unpack_from(
                    buf, _FIEMAP_HEADER.size + i * _FIEMAP_EXTENT.size))
                found.append(ext)
                if ext.flags & FIEMAP_EXTENT_LAST:
                    return found
            start = ext.logical + ext.length
    finally:
        os.close(fd)


def extent_pfn_ranges(exts: list[Extent], data_start: int) -> list[range]:
    """The PFNs placed extents cover on a device whose sector 0 is at physical address
    ``data_start``, as ranges."""
    return [range((data_start + e.physical) // PAGE_SIZE,
                  (data_start + e.physical + e.length + PAGE_SIZE - 1) // PAGE_SIZE)
            for e in exts]


def pfn_ranges(path: str, data_start: int) -> list[range]:
    """The PFNs of a file's blocks (:func:`extent_pfn_ranges`); FsError for an extent
    that cannot be placed on the device (delayed allocation, inline data, ...)."""
    exts = extents(path)
    for ext in exts:
        if not ext.placed:
            raise FsError(f"{path}: an extent at {ext.logical} cannot be placed on the device "
                          f"(FIEMAP flags {ext.flags:#x})")
    return extent_pfn_ranges(exts, data_start)
