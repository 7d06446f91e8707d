"""Kernel health: splats, undeclared memory-failure lines, new taint flags, lost log
records, and which findings the row already holds (by identity, never by count)."""

import errno
import json
import os
from pathlib import Path

import pytest

from mfinject import kernel
from mfinject.expectations.model import ERROR, PASS, Verdict
from mfinject.fixtures import poison
from mfinject.observers import health, kmsg
from mfinject.observers.health import (
    LogRules,
    describe,
    scan,
    taint_findings,
    taint_letters,
    unreported,
)
from mfinject.observers.kmsg import KmsgCapture, Lost, parse_record
from mfinject.observers.mflog import HWPOISON_FAULT, ALREADY_POISONED, POISONING, SIGBUS_SENT, UNPOISON
from mfinject.scenarios import badblocks, catalogue, fileio, locking, races, unbind

from . import samples


def _recs(*lines, first=0):
    return [parse_record(f"{lvl},{i},{i * 1000},-;{text}")
            for i, (lvl, text) in enumerate(lines, start=first)]


SIGBUS = "Memory failure: 0x101218: Sending SIGBUS to python3:282 due to hardware memory corruption"
RECOVERED = "Memory failure: 0x101218: recovery action for dax page: Recovered"
FORCIBLY = ("Memory failure: 0x101218: forcibly killing python3:282 because of failure to unmap "
            "corrupted page")
CUT = "------------[ cut here ]------------"
WARN_INSERT = "WARNING: CPU: 0 PID: 923 at fs/dax.c:380 dax_insert_entry+0x227/0x320"
WARN_DISASSOCIATE = "WARNING: CPU: 1 PID: 990 at fs/dax.c:399 dax_disassociate_entry+0x5d/0x80"
XFS_CORRUPTION = ("XFS (pmem0): Corruption of in-memory data (0x8) detected at "
                  "xfs_trans_cancel+0x146/0x150 [xfs] (fs/xfs/xfs_trans.c:1097).  Shutting down "
                  "filesystem.")
W = 1 << 9


def test_a_poisoning_scenario_may_log_its_sigbus_and_recovery_action():
    recs = _recs((3, SIGBUS), (3, RECOVERED),
                 (4, "Injecting memory failure for pfn 0x101218 at process virtual address 0x7f"),
                 (6, "XFS (pmem0): Mounting V5 Filesystem"))
    assert scan(recs) == []
    assert scan(recs, LogRules(POISONING)) == []


def test_any_other_memory_failure_line_is_a_finding_whatever_its_level():
    recs = _recs((3, FORCIBLY), (3, "Memory failure: 0x101218: memory outside kernel control"),
                 (6, "Memory failure: Unable to find user space address 101218 in python3"),
                 (6, "Unpoison: Software-unpoisoned page 0x101218"))
    found = scan(recs)
    assert [f.kind for f in found] == ["unexpected memory-failure message"] * 4
    assert found[0].line.endswith(FORCIBLY) and found[0].key == ("kmsg", 0)


def test_a_scenario_that_declares_nothing_may_log_no_memory_failure_line():
    recs = _recs((3, RECOVERED))
    assert [f.kind for f in scan(recs, LogRules(()))] == ["unexpected memory-failure message"]


def test_formats_of_both_trees_match_their_declarations():
    # v6.1 (memory_failure(), unpoison_memory() with the prefix in each format)
    assert ALREADY_POISONED.matches("Memory failure: 0x101218: already hardware poisoned")
    assert UNPOISON.matches("Unpoison: Software-unpoisoned page 0x101218")
    # linux-next (action_result(MF_MSG_ALREADY_POISONED), pr_fmt "Unpoison: ")
    assert ALREADY_POISONED.matches(
        "Memory failure: 0x101218: recovery action for already poisoned page: Failed")
    assert UNPOISON.matches("Unpoison: 0x101218: software-unpoisoned page")
    assert SIGBUS_SENT.matches(SIGBUS)
    assert not SIGBUS_SENT.matches(SIGBUS.replace("0x101218", "101218"))
    failed = RECOVERED.replace("Recovered", "Failed")
    assert scan(_recs((3, failed))) == []  # which of the two: the recovery_action check
    assert scan(_recs((3, RECOVERED.replace("Recovered", "Ignored")))) != []


