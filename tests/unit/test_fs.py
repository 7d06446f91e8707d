"""mfinject.fs: what a filesystem kind makes, read back, and the kinds a session has.

The parsers are fed real output, captured on Debian 12 (xfsprogs 6.1.0,
e2fsprogs 1.47.0) from sparse 1006 MiB files (about the size of the fsdax
namespace of the VM's 1 GiB NVDIMM), pasted here verbatim (the tab after
"Inode size:" and the blank after "signed_directory_hash" included)::

    truncate -s 1006M x.img
    mkfs.xfs -f -q -d su=2m,sw=1 x.img                        # XFS_DEFAULT (kind xfs)
    mkfs.xfs -f -q -m reflink=0,rmapbt=0 -d su=2m,sw=1 x.img  # XFS_NOREFLINK
    mkfs.xfs -f -q -m reflink=1,rmapbt=1 -d su=2m,sw=1 x.img  # XFS_RMAPBT
    mkfs.xfs -f -q -m crc=0 -d su=2m,sw=1 x.img               # XFS_V4
    mkfs.xfs -f -q -b size=1024 -m rmapbt=1 -d su=2m,sw=1 x.img  # XFS_1K_RMAPBT
    xfs_info x.img        # unmounted it runs xfs_db -c info: the same text

    mkfs.ext4 -F -q -b 4096 -E stride=512,stripe_width=512 e.img  # EXT4_DEFAULT (kind ext4)
    mkfs.ext4 -F -q -b 4096 -O bigalloc -C 65536 -E stride=512,stripe_width=512 e.img
    mkfs.ext4 -F -q -b 1024 e.img                                 # EXT4_1K
    dumpe2fs -h e.img     # "dumpe2fs 1.47.0 (5-Feb-2023)" goes to stderr
"""

import dataclasses
import errno
import os
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from mfinject import fs, options, records
from mfinject.vm import outcomes

KERNEL_TESTS = Path(__file__).resolve().parent.parent / "kernel"
FS_ENV = ("MFINJECT_MKFS_OPTIONS", "MFINJECT_FSTYPE", "MFINJECT_MOUNT_OPTIONS")
ENV = ("CI", "MFINJECT_REQUIRE_PMEM", "MFINJECT_DEVICE", "MFINJECT_DISPOSABLE", "MFINJECT_RESULTS",
       "MFINJECT_SEED", "MFINJECT_RACE_ITERATIONS", "MFINJECT_IN_VM", "MFINJECT_CRASH_TEST",
       "MFINJECT_PROGRESS", "PYTEST_ADDOPTS", *FS_ENV)

XFS_DEFAULT = """\
meta-data=x-default.img          isize=512    agcount=8, agsize=32256 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=0
         =                       reflink=1    bigtime=1 inobtcount=1 nrext64=0
data     =                       bsize=4096   blocks=257536, imaxpct=25
         =                       sunit=512    swidth=512 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =internal log           bsize=4096   blocks=16384, version=2
         =                       sectsz=512   sunit=8 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
"""

XFS_NOREFLINK = """\
meta-data=x-noreflink.img        isize=512    agcount=8, agsize=32256 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=0
         =                       reflink=0    bigtime=1 inobtcount=1 nrext64=0
data     =                       bsize=4096   blocks=257536, imaxpct=25
         =                       sunit=512    swidth=512 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =internal log           bsize=4096   blocks=16384, version=2
         =                       sectsz=512   sunit=8 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
"""

XFS_RMAPBT = """\
meta-data=x-rmapbt.img           isize=512    agcount=8, agsize=32256 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=1
         =                       reflink=1    bigtime=1 inobtcount=1 nrext64=0
data     =                       bsize=4096   blocks=257536, imaxpct=25
         =                       sunit=512    swidth=512 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =internal log           bsize=4096   blocks=16384, version=2
         =                       sectsz=512   sunit=8 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
"""

XFS_V4 = """\
meta-data=x-v4.img               isize=256    agcount=8, agsize=32256 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=0        finobt=0, sparse=0, rmapbt=0
         =                       reflink=0    bigtime=0 inobtcount=0 nrext64=0
data     =                       bsize=4096   blocks=257536, imaxpct=25
         =                       sunit=512    swidth=512 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =internal log           bsize=4096   blocks=16384, version=2
         =                       sectsz=512   sunit=8 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
"""

XFS_1K_RMAPBT = """\
meta-data=x-1k.img               isize=512    agcount=8, agsize=129024 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=1
         =                       reflink=1    bigtime=1 inobtcount=1 nrext64=0
data     =                       bsize=1024   blocks=1030144, imaxpct=25
         =                       sunit=2048   swidth=2048 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =internal log           bsize=1024   blocks=65536, version=2
         =                       sectsz=512   sunit=32 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
"""

