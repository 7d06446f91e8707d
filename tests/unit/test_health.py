"""Kernel-health scanning: splats, unexpected errors, the memory-failure allowlist."""

from mfinject.observers.health import describe, scan, taint_letters
from mfinject.observers.kmsg import parse_record


def _recs(*lines):
    return [parse_record(f"{lvl},{i},{i * 1000},-;{text}") for i, (lvl, text) in enumerate(lines)]


def test_expected_memory_failure_errors_pass():
    recs = _recs((3, "Memory failure: 0x101218: Sending SIGBUS to python3:282 due to hardware "
                     "memory corruption"),
                 (3, "Memory failure: 0x101218: recovery action for dax page: Recovered"),
                 (4, "Injecting memory failure for pfn 0x101218 at process virtual address 0x7f"),
                 (6, "XFS (pmem0): Mounting V5 Filesystem"))
    assert scan(recs) == []


def test_warn_and_lockdep_found():
    recs = _recs((4, "WARNING: CPU: 1 PID: 300 at fs/dax.c:1234 dax_insert_entry+0x1/0x2"),
                 (4, "WARNING: possible circular locking dependency detected"),
                 (0, "BUG: KASAN: use-after-free in dax_lock_folio+0x10/0x20"))
    kinds = [f.kind for f in scan(recs)]
    assert kinds == ["WARN", "lockdep", "KASAN"]


def test_unexpected_error_message_found_but_not_info():
    recs = _recs((3, "XFS (pmem0): Corruption of in-memory data detected. Shutting down."),
                 (6, "random info line"))
    (f,) = scan(recs)
    assert f.kind == "unexpected error message" and "Corruption of in-memory data" in f.line


def test_hung_task_and_describe_excerpt():
    recs = _recs((6, "before"), (3, "INFO: task umount:512 blocked for more than 120 seconds."),
                 (6, "after"))
    found = scan(recs)
    assert [f.kind for f in found] == ["hung task"]
    text = describe(found, recs)
    assert "kernel health: hung task" in text and "dmesg excerpt:" in text and "after" in text


def test_taint_letters():
    assert taint_letters(0) == "-"
    assert taint_letters(1 << 9) == "W"
    assert taint_letters((1 << 4) | (1 << 5)) == "MB"


def test_per_test_allowance():
    import re
    recs = _recs((3, "XFS (pmem0): DAX unsupported by block device. Turning off DAX."))
    assert [f.kind for f in scan(recs)] == ["unexpected error message"]
    assert scan(recs, (re.compile("DAX unsupported by block device"),)) == []
    # an allowance never covers a splat
    warn = _recs((4, "WARNING: CPU: 0 PID: 1 at fs/dax.c:1 x"))
    assert scan(warn, (re.compile("WARNING"),))[0].kind == "WARN"