def test_scenarios_declare_what_they_may_log():
    for played in (*catalogue.ALL, *races.RACES):
        assert isinstance(played.kernel_messages, tuple), played.name
    assert catalogue.kernel_messages("madvise-self") == POISONING
    assert catalogue.kernel_messages(badblocks.BADBLOCKS.name) == (HWPOISON_FAULT,)
    assert catalogue.kernel_messages(fileio.BADBLOCKS_FILE_IO.name) == ()
    assert UNPOISON in catalogue.kernel_messages(locking.CORRUPT_PFN_UNPOISON.name)
    assert ALREADY_POISONED in catalogue.kernel_messages(locking.CORRUPT_PFN_TWICE.name)
    assert catalogue.kernel_messages("race-truncate") == races.RACES[0].kernel_messages
    # a separate scenario through its test's name; a test that plays nothing
    assert catalogue.kernel_messages("test_unbind_mounted") == \
        unbind.UNBIND_MOUNTED.kernel_messages == (SIGBUS_SENT,)
    assert catalogue.kernel_messages("test_mount_without_dax_is_refused") == ()


def test_warn_and_lockdep_found():
    recs = _recs((4, "WARNING: CPU: 1 PID: 300 at fs/dax.c:1234 dax_insert_entry+0x1/0x2"),
                 (4, "WARNING: possible circular locking dependency detected"),
                 (0, "BUG: KASAN: use-after-free in dax_lock_folio+0x10/0x20"))
    kinds = [f.kind for f in scan(recs)]
    assert kinds == ["WARN", "lockdep", "KASAN"]


# The first line of each debug-kernel report, as kernel/locking/lockdep.c, mm/kasan/report.c,
# kernel/sched/core.c (__might_resched), mm/debug.c (dump_page) and lib/list_debug.c print it
DEBUG_SPLATS = (
    ("lockdep", "WARNING: possible circular locking dependency detected"),
    ("lockdep", "WARNING: suspicious RCU usage"),
    ("lockdep", "BUG: Invalid wait context"),
    ("lockdep", "WARNING: inconsistent lock state"),
    ("lockdep", "WARNING: bad unlock balance detected!"),
    ("KASAN", "BUG: KASAN: slab-use-after-free in dax_lock_folio+0x3c/0x2b0"),
    ("sleep in atomic", "BUG: sleeping function called from invalid context at "
                        "include/linux/sched/mm.h:321"),
    ("DEBUG_VM", "page dumped because: VM_BUG_ON_FOLIO(!folio_test_locked(folio))"),
    ("DEBUG_VM", "BUG: Bad page state in process python3  pfn:1a0200"),
    ("DEBUG_LIST", "list_del corruption, ffff888104a3c0d8->next is LIST_POISON1 (dead000000000100)"),
    ("UBSAN", "UBSAN: shift-out-of-bounds in mm/memory-failure.c:412:9"),
)


@pytest.mark.parametrize("kind,line", DEBUG_SPLATS, ids=[l[:40] for _, l in DEBUG_SPLATS])
def test_a_debug_kernel_report_is_named_for_what_found_it(kind, line):
    # named by its own kind, not as the generic BUG or WARN its first line also is
    (f,) = scan(_recs((4, line)))
    assert f.kind == kind
    # a scenario's markers never allow one
    assert [x.kind for x in scan(_recs((4, line)), LogRules(allowed=(".*",)))] == [kind]


def test_unexpected_error_message_found_but_not_info():
    recs = _recs((1, XFS_CORRUPTION), (6, "random info line"))
    (f,) = scan(recs)
    assert f.kind == "unexpected error message" and "Corruption of in-memory data" in f.line


def test_hung_task_and_describe_excerpt():
    recs = _recs((6, "before"), (3, "INFO: task umount:512 blocked for more than 120 seconds."),
                 (6, "after"))
    found = scan(recs)
    assert [f.kind for f in found] == ["hung task"]
    text = describe(found, recs)
    assert "kernel health: hung task" in text and "dmesg excerpt:" in text and "after" in text


def test_taint_letters_and_one_finding_per_flag():
    assert taint_letters(0) == "-"
    assert taint_letters(W) == "W"
    assert taint_letters((1 << 4) | (1 << 5)) == "MB"
    found = taint_findings(W | (1 << 7))
    assert [f.key for f in found] == [("taint", 7), ("taint", 9)]
    assert found[1].text() == "new taint: taint flag W (0x200) appeared during the test"
    assert health.signature([f.text() for f in found]) == "new taint D; new taint W"