EXT4_DEFAULT = """\
Filesystem volume name:   <none>
Last mounted on:          <not available>
Filesystem UUID:          3af9f433-9938-48e7-9784-bcc4108d2a1b
Filesystem magic number:  0xEF53
Filesystem revision #:    1 (dynamic)
Filesystem features:      has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum
Filesystem flags:         signed_directory_hash 
Default mount options:    user_xattr acl
Filesystem state:         clean
Errors behavior:          Continue
Filesystem OS type:       Linux
Inode count:              64384
Block count:              257536
Reserved block count:     12876
Overhead clusters:        8771
Free blocks:              248759
Free inodes:              64373
First block:              0
Block size:               4096
Fragment size:            4096
Group descriptor size:    64
Reserved GDT blocks:      125
Blocks per group:         32768
Fragments per group:      32768
Inodes per group:         8048
Inode blocks per group:   503
RAID stride:              512
RAID stripe width:        512
Flex block group size:    16
Filesystem created:       Wed Nov 25 13:13:53 2026
Last mount time:          n/a
Last write time:          Wed Nov 25 13:13:53 2026
Mount count:              0
Maximum mount count:      -1
Last checked:             Wed Nov 25 13:13:53 2026
Check interval:           0 (<none>)
Lifetime writes:          525 kB
Reserved blocks uid:      0 (user root)
Reserved blocks gid:      0 (group root)
First inode:              11
Inode size:	          256
Required extra isize:     32
Desired extra isize:      32
Journal inode:            8
Default directory hash:   half_md4
Directory Hash Seed:      5b9a4c74-28be-47f5-984a-db29ffce8197
Journal backup:           inode blocks
Checksum type:            crc32c
Checksum:                 0xc36c02d6
Journal features:         (none)
Total journal size:       16M
Total journal blocks:     4096
Max transaction length:   4096
Fast commit length:       0
Journal sequence:         0x00000001
Journal start:            0

"""

EXT4_BIGALLOC = """\
Filesystem volume name:   <none>
Last mounted on:          <not available>
Filesystem UUID:          5e639022-0b0e-4d8c-a2f7-1c52f1ddce39
Filesystem magic number:  0xEF53
Filesystem revision #:    1 (dynamic)
Filesystem features:      has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize bigalloc metadata_csum
Filesystem flags:         signed_directory_hash 
Default mount options:    user_xattr acl
Filesystem state:         clean
Errors behavior:          Continue
Filesystem OS type:       Linux
Inode count:              16096
Block count:              257536
Reserved block count:     12876
Overhead clusters:        322
Free blocks:              252336
Free inodes:              16085
First block:              0
Block size:               4096
Cluster size:             65536
Group descriptor size:    64
Reserved GDT blocks:      7
Blocks per group:         524288
Clusters per group:       32768
Inodes per group:         16096
Inode blocks per group:   1006
RAID stride:              512
RAID stripe width:        512
Flex block group size:    16
Filesystem created:       Wed Nov 25 13:13:53 2026
Last mount time:          n/a
Last write time:          Wed Nov 25 13:13:53 2026
Mount count:              0
Maximum mount count:      -1
Last checked:             Wed Nov 25 13:13:53 2026
Check interval:           0 (<none>)
Lifetime writes:          45 kB
Reserved blocks uid:      0 (user root)
Reserved blocks gid:      0 (group root)
First inode:              11
Inode size:	          256
Required extra isize:     32
Desired extra isize:      32
Journal inode:            8
Default directory hash:   half_md4
Directory Hash Seed:      9c23465d-5820-4f42-97b1-cc8de58d847e
Journal backup:           inode blocks
Checksum type:            crc32c
Checksum:                 0xd92dc086
Journal features:         (none)
Total journal size:       16M
Total journal blocks:     4096
Max transaction length:   4096
Fast commit length:       0
Journal sequence:         0x00000001
Journal start:            0

"""

EXT4_1K = """\
Filesystem volume name:   <none>
Last mounted on:          <not available>
Filesystem UUID:          132e716a-ceb7-430b-a8b7-a88d99726b52
Filesystem magic number:  0xEF53
Filesystem revision #:    1 (dynamic)
Filesystem features:      has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum
Filesystem flags:         signed_directory_hash 
Default mount options:    user_xattr acl
Filesystem state:         clean
Errors behavior:          Continue
Filesystem OS type:       Linux
Inode count:              64512
Block count:              1030144
Reserved block count:     51507
Overhead clusters:        35680
Free blocks:              994450
Free inodes:              64501
First block:              1
Block size:               1024
Fragment size:            1024
Group descriptor size:    64
Reserved GDT blocks:      256
Blocks per group:         8192
Fragments per group:      8192
Inodes per group:         512
Inode blocks per group:   128
Flex block group size:    16
Filesystem created:       Wed Nov 25 13:20:31 2026
Last mount time:          n/a
Last write time:          Wed Nov 25 13:20:31 2026
Mount count:              0
Maximum mount count:      -1
Last checked:             Wed Nov 25 13:20:31 2026
Check interval:           0 (<none>)
Lifetime writes:          295 kB
Reserved blocks uid:      0 (user root)
Reserved blocks gid:      0 (group root)
First inode:              11
Inode size:	          256
Required extra isize:     32
Desired extra isize:      32
Journal inode:            8
Default directory hash:   half_md4
Directory Hash Seed:      d1e3f533-70ed-42c7-b77e-f80f547d1635
Journal backup:           inode blocks
Checksum type:            crc32c
Checksum:                 0xaa6ae519
Journal features:         (none)
Total journal size:       16M
Total journal blocks:     16384
Max transaction length:   16384
Fast commit length:       0
Journal sequence:         0x00000001
Journal start:            0

"""

