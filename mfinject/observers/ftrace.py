"""Which kernel functions an injection went through, from a private tracefs instance.

The function tracer, limited to a few entry points, tells the two
memory-failure paths apart:
- notify_failure: the pmem driver's ->memory_failure() reached the
  filesystem (xfs_dax_notify_failure) and it called mf_dax_kill_procs();
- generic: mf_generic_kill_procs() locked the DAX entry with dax_lock_page()
  (dax_lock_folio() from 6.6, commit 91e79d22be75 "mm: convert DAX lock/unlock
  page to lock/unlock folio", v6.6).

The same instance records the ras:memory_failure_event tracepoint, and
fs_dax:dax_pmd_fault_done, which says whether a fault mapped a PMD (NOPAGE)
or fell back to PTEs (FALLBACK): smaps FilePmdMapped does not count DAX PMDs.
Everything runs in ``instances/mfinject-PID`` and is removed afterwards, so the
global tracer is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
FUNCTIONS = (
    "memory_failure_dev_pagemap",
    "dax_holder_notify_failure",
    "xfs_dax_notify_failure",
    "mf_dax_kill_procs",
    "mf_generic_kill_procs",
    "dax_lock_page",
    "dax_lock_folio",
)
# Where a function lives when it is not in the kernel image: tried when its module
# appears in /proc/modules. The others are tried once, at the start: a function
# a kernel does not have (dax_lock_folio before 6.6, dax_lock_page from 6.6) is
# not tried again at every module load, each try re-patching kernel text.
MODULE_OF = {"xfs_dax_notify_failure": "xfs"}
# The filesystem's handler ran and the generic fallback did not: XFS without
# rmapbt also enters xfs_dax_notify_failure(), returns -EOPNOTSUPP, and then
# the generic path runs.
NOTIFY_MARKERS = ("mf_dax_kill_procs", "xfs_dax_notify_failure")
GENERIC_MARKERS = ("mf_generic_kill_procs", "dax_lock_page", "dax_lock_folio")


@dataclass
class Trace:
    available: bool
    functions: list[str] = field(default_factory=list)  # those the filter accepted
    calls: list[str] = field(default_factory=list)  # in call order
    events: list[str] = field(default_factory=list)  # ras:memory_failure_event lines
    # fs_dax:dax_pmd_fault_done: (address, result); NOPAGE means a PMD was mapped
    pmd_faults: list[tuple[int, str]] = field(default_factory=list)

    @property
    def path(self) -> str:
        if not self.available:
            return "not traced"
        if any(c in GENERIC_MARKERS for c in self.calls):
            return "generic"
        if any(c in NOTIFY_MARKERS for c in self.calls):
            return "notify_failure"
        return "none"


def parse_trace(text: str) -> tuple[list[str], list[str]]:
    """Function names and memory_failure_event lines from an instance's trace file."""
    calls, events = [], []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.search(r":\s+(\w+)(?:\.\w+)?\s+<-", line)
        if m:
            calls.append(m[1])
        elif "memory_failure_event:" in line:
            events.append(line.split("memory_failure_event:", 1)[1].strip())
    return calls, events


def parse_pmd_faults(text: str) -> list[tuple[int, str]]:
    out = []
    for line in text.splitlines():
        m = re.search(r"dax_pmd_fault_done: .* address (0x[0-9a-f]+) .* (\w+)\s*$", line)
        if m:
            out.append((int(m[1], 16), m[2]))
    return out


def _drain(pipe: Path) -> str:
    """Everything the buffer holds, read off a trace_pipe without waiting (O_NONBLOCK:
    EAGAIN once it is empty)."""
    chunks = []
    try:
        fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        log.debug("%s: %s", pipe, e)
        return ""
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError as e:
        log.debug("%s <- %r: %s", path, value, e)
        return False