def test_markers_allow_lines_but_never_a_splat():
    recs = _recs((3, "XFS (pmem0): DAX unsupported by block device. Turning off DAX."))
    assert [f.kind for f in scan(recs)] == ["unexpected error message"]
    assert scan(recs, LogRules(allowed=("DAX unsupported by block device",))) == []
    assert scan(_recs((3, FORCIBLY)), LogRules(allowed=("forcibly killing",))) == []
    warn = _recs((4, "WARNING: CPU: 0 PID: 1 at fs/dax.c:1 x"))
    assert scan(warn, LogRules(allowed=("WARNING",)))[0].kind == "WARN"


def test_what_the_row_holds_is_told_by_identity_not_by_position():
    before = scan(_recs((4, CUT), (4, WARN_INSERT))) + taint_findings(W)
    # later: the unmount logs an XFS shutdown; the taint finding still comes last
    after = scan(_recs((4, CUT), (4, WARN_INSERT), (1, XFS_CORRUPTION))) + taint_findings(W)
    late = unreported(after, {f.identity for f in before})
    assert [f.kind for f in late] == ["unexpected error message"]
    assert "Corruption of in-memory data" in late[0].line
    # a finding without a key (a test's stand-in) is known by its text
    plain = health.Finding("WARN", "x")
    assert unreported([plain], {plain.identity}) == []


# --- /dev/kmsg: records the capture could not read --------------------------

class _FakeOs:
    """The os module as kmsg sees it: /dev/kmsg hands out ``script`` (bytes, or an
    OSError to raise), then EAGAIN. What comes before the script's first EAGAIN is
    the log before the capture: lseek(SEEK_END) goes past it, as the kernel's does."""

    O_RDONLY, O_NONBLOCK, SEEK_END = os.O_RDONLY, os.O_NONBLOCK, os.SEEK_END

    def __init__(self, *script):
        self.script = list(script)

    def open(self, path, flags):
        return 99

    def read(self, fd, n):
        item = self.script.pop(0) if self.script else OSError(errno.EAGAIN, "again")
        if isinstance(item, OSError):
            raise item
        return item

    def lseek(self, fd, pos, how):
        assert (pos, how) == (0, os.SEEK_END)
        if AGAIN in self.script:
            del self.script[:self.script.index(AGAIN) + 1]
        return 0

    def close(self, fd):
        pass


def _raw(seq, text="hello", level=6):
    return f"{level},{seq},{seq * 1000},-;{text}\n".encode()


AGAIN, PIPE = OSError(errno.EAGAIN, "again"), OSError(errno.EPIPE, "broken pipe")


def test_overwritten_records_are_counted_from_the_sequence_numbers(monkeypatch):
    # the capture starts after 11; 12-14 were overwritten before the test read them
    monkeypatch.setattr(kmsg, "os", _FakeOs(_raw(10), _raw(11), AGAIN, _raw(12), PIPE, _raw(15),
                                          _raw(16)))
    cap = KmsgCapture()
    assert [r.seq for r in cap.read()] == [12, 15, 16]
    assert cap.lost == [Lost(13, 2)]
    assert Lost(12, 3).describe() == "3 kernel log records lost (seq 12-14)"


def test_a_record_that_cannot_be_read_is_lost_too(monkeypatch):
    monkeypatch.setattr(kmsg, "os", _FakeOs(_raw(10), AGAIN, _raw(11), b"garbage", _raw(13)))
    cap = KmsgCapture()
    assert [r.seq for r in cap.read()] == [11, 13]
    assert cap.lost == [Lost(12, 1)]


def test_an_overrun_before_any_record_was_seen_is_lost_uncounted(monkeypatch):
    monkeypatch.setattr(kmsg, "os", _FakeOs(AGAIN, PIPE, _raw(40)))
    cap = KmsgCapture()
    assert [r.seq for r in cap.read()] == [40]
    assert cap.lost == [Lost(40, None)]
    assert health.lost_findings(cap.lost)[0].text() == (
        "kernel log lost: kernel log records lost before seq 40: the health check cannot "
        "vouch for them")


# --- the watch, the fixtures, the row ----------------------------------------