# /proc/self/mountinfo: the first line is this host's root, verbatim; the others
# are written in proc(5)'s format with the options XFS and ext4 show for DAX
# mounts (xfs_fs_show_options, _ext4_show_options).
MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
512 27 259:0 / /run/mfinject-xfs-1a2b rw,relatime shared:300 - xfs /dev/pmem0 \
rw,attr2,dax=always,inode64,logbufs=8,logbsize=32k,sunit=4096,swidth=4096,noquota
513 27 259:0 / /run/mfinject-xfs-daxinode-3c4d rw,relatime - xfs /dev/pmem0 \
rw,attr2,inode64,logbufs=8,logbsize=32k,sunit=4096,swidth=4096,noquota
514 27 259:0 / /run/mfinject-ext4-daxinode-5e6f rw,relatime - ext4 /dev/pmem0 \
rw,dax=inode,stripe=512
515 27 259:0 / /run/with\\040blank rw,noatime - ext4 /dev/pmem0 rw,dax=always
"""


@pytest.fixture
def clean_env(monkeypatch):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)


# parsing what mkfs made

@pytest.mark.parametrize("text, reflink, rmapbt, crc, bsize, path", [
    (XFS_DEFAULT, True, False, True, 4096, fs.GENERIC),
    (XFS_NOREFLINK, False, False, True, 4096, fs.GENERIC),
    (XFS_RMAPBT, True, True, True, 4096, fs.NOTIFY_FAILURE),
    (XFS_V4, False, False, False, 4096, fs.GENERIC),
    (XFS_1K_RMAPBT, True, True, True, 1024, fs.NOTIFY_FAILURE),  # naming bsize=4096 is not it
], ids=["default", "reflink=0", "rmapbt=1", "crc=0", "1k-blocks"])
def test_xfs_info_is_read(text, reflink, rmapbt, crc, bsize, path):
    got = fs.parse_xfs_info(text)
    assert (got.fstype, got.reflink, got.rmapbt, got.crc, got.bigalloc, got.block_size) == \
        ("xfs", reflink, rmapbt, crc, False, bsize)
    assert got.mf_path == path
    assert (got.mount_options, got.dax_mode) == ("", "")  # the mount part comes later


@pytest.mark.parametrize("text, bigalloc, bsize", [
    (EXT4_DEFAULT, False, 4096), (EXT4_BIGALLOC, True, 4096), (EXT4_1K, False, 1024),
], ids=["default", "bigalloc", "1k-blocks"])
def test_dumpe2fs_is_read(text, bigalloc, bsize):
    got = fs.parse_dumpe2fs(text)
    assert (got.fstype, got.reflink, got.rmapbt, got.crc, got.bigalloc, got.block_size) == \
        ("ext4", False, False, True, bigalloc, bsize)  # crc: metadata_csum
    assert got.mf_path == fs.GENERIC
    assert "Inode size:\t" in EXT4_DEFAULT  # pasted verbatim, tab included


def test_output_of_another_filesystem_is_refused():
    with pytest.raises(fs.FsError, match="xfs_info printed no meta-data and data sections"):
        fs.parse_xfs_info(EXT4_DEFAULT)
    with pytest.raises(fs.FsError, match="dumpe2fs -h printed no"):
        fs.parse_dumpe2fs(XFS_DEFAULT)


def test_older_xfsprogs_without_reflink_or_rmapbt_fields_means_off():
    old = "\n".join(line for line in XFS_DEFAULT.splitlines() if "reflink=" not in line)
    old = old.replace(", rmapbt=0", "")
    got = fs.parse_xfs_info(old)
    assert (got.reflink, got.rmapbt, got.crc, got.block_size) == (False, False, True, 4096)


# the mount part

@pytest.mark.parametrize("mountpoint, expected", [
    ("/", "rw,relatime,discard,resv_strict,resuid=65534,resgid=65534"),
    ("/run/mfinject-xfs-1a2b", "rw,relatime,attr2,dax=always,inode64,logbufs=8,logbsize=32k,"
                               "sunit=4096,swidth=4096,noquota"),
    ("/run/mfinject-ext4-daxinode-5e6f", "rw,relatime,dax=inode,stripe=512"),
    ("/run/with blank", "rw,noatime,dax=always"),
])
def test_mount_options_as_proc_mounts_shows_them(mountpoint, expected):
    assert fs.parse_mountinfo(MOUNTINFO, mountpoint) == expected


def test_the_last_mount_on_a_mountpoint_wins_and_a_missing_one_is_named():
    again = MOUNTINFO + "600 512 259:0 / /run/mfinject-xfs-1a2b ro,relatime - xfs /dev/pmem0 ro\n"
    assert fs.parse_mountinfo(again, "/run/mfinject-xfs-1a2b") == "ro,relatime"
    with pytest.raises(fs.FsError, match="nothing is mounted at /run/nowhere"):
        fs.parse_mountinfo(MOUNTINFO, "/run/nowhere")


@pytest.mark.parametrize("opts, mode", [
    ("rw,relatime,attr2,dax=always,inode64", "always"), ("rw,dax", "always"),
    ("rw,dax=inode,stripe=512", "inode"), ("rw,dax=never", "never"),
    ("rw,relatime,attr2,inode64", "inode"),  # XFS never shows dax=inode
])
def test_dax_mode(opts, mode):
    assert fs.dax_mode(opts) == mode


def test_features_as_facts():
    feats = dataclasses.replace(fs.parse_xfs_info(XFS_DEFAULT),
                                mount_options="rw,relatime,attr2,dax=always,noquota",
                                dax_mode="always")
    assert feats.as_facts() == (("fs_features", "xfs reflink=1 rmapbt=0 crc=1 bigalloc=0 "
                                 "bsize=4096 dax=always mount=rw,relatime,attr2,dax=always,"
                                 "noquota"),)
    ext4 = fs.parse_dumpe2fs(EXT4_BIGALLOC)
    assert dict(ext4.as_facts())["fs_features"].startswith(
        "ext4 reflink=0 rmapbt=0 crc=1 bigalloc=1 bsize=4096")


# the kinds

def test_the_kinds_are_named_by_what_they_are():
    assert list(fs.FS_KINDS) == ["xfs", "xfs-noreflink", "xfs-rmapbt", "ext4", "xfs-daxinode",
                                 "ext4-daxinode"]
    k = fs.FS_KINDS
    assert k["xfs"].mkfs == ("mkfs.xfs", "-f", "-q", "-d", "su=2m,sw=1")  # mkfs.xfs's defaults
    assert k["xfs-noreflink"].mkfs == ("mkfs.xfs", "-f", "-q", "-m", "reflink=0,rmapbt=0",
                                       "-d", "su=2m,sw=1")
    assert [(n, x.path, x.reflink) for n, x in k.items()] == [
        ("xfs", fs.GENERIC, True), ("xfs-noreflink", fs.GENERIC, False),
        ("xfs-rmapbt", fs.NOTIFY_FAILURE, True), ("ext4", fs.GENERIC, False),
        ("xfs-daxinode", fs.GENERIC, True), ("ext4-daxinode", fs.GENERIC, False)]
    for name in ("xfs", "ext4"):
        inode = k[f"{name}-daxinode"]
        assert inode.mkfs == k[name].mkfs
        assert (inode.mount_options, inode.dax_inode) == ("dax=inode", True)
        assert (k[name].mount_options, k[name].dax_inode) == ("dax=always", False)


def _made_on_a_file(kind: fs.FsKind, tmp_path: Path) -> fs.FsFeatures:
    image = tmp_path / f"{kind.name}.img"
    with open(image, "wb") as f:
        f.truncate(1006 << 20)  # sparse
    subprocess.run(kind.mkfs_command(str(image)), check=True, capture_output=True)
    cmd = ["xfs_info", str(image)] if kind.fstype == "xfs" else ["dumpe2fs", "-h", str(image)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return fs.parse_xfs_info(out) if kind.fstype == "xfs" else fs.parse_dumpe2fs(out)


@pytest.mark.parametrize("name", list(fs.FS_KINDS))
def test_each_kind_makes_what_it_says_with_this_hosts_mkfs(name, tmp_path, monkeypatch):
    """mkfs on a sparse file under tmp_path (no device): its declared path and reflink hold."""
    kind = fs.FS_KINDS[name]
    monkeypatch.setenv("PATH", os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not all(shutil.which(p) for p in (kind.mkfs[0], "xfs_info", "dumpe2fs")):
        pytest.skip("xfsprogs or e2fsprogs missing: run scripts/setup")
    made = _made_on_a_file(kind, tmp_path)
    assert fs.as_made(kind, made) == kind
    assert made.block_size == 4096
    if kind.fstype == "ext4":  # what the guest reads instead of dumpe2fs -h
        with open(tmp_path / f"{kind.name}.img", "rb") as f:
            assert fs.parse_ext4_superblock(f.read(2048)[1024:]) == made


def _geometry(bsize: int, flags: int) -> bytes:
    geom = bytearray(256)
    struct.pack_into("=I", geom, 0, bsize)
    struct.pack_into("=I", geom, 92, flags)
    return bytes(geom)


def test_xfs_geometry_is_read_as_xfs_info_prints_it():
    assert fs.parse_xfs_geometry(_geometry(4096, (1 << 15) | (1 << 19) | (1 << 20))) == \
        fs.parse_xfs_info(XFS_RMAPBT)
    got = fs.parse_xfs_geometry(_geometry(4096, 1 << 15))
    assert (got.reflink, got.rmapbt, got.crc, got.mf_path) == (False, False, True, fs.GENERIC)


def test_an_ext4_superblock_without_its_magic_is_refused():
    with pytest.raises(fs.FsError, match="no ext4 superblock"):
        fs.parse_ext4_superblock(bytes(1024))


def test_a_kind_its_filesystem_contradicts_is_refused():
    made = fs.parse_xfs_info(XFS_DEFAULT)  # what mkfs.xfs makes when -m reflink=0 is ignored
    with pytest.raises(fs.FsError, match=r"xfs-noreflink should have reflink=0, but it has "
                       r"reflink=1 \(xfs reflink=1 rmapbt=0 .*\): mkfs.xfs -f -q -m "
                       r"reflink=0,rmapbt=0 -d su=2m,sw=1 did not make what the kind says"):
        fs.as_made(fs.FS_KINDS["xfs-noreflink"], made)
    with pytest.raises(fs.FsError, match="xfs-rmapbt should have the notify_failure "
                       "memory-failure path, but rmapbt=0 gives the generic one"):
        fs.as_made(fs.FS_KINDS["xfs-rmapbt"], made)


def test_a_custom_kind_is_what_mkfs_made():
    kind = fs.custom_kind("xfs", "-m rmapbt=1 -b size=4096")
    assert kind.name == "custom-xfs" and (kind.path, kind.reflink) == (None, None)
    assert kind.mkfs_command("/dev/pmem0") == ["mkfs.xfs", "-f", "-q", "-m", "rmapbt=1", "-b",
                                               "size=4096", "/dev/pmem0"]
    made = fs.as_made(kind, fs.parse_xfs_info(XFS_RMAPBT))
    assert (made.path, made.reflink) == (fs.NOTIFY_FAILURE, True)
    ext4 = fs.custom_kind("ext4", "", "dax=inode,noatime")
    assert ext4.mkfs == ("mkfs.ext4", "-F", "-q") and ext4.dax_inode
    assert fs.as_made(ext4, fs.parse_dumpe2fs(EXT4_BIGALLOC)).path == fs.GENERIC


@pytest.mark.parametrize("fstype, mkfs, mount, message", [
    ("btrfs", "", "dax=always", "unknown filesystem type 'btrfs': choose xfs or ext4"),
    ("xfs", "-m rmapbt=1 /dev/pmem0", "dax=always", r"name a device \(/dev/pmem0\): give "
     "options only; the suite appends the device it formats"),
    ("xfs", "-l logdev=/dev/pmem1", "dax=always", r"name a device \(logdev=/dev/pmem1\)"),
    ("xfs", "-m 'rmapbt=1", "dax=always", "cannot split the mkfs options"),
    ("ext4", "", "noatime", "'noatime' do not ask for DAX: .* add dax=always"),
    ("ext4", "", "dax=never", "do not ask for DAX"),
    ("ext4", "", "dax=always, noatime", "without spaces"),
])
def test_a_custom_kind_it_cannot_use_is_refused(fstype, mkfs, mount, message):
    with pytest.raises(ValueError, match=message):
        fs.custom_kind(fstype, mkfs, mount)


def test_kind_names_include_the_custom_ones_and_node_ids_split_on_them():
    assert fs.kind_names()[-2:] == ("custom-xfs", "custom-ext4")
    for param, expected in [("custom-xfs-corrupt-pfn", ("corrupt-pfn", "custom-xfs")),
                            ("xfs-noreflink-race-fault", ("race-fault", "xfs-noreflink")),
                            ("ext4-daxinode-madvise-self", ("madvise-self", "ext4-daxinode")),
                            ("xfs-madvise-self", ("madvise-self", "xfs")),
                            ("custom-ext4", ("test_unbind_mounted", "custom-ext4"))]:
        test = "test_unbind_mounted" if param == "custom-ext4" else "test_scenario"
        assert outcomes._split(f"tests/kernel/test_scenarios.py::{test}[{param}]") == expected


def test_the_record_names_the_kind():
    item = SimpleNamespace(callspec=SimpleNamespace(params={"mf_dax_fs": "custom-ext4"}))
    assert records.fs_of(item) == "custom-ext4"
    assert records.fs_of(SimpleNamespace()) == "-"


# mounting, without a device: the commands are faked

class _Fake:
    """mkfs as _run would run it, mount(2) and umount as commands, and the mountinfo after."""

    def __init__(self, xfs_info: str, mountinfo_options: str):
        self.cmds: list[list[str]] = []
        self.xfs_info = xfs_info
        self.options = mountinfo_options
        self.mountpoint = ""

    def run(self, cmd, what, timeout=120.0):
        self.cmds.append(cmd)
        if cmd[0] == "mount":
            self.mountpoint = cmd[-1]
        return self.xfs_info if cmd[0] == "xfs_info" else ""

    def mount(self, source, target, fstype, flags=0, data=""):
        self.flags = flags
        self.run(["mount", "-t", fstype, "-o", data, source, target], "mount(2)")

    def mountinfo(self):
        return f"700 27 259:0 / {self.mountpoint} {self.options} - xfs /dev/pmem0 rw,noquota\n"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Install a _Fake for ``xfs_info`` output; mount points are made under tmp_path."""
    def mkdtemp(prefix, dir):
        path = tmp_path / f"{prefix}x"
        path.mkdir()
        return str(path)

    def install(xfs_info, options="rw,relatime"):
        f = _Fake(xfs_info, options)
        monkeypatch.setattr(fs, "_run", f.run)
        # the kernel's geometry, as xfs_info prints it; the unmount, as a command
        monkeypatch.setattr(fs, "xfs_geometry", lambda mnt: fs.parse_xfs_info(xfs_info))
        monkeypatch.setattr(fs.syscalls, "mount", f.mount)
        monkeypatch.setattr(fs, "_umount", lambda mnt: f.cmds.append(["umount", mnt]))
        monkeypatch.setattr(fs, "_mountinfo", f.mountinfo)
        monkeypatch.setattr(fs.tempfile, "mkdtemp", mkdtemp)
        return f
    return install