class FunctionTrace:
    """A tracefs instance tracing the entry points; set up once, read per injection.

    Switching the function tracer on patches kernel text, which takes seconds
    under TCG, so a session turns it on once and each injection only clears
    and reads the buffer.
    """

    def __init__(self) -> None:
        self.inst = TRACEFS / "instances" / f"mfinject-{os.getpid()}"
        self.functions: list[str] = []
        self.available = False
        self._modules: frozenset[str] | None = None

    def start(self) -> FunctionTrace:
        if not (TRACEFS / "instances").is_dir():
            log.warning("no tracefs at %s: the path taken is not observed", TRACEFS)
            return self
        try:
            self.inst.mkdir()
        except OSError as e:
            log.warning("no tracefs instance (%s): the path taken is not observed", e)
            return self
        self._add_missing()
        _write(self.inst / "events" / "ras" / "memory_failure_event" / "enable", "1")
        _write(self.inst / "events" / "fs_dax" / "dax_pmd_fault_done" / "enable", "1")
        _write(self.inst / "tracing_on", "1")
        return self

    def _add_missing(self) -> None:
        """Functions of modules loaded since (xfs.ko) join the filter now.

        Only when a module they live in appeared (:func:`to_try`), and in one
        open of set_ftrace_filter: the kernel applies the filter, re-patching
        kernel text, when the file is closed (ftrace_regex_release()), which
        costs about half a second under TCG; an open per function cost 6.6 s
        of a 6-test 6.1 run, and a retry at every module load (dm_delay, loop,
        ext4) a second each.
        """
        modules = live_modules(Path("/proc/modules").read_text())
        missing = to_try(FUNCTIONS, self.functions, self._modules, modules)
        self._modules = modules
        self.functions += _append(FilterFile(self.inst / "set_ftrace_filter"), missing)
        if self.functions and not self.available:
            self.available = _write(self.inst / "current_tracer", "function")

    @contextlib.contextmanager
    def capture(self) -> Iterator[Trace]:
        if not self.inst.is_dir():
            yield Trace(available=False)
            return
        self._add_missing()
        trace = Trace(available=self.available, functions=list(self.functions))
        # trace_pipe reads consume: what is read before is dropped, what is read
        # after is this capture's alone. (Clearing the buffer through "trace"
        # resets it, about 35 ms under TCG: 3.5 s of a 51-test run, and each
        # race iteration is a capture.)
        _drain(self.inst / "trace_pipe")
        yield trace
        text = _drain(self.inst / "trace_pipe")
        trace.calls, trace.events = parse_trace(text)
        trace.pmd_faults = parse_pmd_faults(text)

    def stop(self) -> None:
        if not self.inst.is_dir():
            return
        _write(self.inst / "tracing_on", "0")
        _write(self.inst / "current_tracer", "nop")
        _write(self.inst / "events" / "enable", "0")
        with contextlib.suppress(OSError):
            self.inst.rmdir()


@contextlib.contextmanager
def function_trace() -> Iterator[FunctionTrace]:
    ft = FunctionTrace().start()
    try:
        yield ft
    finally:
        ft.stop()


@contextlib.contextmanager
def trace_injection(session: FunctionTrace | None = None) -> Iterator[Trace]:
    """Trace one injection, with the session's instance or a temporary one."""
    if session is not None:
        with session.capture() as trace:
            yield trace
        return
    with function_trace() as ft, ft.capture() as trace:
        yield trace


def live_modules(text: str) -> frozenset[str]:
    """The modules /proc/modules lists as Live: one still Loading has its functions'
    records disabled, and a name written then would be refused for the session."""
    return frozenset(f[0] for f in (line.split() for line in text.splitlines())
                     if len(f) >= 5 and f[4] == "Live")


def to_try(wanted: tuple[str, ...], have: list[str], modules_before: frozenset[str] | None,
           modules_now: frozenset[str]) -> list[str]:
    """The functions to add to the filter: at the start (``modules_before`` None) all
    not there yet; later, those whose module (MODULE_OF) appeared since."""
    new = modules_now - (modules_before or frozenset())
    return [fn for fn in wanted if fn not in have
            and (modules_before is None or MODULE_OF.get(fn) in new)]


