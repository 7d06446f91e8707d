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
    facts = (("fs_device", "pmem0"),) + (() if owner is None else (
        ("block_owner", owner), ("block_owner_detail", f"(as GETFSMAP said: {owner})")))
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


OTHER_SHUTDOWNS = [
    # another cause of a shutdown, after the injection
    "[  216.5] XFS (pmem0): Metadata I/O Error (0x1) detected at xfs_trans_read_buf_map+0x1f0/"
    "0x300 [xfs] (fs/xfs/xfs_trans_buf.c:296).  Shutting down filesystem.",
    "[  216.5] XFS (pmem0): User initiated shutdown received.  Shutting down filesystem.",
    # the right report, of another device
    SHUTDOWN.replace("pmem0", "pmem1"),
]


@pytest.mark.parametrize("line", OTHER_SHUTDOWNS)
def test_only_the_notify_failure_shutdown_of_the_own_device_is_the_expected_one(line):
    meta = dataclasses.replace(
        freed(owner="metadata", injection="Structure needs cleaning", action="Failed"),
        dmesg=(INJECT, line, RECTIFY.replace("pmem0", "pmem1" if "pmem1" in line else "pmem0"),
               "[  216.6] Memory failure: 0x20142e: recovery action for dax page: Failed"))
    v = judge(meta)
    assert failed_checks(v) == {("kernel", "fs_shutdown")}
    assert "not the expected report" in next(c.observed for c in v.checks
                                             if c.field == "fs_shutdown")


def test_half_a_shutdown_report_or_one_before_the_injection_is_not_the_shutdown():
    base = freed(owner="metadata", injection="Structure needs cleaning", action="Failed")
    fail = "[  216.6] Memory failure: 0x20142e: recovery action for dax page: Failed"
    for dmesg in ((INJECT, SHUTDOWN, fail), (SHUTDOWN, RECTIFY, INJECT, fail),
                  (SHUTDOWN, RECTIFY, fail)):  # the last: an injection never logged
        v = judge(dataclasses.replace(base, dmesg=dmesg))
        assert failed_checks(v) == {("kernel", "fs_shutdown")}


def test_other_xfs_errors_beside_the_expected_shutdown_are_health_findings():
    meta = freed(owner="metadata", injection="Structure needs cleaning", action="Failed",
                 shutdown=True)
    for line in ("XFS (pmem0): Metadata corruption detected at xfs_allocbt_read_verify+0x10",
                 "XFS (pmem0): Internal error XFS_WANT_CORRUPTED_GOTO at line 1",
                 "XFS (pmem1): log I/O error -5", "foo: XFS (pmem0): bar",
                 f"foo: {RECTIFY[15:]}", f"{RECTIFY} and more",
                 RECTIFY.replace("pmem0", "pmem1")):
        v = with_health(judge(meta), [f"unexpected error message: {line}"], meta)
        assert ("kernel", "health") in failed_checks(v), line


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



def test_an_owner_that_changed_around_the_injection_is_an_error():
    moved = freed()
    moved = dataclasses.replace(moved, facts=(*moved.facts, ("block_owner_after", "metadata")))
    v = judge(moved)
    assert v.verdict == ERROR
    assert any("was 'free' before the injection and 'metadata' after it" in c.message
               for c in v.checks)
    # unreadable after (a shut-down filesystem answers GETFSMAP with EIO): nothing to compare
    meta = freed(owner="metadata", injection="Structure needs cleaning", action="Failed",
                 shutdown=True)
    meta = dataclasses.replace(meta, facts=(*meta.facts, ("block_owner_after", "unknown")))
    assert judge(meta).verdict == PASS


def test_a_shutdown_on_the_generic_path_fails():
    v = judge(freed(owner=None, path="generic", injection="Device or resource busy",
                    action="Failed", shutdown=True))
    assert failed_checks(v) == {("kernel", "fs_shutdown")}


def test_a_space_map_that_does_not_advance_is_an_error_not_a_hang(monkeypatch, tmp_path):
    import errno
    import os

    def same_page(fd, request, buf):
        count = fsmap._HEAD.unpack_from(buf, 0)[2]
        fsmap._HEAD.pack_into(buf, 0, 0, 0, count, count)
        for i in range(count):
            fsmap._REC.pack_into(buf, fsmap._HEAD.size + fsmap._REC.size * (2 + i),
                                 0, fsmap.FMR_OF_SPECIAL_OWNER, 0, fsmap.FMR_OWN_FREE, 0, 4096)
        return 0
    monkeypatch.setattr(fsmap.fcntl, "ioctl", same_page)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as e:
            list(fsmap._records(fd, 1 << 30, 4))
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)


def test_the_table_says_what_the_block_was_where_the_verdict_rests_on_it():
    from mfinject import results
    from mfinject.report import table

    meta = freed(owner="metadata", injection="Structure needs cleaning", action="Failed",
                 shutdown=True)
    row = results.from_observation(meta, judge(meta), "t")
    assert "via notify_failure (block: metadata)" in table.short_cell(row)
    assert "path: notify_failure (block: metadata)" in table.observed_cell(row)
    generic = freed(owner=None, path="generic", action="Failed",
                    injection="Device or resource busy")
    cell = table.short_cell(results.from_observation(generic, judge(generic), "t"))
    assert "via generic" in cell and "block:" not in cell