def test_mounted_reads_back_and_fills_in(fake):
    f = fake(XFS_RMAPBT)
    kind = fs.custom_kind("xfs", "-m rmapbt=1")
    with fs.mounted(kind, "/dev/pmem0") as mount:
        assert (mount.mf_path, mount.reflink) == (fs.NOTIFY_FAILURE, True)
        assert (mount.kind.path, mount.kind.reflink) == (fs.NOTIFY_FAILURE, True)  # for the runner
        assert mount.features.mount_options == "rw,relatime,noquota"
        assert mount.features.dax_mode == "inode"  # no dax option shown
        assert mount.path("a") == os.path.join(mount.mountpoint, "a")
    assert [c[0] for c in f.cmds] == ["mkfs.xfs", "mount", "umount"]
    assert f.cmds[1][:5] == ["mount", "-t", "xfs", "-o", "dax=always"]
    assert f.flags == 0
    assert not Path(mount.mountpoint).exists()


def test_mount_options_split_as_mount8_splits_them():
    """Flags to mount(2)'s flags, the rest to the filesystem, in order; the last word wins."""
    assert fs.split_mount_options("dax=always") == (0, "dax=always")
    assert fs.split_mount_options("dax=inode,noatime,ro,logbufs=8") == (
        fs.MS_NOATIME | fs.MS_RDONLY, "dax=inode,logbufs=8")
    assert fs.split_mount_options("ro,rw,defaults,dax") == (0, "dax")
    assert fs.split_mount_options("lazytime,nosuid,nodev,noexec,,dax=always") == (
        fs.MS_LAZYTIME | fs.MS_NOSUID | fs.MS_NODEV | fs.MS_NOEXEC, "dax=always")


