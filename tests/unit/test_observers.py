"""Parsers of what the kernel hands back: pagemap entries and /dev/kmsg records."""

import struct

from mfinject.observers.kmsg import parse_record
from mfinject.observers.pagemap import parse_entry


def test_pagemap_present_entry_carries_pfn():
    e = parse_entry(struct.pack("<Q", (1 << 63) | (1 << 61) | 0x101218))
    assert e.present and e.file and not e.swapped
    assert e.pfn == 0x101218
    assert e.describe() == "present pfn=0x101218"


def test_pagemap_absent_entry_has_no_pfn():
    e = parse_entry(struct.pack("<Q", 0x1234))  # stale bits without PM_PRESENT
    assert not e.present
    assert e.pfn is None
    assert e.describe() == "not present"


def test_kmsg_record_parsed():
    rec = parse_record("3,1042,52330355,-;Memory failure: 0x101218: Sending SIGBUS to python3:282"
                       " due to hardware memory corruption\n")
    assert rec is not None
    assert (rec.level, rec.seq, rec.usec) == (3, 1042, 52330355)
    assert rec.text.startswith("Memory failure: 0x101218")
    assert str(rec).startswith("[   52.330355]")


def test_kmsg_continuation_dictionary_dropped():
    rec = parse_record("6,7,100,-;hello\n SUBSYSTEM=block\n DEVICE=b259:0\n")
    assert rec is not None and rec.text == "hello"


def test_kmsg_facility_bits_masked():
    rec = parse_record("14,1,1,-;user message")  # facility 1 (user), level 6
    assert rec is not None and rec.level == 6


def test_kmsg_garbage_rejected():
    assert parse_record("no separator") is None
    assert parse_record("x,y,z;text") is None


def test_ftrace_parse_and_path():
    from mfinject.observers.ftrace import Trace, parse_trace
    text = """# tracer: function
#
         python3-282     [001] ..... 52.327: memory_failure_dev_pagemap <-memory_failure
         python3-282     [001] ..... 52.327: dax_holder_notify_failure <-pmem_pagemap_memory_failure
         python3-282     [001] ..... 52.328: xfs_dax_notify_failure <-dax_holder_notify_failure
         python3-282     [001] ..... 52.328: mf_dax_kill_procs <-xfs_dax_failure_fn
         python3-282     [001] ..... 52.330: memory_failure_event: pfn 0x101218 page type: dax page, result: Recovered
"""
    calls, events = parse_trace(text)
    assert calls == ["memory_failure_dev_pagemap", "dax_holder_notify_failure",
                     "xfs_dax_notify_failure", "mf_dax_kill_procs"]
    assert events == ["pfn 0x101218 page type: dax page, result: Recovered"]
    assert Trace(True, calls=calls).path == "notify_failure"
    assert Trace(True, calls=["memory_failure_dev_pagemap", "dax_holder_notify_failure",
                              "dax_lock_folio"]).path == "generic"
    assert Trace(False).path == "not traced"



def test_ftrace_pmd_fault_results():
    from mfinject.observers.ftrace import parse_pmd_faults
    text = """         python-275 [001] ..... 31.12: dax_pmd_fault_done: dev 259:0 ino 0x1003 shared ALLOW_RETRY|KILLABLE|USER|INTERRUPTIBLE address 0x7fe97a400000 vm_start 0x7fe97a400000 vm_end 0x7fe97a600000 pgoff 0x0 max_pgoff 0x200 FALLBACK
         python-276 [001] ..... 31.13: dax_pmd_fault_done: dev 259:0 ino 0x1004 shared WRITE|USER address 0x7f929b800000 vm_start 0x7f929b800000 vm_end 0x7f929ba00000 pgoff 0x0 max_pgoff 0x200 NOPAGE
"""
    assert parse_pmd_faults(text) == [(0x7FE97A400000, "FALLBACK"), (0x7F929B800000, "NOPAGE")]