class _ScriptedLog:
    """A KmsgCapture stand-in: each read() hands out the next batch of records, and
    adds the next of ``lost`` (the gaps that read found) to its ``lost``."""

    def __init__(self, *batches, lost=()):
        self.batches = list(batches)
        self.gaps = list(lost)
        self.lost = []

    def read(self):
        if self.gaps:
            self.lost += self.gaps.pop(0)
        return self.batches.pop(0) if self.batches else []

    def close(self):
        pass


def _kernel(monkeypatch, log, *taints):
    """The kernel the watch sees: ``log``, and taint values for each kernel.taint() call."""
    values = iter(taints)
    monkeypatch.setattr(health, "KmsgCapture", lambda: log)
    monkeypatch.setattr(kernel, "taint", lambda: next(values))
    monkeypatch.setattr(poison, "CLEAR_WARN_ONCE", "/nonexistent/clear_warn_once")


def test_the_watch_reports_everything_since_it_began(monkeypatch):
    log = _ScriptedLog(_recs((4, CUT), (4, WARN_INSERT)), _recs((1, XFS_CORRUPTION), first=2),
                       lost=([Lost(7, 2)],))
    _kernel(monkeypatch, log, 0, W, W)
    watch = health.HealthWatch(LogRules(POISONING))
    first = watch.findings()
    assert [f.kind for f in first] == ["WARN", "WARN", "kernel log lost", "new taint"]
    second = watch.findings()
    assert [f.identity for f in unreported(second, {f.identity for f in first})] == [("kmsg", 2)]


def test_lost_records_make_the_verdict_an_error():
    found = health.lost_findings([Lost(12, 3)])
    v = poison.with_lost_records(Verdict(PASS), found)
    assert v.verdict == ERROR
    assert "3 kernel log records lost (seq 12-14): the health check cannot vouch for them" in \
        v.messages[0]
    assert poison.with_lost_records(Verdict(PASS), []).verdict == PASS


def test_clear_warn_once_is_rearmed_where_it_exists(tmp_path):
    knob = tmp_path / "clear_warn_once"
    knob.write_text("")
    poison.rearm_warn_once(str(knob))
    assert knob.read_text() == "1\n"
    poison.rearm_warn_once(str(tmp_path / "absent"))  # no debugfs: nothing to re-arm
    assert not (tmp_path / "absent").exists()
    with pytest.warns(UserWarning, match="stays silent"):
        poison.rearm_warn_once(str(tmp_path))  # cannot be written


REFLINK_SUITE = """
    import pytest
    from mfinject.expectations.evaluate import judge
    from mfinject.scenarios import shared
    from samples import VA_A, VA_C, ao, observation, participant

    pytestmark = pytest.mark.pmem

    @pytest.fixture
    def unmount():
        yield  # the kernel logs what the scripted log hands out at the teardown's read

    @pytest.mark.parametrize("scenario", [shared.CORRUPT_PFN_REFLINK], ids=lambda s: s.name)
    def test_scenario(scenario, unmount, mf_record):
        obs = observation(scenario.name, [
            participant("I", maps=False, injection="ok"), participant("X", sigbus=[ao(VA_A)]),
            participant("Y", sigbus=[ao()], vaddr=VA_C)], path="notify_failure", fs="xfs-rmapbt")
        mf_record(obs, judge(obs))
"""


def _reflink_row(pytester, tmp_path, monkeypatch, unmount, lost=()):
    """corrupt-pfn-reflink on 6.1, WARN and taint W during it; ``unmount`` logged after."""
    during = _recs((4, CUT), (4, WARN_INSERT), (3, SIGBUS), (3, SIGBUS), (3, RECOVERED))
    _kernel(monkeypatch, _ScriptedLog(during, _recs(*unmount, first=10), lost=lost), 0, W, W)
    pytester.makepyfile(samples=Path(samples.__file__).read_text(), test_suite=REFLINK_SUITE)
    pytester.runpytest("-p", "no:cacheprovider", "-p", "mfinject.plugin",
                       f"--mfinject-results={tmp_path}")
    (row,) = json.loads((tmp_path / "results.json").read_text())["results"]
    return row