@pytest.mark.parametrize("opts", ["dax=always,nofail", "x-systemd.automount,dax",
                                  "dax=inode,_netdev", "comment=foo,dax", "X-mount.mkdir,dax",
                                  "dax,user=bob", "nousers,dax", "dax,loop", "dax,bind",
                                  "dax,rshared", "dax,remount"])
def test_fstab_only_options_are_refused_by_name(opts):
    with pytest.raises(ValueError, match="options of mount\\(8\\) and fstab, not of a new mount"):
        fs.check_mount_options(opts)


def test_quoted_mount_options_are_refused():
    with pytest.raises(ValueError, match="quoted mount options are not supported"):
        fs.check_mount_options('dax,context="system_u:object_r:tmp_t:s0,c1"')


@pytest.mark.parametrize("opt, flag", [("iversion", fs.MS_I_VERSION), ("mand", fs.MS_MANDLOCK)])
def test_flags_xfs_and_ext4_would_refuse_as_data_are_flags(opt, flag):
    assert fs.split_mount_options(f"dax,{opt}") == (flag, "dax")
    assert fs.split_mount_options(f"dax,{opt},no{opt}") == (0, "dax")


def test_a_refused_mount_names_the_command_and_the_kernel_log(fake, monkeypatch):
    f = fake(XFS_DEFAULT)

    def refused(source, target, fstype, flags=0, data=""):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), target)
    monkeypatch.setattr(fs.syscalls, "mount", refused)
    with pytest.raises(fs.FsError, match=r"mount -t xfs -o dax=always /dev/pmem0 \S+: Invalid "
                                         r"argument: the kernel's log says why \(dmesg"):
        with fs.mounted(fs.FS_KINDS["xfs"], "/dev/pmem0"):
            pytest.fail("mounted() yielded what was never mounted")
    assert [c[0] for c in f.cmds] == ["mkfs.xfs"]  # and no umount of it