def test_kmsg_capture_starts_at_the_end_of_the_log():
    """On this host's kernel: nothing logged before the capture is read back."""
    import os
    import time

    from mfinject.observers.kmsg import capture
    if not os.access("/dev/kmsg", os.R_OK):
        import pytest
        pytest.skip("/dev/kmsg is not readable: run the unit tests as root")
    opened_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with capture() as cap:
        records = cap.read()
    assert all(r.usec >= opened_us - 1_000_000 for r in records), records[:3]
    assert cap.lost == []


def test_ftrace_filter_retries_a_function_only_when_its_module_appears():
    from mfinject.observers.ftrace import FUNCTIONS, to_try
    start = frozenset({"nd_pmem"})
    assert to_try(FUNCTIONS, [], None, start) == list(FUNCTIONS)
    have = [fn for fn in FUNCTIONS if fn not in ("xfs_dax_notify_failure", "dax_lock_folio")]
    # ext4 (and dm_delay) loaded: nothing of theirs is wanted; dax_lock_folio, absent
    # from 6.1's image, is not tried again
    assert to_try(FUNCTIONS, have, start, start | {"ext4", "jbd2", "dm_delay"}) == []
    assert to_try(FUNCTIONS, have, start, start | {"xfs"}) == ["xfs_dax_notify_failure"]
    assert to_try(FUNCTIONS, have + ["xfs_dax_notify_failure"], start | {"xfs"},
                  start | {"xfs", "loop"}) == []


AVAILABLE = ("__traceiter_initcall_level\nmemory_failure_dev_pagemap\nmf_dax_kill_procs\n"
             "do_one_initcall\nmf_dax_kill_procs\nxfs_dax_notify_failure [xfs]\n")


def test_ftrace_filter_indexes_are_lines_from_one_every_line_of_a_name():
    from mfinject.observers.ftrace import filter_lines
    assert filter_lines(AVAILABLE, ["mf_dax_kill_procs", "xfs_dax_notify_failure",
                                    "dax_lock_folio", "memory_failure_dev_pagemap"]) == {
        "memory_failure_dev_pagemap": [2], "mf_dax_kill_procs": [3, 5],
        "xfs_dax_notify_failure": [6]}


def test_ftrace_filter_lines_match_whole_names_only():
    from mfinject.observers.ftrace import filter_lines
    listing = "mf_dax_kill_procs_x\nx_mf_dax_kill_procs\ndax_lock_page\nmf_dax_kill_procs"
    assert filter_lines(listing, ["mf_dax_kill_procs", "dax_lock_page"]) == {
        "mf_dax_kill_procs": [4], "dax_lock_page": [3]}


def test_ftrace_filter_read_back_names_functions_not_the_empty_banner():
    from mfinject.observers.ftrace import filter_names
    assert filter_names("#### all functions enabled ####\n") == set()
    assert filter_names("mf_dax_kill_procs\nxfs_dax_notify_failure [xfs]\n") == {
        "mf_dax_kill_procs", "xfs_dax_notify_failure"}


class _FakeFilter:
    """set_ftrace_filter with the kernel's rules for an index, a name and a !name,
    over a listing that may have changed between the caller's read and its writes."""

    def __init__(self, listing: str, listing_at_write: str | None = None,
                 numbers: bool = True):
        self.path = "set_ftrace_filter"
        self.listing_path = "available_filter_functions"
        self._listing = listing
        self._at_write = [ln.split(" ")[0] for ln in (listing_at_write or listing).splitlines()]
        self.numbers = numbers  # False: a kernel before v5.1, which reads "3" as a name
        self.held: list[str] = []
        self.writes: list[str] = []
        self.unreadable = 0  # the next reads of the filter that fail

    def listing(self) -> str:
        return self._listing

    def names(self):
        if self.unreadable:
            self.unreadable -= 1
            return None
        return set(self.held)

    def write(self, tokens):
        self.writes += tokens
        took = []
        for t in tokens:
            if t.isdigit() and self.numbers:
                self.held.append(self._at_write[int(t) - 1])
            elif t.startswith("!") and t[1:] in self.held:
                self.held.remove(t[1:])
            elif t in self._at_write:
                self.held.append(t)
            else:
                took.append(False)
                continue
            took.append(True)
        return took