class FilterFile:
    """An instance's set_ftrace_filter, and the listing of what it can take."""

    def __init__(self, path: Path, listing: Path | None = None) -> None:
        self.path = path
        self.listing_path = listing or TRACEFS / "available_filter_functions"

    def listing(self) -> str:
        return self.listing_path.read_text()

    def names(self) -> set[str] | None:
        """The functions the filter holds now; None when it cannot be read."""
        try:
            return filter_names(self.path.read_text())
        except OSError as e:
            log.debug("%s: %s", self.path, e)
            return None

    def write(self, tokens: list[str]) -> list[bool]:
        """Each token in its own write(), in one open; which the kernel took.

        Nothing to write opens nothing: each close applies the filter again,
        re-patching the kernel's text (about 0.5 s under TCG)."""
        if not tokens:
            return []
        took = []
        try:
            with self.path.open("ab", buffering=0) as f:
                for token in tokens:
                    try:
                        f.write(token.encode() + b"\n")
                        took.append(True)
                    except OSError:
                        took.append(False)
        except OSError as e:
            log.debug("%s: %s", self.path, e)
            return [False] * len(tokens)
        return took


def _append(ff: FilterFile, functions: list[str]) -> list[str]:
    """Add each function to the filter; returns those the kernel took.

    By index first (:func:`_append_by_index`), by name when that cannot be
    trusted. A function the kernel does not have (dax_lock_folio on 6.1,
    xfs_* before xfs.ko is loaded) is not taken; the others stand.
    """
    if not functions:
        return []
    took = _append_by_index(ff, functions)
    return took if took is not None else _append_by_name(ff, functions)


def _append_by_name(ff: FilterFile, functions: list[str]) -> list[str]:
    """A name the kernel does not have fails its write with EINVAL."""
    return [fn for fn, ok in zip(functions, ff.write(functions)) if ok]


def _append_by_index(ff: FilterFile, functions: list[str]) -> list[str] | None:
    """Each function by its line in available_filter_functions (commit f79b3f338564,
    v5.1: "a number (starting with "1") written will instead select the same
    corresponding at the line position").

    A name makes the kernel look up the symbol of every traceable function
    (42,492 on 6.1) and compare: 0.16 s a name under TCG, 2 s for the
    session's seven. The listing costs one such pass. What the filter then
    holds is read back: a function not asked for (a module came or went
    between the listing and the writes) is taken out again ("!name"; never
    by emptying the filter, which traces every function), and None returned,
    for the names.
    """
    try:
        lines = filter_lines(ff.listing(), functions)
    except OSError as e:
        log.debug("%s: %s", ff.listing_path, e)
        return None
    before = ff.names()
    if before is None:  # what it holds unknown: nothing it holds can be told from a stray
        return None
    wanted = before | set(lines)
    ff.write([str(n) for fn in functions for n in lines.get(fn, ())])
    held = ff.names()
    if held == wanted:
        return [fn for fn in functions if fn in lines]
    log.info("%s by index holds %s, not %s: by name", ff.path, sorted(held or ()),
             sorted(wanted))
    if held is not None:
        ff.write([f"!{fn}" for fn in sorted(held - wanted)])
    return None


def filter_lines(listing: str, functions: list[str]) -> dict[str, list[int]]:
    """Where each function is in available_filter_functions' text: its line numbers,
    from 1 (a static name may be there more than once; a name enables all)."""
    text = "\n" + listing  # every line, the first too, starts after a newline
    out: dict[str, list[int]] = {}
    for fn in dict.fromkeys(functions):
        # a search per name, not a split of 42k lines (twice as fast)
        at = text.find("\n" + fn)
        while at != -1:
            end = at + 1 + len(fn)
            if end == len(text) or text[end] in " \n":
                out.setdefault(fn, []).append(text.count("\n", 0, at) + 1)
            at = text.find("\n" + fn, at + 1)
    return out


def filter_names(text: str) -> set[str]:
    """The functions a set_ftrace_filter read-back names: "name" or "name [module]"
    lines (kernel/trace/ftrace.c print_rec()); not the "#### all functions
    enabled ####" of an empty filter, a disabled record's
    __ftrace_invalid_address___N, nor the "func:mod:m" and "func:cmd" lines
    of t_mod_show() and t_probe_show(), which are not functions."""
    names = set()
    for line in text.splitlines():
        name = line.split(" ", 1)[0]
        if name and not name.startswith(("#", "__ftrace_invalid_address__")) and ":" not in name:
            names.add(name)
    return names