def test_mounted_refuses_a_contradiction_and_still_unmounts(fake):
    f = fake(XFS_DEFAULT)
    with pytest.raises(fs.FsError, match="xfs-noreflink should have reflink=0"):
        with fs.mounted(fs.FS_KINDS["xfs-noreflink"], "/dev/pmem0"):
            pytest.fail("mounted() yielded a filesystem that is not what its kind says")
    assert [c[0] for c in f.cmds] == ["mkfs.xfs", "mount", "umount"]


def test_a_daxinode_kind_flags_its_root_before_anything_is_made(fake, monkeypatch):
    f = fake(XFS_DEFAULT)
    flagged = []
    monkeypatch.setattr(fs, "set_dax_flag", lambda p: flagged.append((p, len(f.cmds))))
    monkeypatch.setattr(fs, "dax_flag", lambda p: True)
    with fs.mounted(fs.FS_KINDS["xfs-daxinode"], "/dev/pmem0") as mount:
        assert flagged == [(mount.mountpoint, 2)]  # after mkfs and mount
        assert f.cmds[1][3:5] == ["-o", "dax=inode"]


@pytest.mark.parametrize("flag_set, message", [
    ("ignored", "FS_XFLAG_DAX did not stick on .*: the filesystem ignores the per-inode DAX "
                "flag; mount with -o dax=always instead"),
    ("refused", r"cannot set FS_XFLAG_DAX on .* \(Operation not supported\): the device cannot "
                r"do DAX; put the namespace in fsdax mode \(ndctl create-namespace"),
])
def test_a_root_that_will_not_take_the_dax_flag_is_an_error(fake, monkeypatch, flag_set, message):
    f = fake(XFS_DEFAULT)

    def refused(path):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
    monkeypatch.setattr(fs, "set_dax_flag", refused if flag_set == "refused" else lambda p: None)
    monkeypatch.setattr(fs, "dax_flag", lambda p: False)
    with pytest.raises(fs.FsError, match=message):
        with fs.mounted(fs.FS_KINDS["xfs-daxinode"], "/dev/pmem0"):
            pytest.fail("mounted() yielded a root whose files would not be DAX")
    assert [c[0] for c in f.cmds] == ["mkfs.xfs", "mount", "umount"]