def test_what_the_unmount_logs_after_the_taint_finding_fails_the_row(pytester, tmp_path,
                                                                      monkeypatch):
    row = _reflink_row(pytester, tmp_path, monkeypatch, [(1, XFS_CORRUPTION)])
    assert row["verdict"] == "fail"
    assert "kernel health: unexpected error message: " in row["message"]
    assert "Corruption of in-memory data" in row["message"]
    assert row["message"].count("new taint") == 1  # reported with the row, not again


def test_a_known_warn_at_unmount_stays_a_known_deviation(pytester, tmp_path, monkeypatch):
    row = _reflink_row(pytester, tmp_path, monkeypatch, [(4, CUT), (4, WARN_DISASSOCIATE)])
    assert row["verdict"] == "known-deviation"
    assert "dax_disassociate_entry" in row["message"]


def test_records_lost_at_unmount_make_the_row_an_error(pytester, tmp_path, monkeypatch):
    row = _reflink_row(pytester, tmp_path, monkeypatch, [], lost=([], [Lost(12, 3)]))
    assert row["verdict"] == "error"
    assert "3 kernel log records lost (seq 12-14)" in row["message"]


def test_the_leak_rows_fail_for_their_defect_alone():
    """Rows 3a-3e of test_verdict_leaks.py play the fixtures over a log with a defect;
    the same log without it gets the scenario's documented verdict."""
    from . import test_verdict_leaks as leaks

    warn = [(4, 10, leaks._CUT), (4, 11, leaks._WARN_INSERT), (3, 12, leaks._SIGBUS),
            (3, 13, leaks._SIGBUS), (3, 14, leaks._RECOVERED)]
    assert leaks._health(leaks.reflink(), warn, [(4, 15, leaks._CUT), (4, 16, WARN_DISASSOCIATE)],
                         leaks._TAINT_W) == "known-deviation"
    assert leaks._health(leaks.corrupt_pfn(), [(3, 10, leaks._SIGBUS), (3, 11, leaks._RECOVERED)],
                         [(6, 12, "XFS (pmem0): Unmounting Filesystem")]) == "pass"
    assert leaks._health(leaks.badblocks_file_io(), []) == "known-deviation"
    # a record missing from the sequence is lost, EPIPE or not
    assert leaks._health(leaks.corrupt_pfn(), [(3, 10, leaks._SIGBUS), (3, 12, leaks._RECOVERED)]
                         ) == "error"


def test_the_fault_handlers_mce_line_is_accepted_only_where_declared():
    from mfinject.observers.health import LogRules, finding_of
    from mfinject.observers.kmsg import KmsgRecord
    from mfinject.observers.mflog import HWPOISON_FAULT
    from mfinject.scenarios.badblocks import BADBLOCKS
    rec = KmsgRecord(3, 812, 333441650, "MCE: Killing python3:1025 due to hardware memory "
                     "corruption fault at 7fd7704fb000")  # 6.12.118, badblocks
    assert HWPOISON_FAULT in BADBLOCKS.kernel_messages
    assert finding_of(rec, LogRules(BADBLOCKS.kernel_messages)) is None
    assert finding_of(rec, LogRules()) is not None  # corrupt-pfn and the like: a finding


def test_a_health_finding_fails_an_unspecified_verdict_unless_a_known_case_covers_it():
    from mfinject.expectations.evaluate import with_health
    from mfinject.expectations.model import (FAIL, KERNEL_DEVIATION, KNOWN_DEVIATION,
                                             UNSPECIFIED, KnownDeviation, Seen, Source)

    obs = samples.observation("corrupt-pfn-reflink", [], path="notify_failure", fs="xfs-rmapbt")
    found = [f"WARN: {WARN_INSERT}", "new taint: taint flags W (0x200) appeared during the test"]
    known = KnownDeviation("corrupt-pfn-reflink", "kernel", "health",
                           "WARN fs/dax.c dax_insert_entry; new taint W", KERNEL_DEVIATION,
                           "a shared extent's second owner", Source("commit 0123456789ab",
                                                                    "a subject", "v6.2"),
                           Seen(obs.kernel, obs.kernel), frozenset({"notify_failure"}))
    unspecified = Verdict(UNSPECIFIED)
    assert with_health(unspecified, [], obs, (known,)).verdict == UNSPECIFIED  # no pass
    assert with_health(unspecified, found, obs, ()).verdict == FAIL
    assert with_health(unspecified, found, obs, (known,)).verdict == KNOWN_DEVIATION
