"""A freed block poisoned: judged by what owned it at the injection (GETFSMAP).

XFS's reverse map decides what memory-failure does with a page whose file gave
its block back: free space is nobody's (ok, Recovered, the filesystem up);
XFS's own metadata (the AG free list refills from freed blocks) shuts the
filesystem down and fails the injection with EUCLEAN. A wrong kernel in either
case must fail; an owner the run could not read must not pass.
"""

import dataclasses
import struct

import pytest

from mfinject import fsmap
from mfinject.expectations.evaluate import judge, with_health
from mfinject.expectations.model import ERROR, FAIL, PASS

from .samples import observation, participant

INJECT = "[  216.017563] Injecting memory failure at pfn 0x20142e"
SHUTDOWN = ("[  216.018406] XFS (pmem0): Corruption of on-disk metadata (0x10) detected at "
            "xfs_dax_notify_failure+0x3d7/0x430 [xfs] (fs/xfs/xfs_notify_failure.c:169).  "
            "Shutting down filesystem.")
RECTIFY = "[  216.019067] XFS (pmem0): Please unmount the filesystem and rectify the problem(s)"


def freed(scenario="corrupt-pfn-deleted", *, owner="free", injection="ok", action="Recovered",
          shutdown=False, path="notify_failure"):
    i = participant("I", maps=False, injection=injection)
    m = participant("M", maps=False)
    dmesg = (INJECT, *((SHUTDOWN, RECTIFY) if shutdown else ()),
             f"[  216.019203] Memory failure: 0x20142e: recovery action for dax page: {action}")
    facts = () if owner is None else (("block_owner", owner),
                                      ("block_owner_detail", f"(as GETFSMAP said: {owner})"))
    return dataclasses.replace(observation(scenario, [i, m], path=path), dmesg=dmesg,
                               facts=facts)


def failed_checks(verdict):
    return {(c.participant, c.field) for c in verdict.checks if c.verdict != PASS}


@pytest.mark.parametrize("scenario", ["corrupt-pfn-deleted", "corrupt-pfn-truncated"])
def test_free_block_recovers_and_metadata_block_shuts_down(scenario):
    assert judge(freed(scenario)).verdict == PASS
    meta = freed(scenario, owner="metadata", injection="Structure needs cleaning",
                 action="Failed", shutdown=True)
    assert judge(meta).verdict == PASS


def test_a_wrong_kernel_fails_whichever_the_block_was():
    # poison in metadata, and XFS neither shuts down nor fails the injection
    v = judge(freed(owner="metadata"))
    assert v.verdict == FAIL
    assert failed_checks(v) == {("I", "injection"), ("kernel", "recovery_action"),
                                ("kernel", "fs_shutdown")}
    # poison in free space, and XFS shuts the filesystem down all the same
    v = judge(freed(injection="Structure needs cleaning", action="Failed", shutdown=True))
    assert v.verdict == FAIL
    assert ("kernel", "fs_shutdown") in failed_checks(v)
    # shut down, but the injection still said ok
    v = judge(freed(owner="metadata", action="Failed", shutdown=True))
    assert failed_checks(v) == {("I", "injection")}


@pytest.mark.parametrize("owner", [None, "unknown", "file data"])
def test_an_owner_not_read_or_not_foreseen_is_an_error_not_a_pass(owner):
    v = judge(freed(owner=owner))
    assert v.verdict == ERROR
    errors = [c for c in v.checks if c.verdict == ERROR]
    assert {(c.participant, c.field) for c in errors} == {
        ("I", "injection"), ("kernel", "recovery_action"), ("kernel", "fs_shutdown")}
    assert all("block_owner" in c.message for c in errors)


def test_the_generic_path_needs_no_owner():
    v = judge(freed(owner=None, path="generic", injection="Device or resource busy",
                    action="Failed"))
    assert v.verdict == PASS


def test_the_shutdown_lines_are_health_only_where_a_shutdown_is_expected():
    lines = [f"unexpected error message: {SHUTDOWN}", f"unexpected error message: {RECTIFY}"]
    meta = freed(owner="metadata", injection="Structure needs cleaning", action="Failed",
                 shutdown=True)
    assert with_health(judge(meta), lines, meta).verdict == PASS
    # the same lines where the block was free space: a failure, and the health one too
    free = freed(injection="Structure needs cleaning", action="Failed", shutdown=True)
    v = with_health(judge(free), lines, free)
    assert ("kernel", "health") in failed_checks(v)
    # a splat that mentions XFS is never excused
    splat = [f"WARN: {SHUTDOWN}"]
    assert ("kernel", "health") in failed_checks(with_health(judge(meta), splat, meta))


def _rec(flags, physical, owner, offset=0, length=4096):
    return fsmap.Mapping(physical, length, owner, flags, offset)


def test_fsmap_records_are_classified_as_xfs_notify_failure_treats_them():
    special = fsmap.FMR_OF_SPECIAL_OWNER
    free = _rec(special, 0x1000, fsmap.FMR_OWN_FREE)
    agfl = _rec(special, 0x1000, (ord("X") << 32) | 3)
    data = _rec(0, 0x1000, 131, offset=0x26000)
    bmbt = _rec(fsmap.FMR_OF_EXTENT_MAP, 0x1000, 131)
    attr = _rec(fsmap.FMR_OF_ATTR_FORK, 0x1000, 131)
    unknown = _rec(special, 0x1000, fsmap.FMR_OWN_UNKNOWN)
    assert fsmap.summarize([free]) == ("free", "free space")
    assert fsmap.summarize([agfl]) == ("metadata", "per-AG metadata")
    assert fsmap.summarize([data])[0] == "file data"
    assert "inode 131 data (an extent at file offset 0x26000" in fsmap.summarize([data])[1]
    assert fsmap.summarize([bmbt])[0] == fsmap.summarize([attr])[0] == "metadata"
    assert fsmap.summarize([unknown])[0] == "unknown"
    assert fsmap.summarize([])[0] == "unknown"
    assert fsmap.summarize([free, agfl])[0] == "metadata"
    assert fsmap.summarize([free, data])[0] == "file data"


def test_fsmap_ioctl_layout():
    # _IOWR('X', 59, struct fsmap_head): a 192-byte head (16 + 48 reserved + two 64-byte keys)
    assert fsmap._HEAD.size + 2 * fsmap._REC.size == 192
    assert fsmap.FS_IOC_GETFSMAP == (3 << 30) | (192 << 16) | (ord("X") << 8) | 59
    assert fsmap._REC.size == 64
    assert struct.calcsize("=IIQQQQ3Q") == 64
    # new_encode_dev(): minor's low byte, major, then the minor's high bits
    import os
    assert fsmap.device_cookie(os.makedev(259, 0)) == 259 << 8
    assert fsmap.device_cookie(os.makedev(259, 0x123)) == (0x23 | (259 << 8) | (0x100 << 12))