# the DAX flag

def test_the_dax_flag_keeps_the_other_fields(monkeypatch, tmp_path):
    target = tmp_path / "dir"
    target.mkdir()
    calls = []
    stored = struct.pack("=5I8x", 0x2, 7, 0, 5, 9)  # FS_XFLAG_PREALLOC, extsize, projid, cow

    def ioctl(fd, request, arg):
        nonlocal stored
        calls.append(request)
        if request == fs.FS_IOC_FSGETXATTR:
            assert len(arg) == 28  # sizeof(struct fsxattr)
            return stored
        stored = arg
        return 0
    monkeypatch.setattr(fs.fcntl, "ioctl", ioctl)
    assert not fs.dax_flag(str(target))
    fs.set_dax_flag(str(target))
    assert struct.unpack("=5I8x", stored) == (0x8002, 7, 0, 5, 9)
    assert fs.dax_flag(str(target))
    assert calls == [fs.FS_IOC_FSGETXATTR, fs.FS_IOC_FSGETXATTR, fs.FS_IOC_FSSETXATTR,
                     fs.FS_IOC_FSGETXATTR]


def test_the_ioctl_numbers_are_the_uapi_ones():
    def ioc(direction, nr, size):
        return (direction << 30) | (size << 16) | (ord("X") << 8) | nr
    assert fs.FSXATTR.size == 28
    assert fs.FS_IOC_FSGETXATTR == ioc(2, 31, 28) and fs.FS_IOC_FSSETXATTR == ioc(1, 32, 28)


def test_a_refused_dax_flag_is_an_oserror_naming_the_file():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    path = Path("/dev/shm") / f"mfinject-unit-{os.getpid()}"
    path.write_bytes(b"x")
    try:
        try:
            assert not fs.dax_flag(str(path))
        except OSError as e:  # a kernel whose tmpfs has no fsxattr at all
            assert e.errno == errno.ENOTTY and e.filename == str(path)
        with pytest.raises(OSError) as err:
            fs.set_dax_flag(str(path))  # tmpfs cannot do DAX
        assert err.value.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL)
        assert err.value.filename == str(path)
    finally:
        path.unlink()
    with pytest.raises(FileNotFoundError):
        fs.dax_flag(str(path))