def test_ftrace_filter_by_index_takes_what_the_kernel_has():
    from mfinject.observers.ftrace import _append
    ff = _FakeFilter(AVAILABLE)
    took = _append(ff, ["memory_failure_dev_pagemap", "dax_lock_folio", "mf_dax_kill_procs"])
    assert took == ["memory_failure_dev_pagemap", "mf_dax_kill_procs"]
    assert ff.writes == ["2", "3", "5"]  # no name: no pass over every function per name
    assert set(ff.held) == {"memory_failure_dev_pagemap", "mf_dax_kill_procs"}


def test_ftrace_filter_by_index_that_selected_another_function_falls_back_to_names():
    """A module loaded between the listing and the writes shifted the lines: the function
    an index now names is taken out again, and the names are written instead."""
    from mfinject.observers.ftrace import _append
    ff = _FakeFilter(AVAILABLE, listing_at_write="dm_delay_fn [dm_delay]\n" + AVAILABLE)
    took = _append(ff, ["memory_failure_dev_pagemap", "xfs_dax_notify_failure"])
    assert took == ["memory_failure_dev_pagemap", "xfs_dax_notify_failure"]
    assert set(ff.held) == {"memory_failure_dev_pagemap", "xfs_dax_notify_failure"}
    assert "!__traceiter_initcall_level" in ff.writes and "!mf_dax_kill_procs" in ff.writes


def test_ftrace_filter_on_a_kernel_without_indexes_goes_by_name():
    from mfinject.observers.ftrace import _append
    ff = _FakeFilter(AVAILABLE, numbers=False)
    assert _append(ff, ["mf_dax_kill_procs", "dax_lock_page"]) == ["mf_dax_kill_procs"]
    assert ff.held == ["mf_dax_kill_procs"]


def test_ftrace_filter_unreadable_before_the_writes_takes_nothing_out():
    """Held functions are never taken out on a read that failed: the trace of an injection
    would lose its path."""
    from mfinject.observers.ftrace import _append
    ff = _FakeFilter(AVAILABLE)
    ff.held = ["memory_failure_dev_pagemap", "mf_dax_kill_procs"]
    ff.unreadable = 1
    assert _append(ff, ["xfs_dax_notify_failure"]) == ["xfs_dax_notify_failure"]
    assert not any(w.startswith("!") for w in ff.writes)
    assert set(ff.held) == {"memory_failure_dev_pagemap", "mf_dax_kill_procs",
                            "xfs_dax_notify_failure"}


def test_ftrace_filter_read_back_skips_what_is_not_a_function():
    from mfinject.observers.ftrace import filter_names
    assert filter_names("mf_dax_kill_procs\n__ftrace_invalid_address___812\n"
                        "*:mod:xfs\nschedule:traceoff:unlimited\n") == {"mf_dax_kill_procs"}


def test_ftrace_a_module_still_loading_has_not_appeared():
    from mfinject.observers.ftrace import live_modules
    text = ("xfs 2101248 0 - Loading 0xffffffffc0a00000\n"
            "nd_pmem 24576 1 - Live 0xffffffffc0400000\n"
            "dm_delay 20480 0 - Unloading 0xffffffffc0300000\n")
    assert live_modules(text) == frozenset({"nd_pmem"})


def test_ftrace_filter_with_nothing_to_write_is_not_opened(tmp_path):
    """Each close of set_ftrace_filter applies it again (a re-patch of kernel text)."""
    from mfinject.observers.ftrace import FilterFile
    ff = FilterFile(tmp_path / "set_ftrace_filter")
    assert ff.write([]) == []
    assert not (tmp_path / "set_ftrace_filter").exists()