# the options, and the kinds a session has

def _collect(pytester, *args):
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", *args,
                             str(KERNEL_TESTS))
    return res, [line.rsplit("::", 1)[1] for line in res.stdout.lines if "::" in line]


def test_without_mkfs_options_the_session_has_the_built_in_kinds(pytester, clean_env):
    res, items = _collect(pytester)
    assert res.ret == pytest.ExitCode.OK
    for name in fs.FS_KINDS:
        assert f"test_scenario[{name}-corrupt-pfn]" in items
        assert f"test_race[{name}-race-fault]" in items
    assert not any("custom-" in i for i in items)
    assert [i for i in items if i.startswith("test_unbind_mounted")] == \
        ["test_unbind_mounted[xfs-rmapbt]"]


def test_mkfs_options_add_a_custom_kind(pytester, clean_env):
    res, items = _collect(pytester, "--mfinject-mkfs-options=-m rmapbt=1,reflink=1",
                          "--mfinject-fstype", "xfs")
    assert res.ret == pytest.ExitCode.OK
    assert "test_scenario[custom-xfs-corrupt-pfn]" in items
    assert "test_race[custom-xfs-race-reflink]" in items
    assert "test_scenario[xfs-corrupt-pfn]" in items  # besides the built-in ones
    assert [i for i in items if i.startswith("test_unbind_mounted")] == \
        ["test_unbind_mounted[xfs-rmapbt]"]  # it names its own kind


def test_the_custom_kind_from_the_ini_file_and_the_environment(pytester, clean_env, monkeypatch):
    pytester.makeini("""
        [pytest]
        mfinject_mkfs_options = -O bigalloc -C 65536
        mfinject_fstype = ext4
    """)
    monkeypatch.setenv("MFINJECT_MOUNT_OPTIONS", "dax=inode,noatime")
    pytester.makepyfile("""
        def test_settings(mf_settings):
            kind = mf_settings.custom_fs
            assert kind.name == "custom-ext4"
            assert kind.mkfs == ("mkfs.ext4", "-F", "-q", "-O", "bigalloc", "-C", "65536")
            assert (kind.mount_options, kind.dax_inode) == ("dax=inode,noatime", True)
            assert list(mf_settings.fs_kinds())[-1] == "custom-ext4"
    """)
    res = pytester.runpytest("-p", "no:cacheprovider")
    assert res.ret == pytest.ExitCode.OK, res.stdout.str()
    assert "PytestConfigWarning" not in res.stdout.str()


@pytest.mark.parametrize("args, message", [
    (["--mfinject-mkfs-options=-m rmapbt=1", "--mfinject-fstype=btrfs"],
     "ERROR: --mfinject-fstype 'btrfs': unknown filesystem type 'btrfs': choose xfs or ext4 *"),
    (["--mfinject-mkfs-options=-m rmapbt=1 /dev/pmem0"],
     "ERROR: --mfinject-mkfs-options '-m rmapbt=1 /dev/pmem0': the mkfs options name a device "
     "(/dev/pmem0): give options only; *"),
    (["--mfinject-mkfs-options=", "--mfinject-mount-options=noatime"],
     "ERROR: --mfinject-mount-options 'noatime': the mount options 'noatime' do not ask for "
     "DAX: *add dax=always (or dax=inode)"),
    (["--mfinject-fstype=ext4"],
     "ERROR: --mfinject-fstype 'ext4': it describes the custom filesystem kind, which is made "
     "only with --mfinject-mkfs-options=OPTS: give that too (--mfinject-mkfs-options='' for "
     "mkfs's defaults)"),
])
def test_a_custom_kind_it_cannot_use_is_a_usage_error(pytester, clean_env, args, message):
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", *args,
                             str(KERNEL_TESTS))
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines([message])
    assert "Traceback" not in res.stderr.str()


def test_bad_fstype_from_the_environment_names_where_it_came_from(pytester, clean_env,
                                                                   monkeypatch):
    monkeypatch.setenv("MFINJECT_MKFS_OPTIONS", "-b size=4096")
    monkeypatch.setenv("MFINJECT_FSTYPE", "zfs")
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", str(KERNEL_TESTS))
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["ERROR: MFINJECT_FSTYPE='zfs' (the environment fallback of "
                              "--mfinject-fstype): unknown filesystem type 'zfs': *"])


def test_settings_list_the_custom_kind_last():
    settings = options.Settings(None, False, None, False, 1, 1,
                                custom_fs=fs.custom_kind("ext4", "-b 4096"))
    assert list(settings.fs_kinds()) == [*fs.FS_KINDS, "custom-ext4"]
    assert list(dataclasses.replace(settings, custom_fs=None).fs_kinds()) == list(fs.FS_KINDS)
