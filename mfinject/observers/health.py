"""Kernel health around a test: splats in the log, new taint flags, lost records.

A test fails when, while it ran, the kernel logged a WARN, BUG, oops, lockdep
report, hung task, RCU stall or KASAN report, logged a memory-failure message
(any level, see :mod:`mfinject.observers.mflog`) its scenario does not declare,
logged any other message at KERN_ERR or above that nothing allows, or raised a
taint flag it did not have before. Kernel log records the capture could not
read are a finding as well: the check cannot vouch for them.

Every finding has an identity (the record's sequence number, the taint flag,
the first lost record), so that what a row's verdict already holds is told
from what the kernel logged after it, whatever order the findings come in.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from mfinject import kernel
from mfinject.observers.kmsg import KmsgCapture, KmsgRecord, Lost
from mfinject.observers.mflog import POISONING, KernelMessage, is_memory_failure

SPLATS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx)) for name, rx in (
        # first match names the splat: the debug kernel's reports (mfinject.vm.debugkernel)
        # before the generic "BUG:" and "WARNING:" lines they also print
        ("lockdep", r"possible circular locking dependency|possible recursive locking"
                    r"|inconsistent lock state|suspicious RCU usage|lock held when returning"
                    r"|Invalid wait context|possible irq lock inversion|bad unlock balance"
                    r"|held lock freed|DEBUG_LOCKS_WARN_ON"),
        ("KASAN", r"BUG: KASAN: "),
        ("sleep in atomic", r"BUG: sleeping function called from invalid context"
                            r"|BUG: scheduling while atomic"),
        ("DEBUG_VM", r"page dumped because: |VM_BUG_ON|VM_WARN_ON|BUG: Bad page (?:state|map)"),
        ("DEBUG_LIST", r"list_(?:add|del) corruption|list_add double add"),
        ("UBSAN", r"UBSAN: "),
        ("WARN", r"WARNING: CPU: \d+ PID: \d+ at |------------\[ cut here \]------------"),
        ("BUG", r"\bBUG: |kernel BUG at "),
        ("oops", r"Oops: |general protection fault|Unable to handle kernel"),
        ("hung task", r"INFO: task .* blocked for more than \d+ seconds"),
        ("RCU stall", r"rcu: INFO: rcu_\w+ detected stalls|rcu_sched self-detected stall"),
        ("panic", r"Kernel panic - not syncing"),
        ("soft lockup", r"watchdog: BUG: soft lockup"),
    )
)

# Lines outside mm/memory-failure.c that announce an injection (pr_info in
# mm/hwpoison-inject.c and mm/madvise.c): accepted should a kernel log them higher.
EXPECTED_ERRORS: tuple[re.Pattern[str], ...] = tuple(re.compile(rx) for rx in (
    r"^Injecting memory failure",
    r"^Soft offlining pfn ",
))

# Taint bits (Documentation/admin-guide/tainted-kernels.rst) any memory-failure
# test may legitimately raise: none. A scenario names its own (Scenario.taint):
# a machine check sets M, TAINT_MACHINE_CHECK, in the #MC handler.
ALLOWED_TAINT = 0
TAINT_MACHINE_CHECK = 1 << 4

TAINT_NAMES = "PFSRMBUDAWCIOELKXTN"

UNEXPECTED_ERROR = "unexpected error message"
UNEXPECTED_MF = "unexpected memory-failure message"
NEW_TAINT = "new taint"
LOG_LOST = "kernel log lost"


@dataclass(frozen=True)
class Finding:
    kind: str
    line: str
    # what it is, for telling a finding already reported from a new one:
    # ("kmsg", seq), ("taint", bit) or ("lost", first seq); None: the text itself
    key: tuple[str, int] | None = None

    @property
    def identity(self) -> object:
        return self.key if self.key is not None else (self.kind, self.line)

    def text(self) -> str:
        return f"{self.kind}: {self.line}"


@dataclass(frozen=True)
class LogRules:
    """What a test may log: the memory-failure messages its scenario declares,
    and the regexes of its kernel_log_allows markers (any line but a splat)."""

    memory_failure: tuple[KernelMessage, ...] = POISONING
    allowed: tuple[str, ...] = ()
    taint: int = 0  # taint flags its scenario raises by design (Scenario.taint)


def finding_of(rec: KmsgRecord, rules: LogRules = LogRules()) -> Finding | None:
    """The finding one kernel log record makes, if any."""
    key = ("kmsg", rec.seq)
    for name, rx in SPLATS:
        if rx.search(rec.text):
            return Finding(name, str(rec), key)  # never allowed
    if any(re.search(rx, rec.text) for rx in rules.allowed):
        return None
    if any(m.matches(rec.text) for m in rules.memory_failure):
        return None  # declared by the scenario, whatever its prefix and level
    if is_memory_failure(rec.text):
        return Finding(UNEXPECTED_MF, str(rec), key)
    if rec.level <= 3 and not any(rx.search(rec.text) for rx in EXPECTED_ERRORS):
        return Finding(UNEXPECTED_ERROR, str(rec), key)
    return None


def scan(records: list[KmsgRecord], rules: LogRules = LogRules()) -> list[Finding]:
    return [f for rec in records if (f := finding_of(rec, rules)) is not None]


def lost_findings(lost: list[Lost]) -> list[Finding]:
    return [Finding(LOG_LOST, f"{gap.describe()}: the health check cannot vouch for them",
                    ("lost", gap.first)) for gap in lost]


def taint_letter(bit: int) -> str:
    return TAINT_NAMES[bit] if bit < len(TAINT_NAMES) else f"bit{bit}"


def taint_letters(mask: int) -> str:
    return "".join(taint_letter(i) for i in range(mask.bit_length()) if mask & (1 << i)) or "-"


def taint_findings(new: int) -> list[Finding]:
    """One finding per taint flag: a flag stays set, and is reported once."""
    return [Finding(NEW_TAINT, f"taint flag {taint_letter(i)} ({1 << i:#x}) appeared during "
                    "the test", ("taint", i)) for i in range(new.bit_length()) if new & (1 << i)]


def unreported(found: list[Finding], reported: Collection[object]) -> list[Finding]:
    """The findings whose identity is not among those ``reported`` already."""
    return [f for f in found if f.identity not in reported]


class HealthWatch:
    """Started before a test; :meth:`findings` says what went wrong since."""

    def __init__(self, rules: LogRules = LogRules()) -> None:
        self.rules = rules
        self.taint_before = kernel.taint()
        self._kmsg = KmsgCapture()
        self.records: list[KmsgRecord] = []

    def findings(self) -> list[Finding]:
        """Everything found since the watch began (not only since the last call)."""
        self.records += self._kmsg.read()
        new = kernel.taint() & ~self.taint_before & ~ALLOWED_TAINT & ~self.rules.taint
        return [*scan(self.records, self.rules), *lost_findings(self._kmsg.lost),
                *taint_findings(new)]

    def close(self) -> None:
        self._kmsg.close()


def describe(found: list[Finding], records: list[KmsgRecord], context: int = 12) -> str:
    """The findings, then the log excerpt around the first one from the log."""
    lines = [f"kernel health: {f.text()}" for f in found[:10]]
    if len(found) > 10:
        lines.append(f"kernel health: and {len(found) - 10} more")
    i = _first_in_log(found, records)
    if i is not None:
        lines.append("dmesg excerpt:")
        lines += [f"  {r}" for r in records[max(0, i - 3): i + context]]
    return "\n".join(lines)


def _first_in_log(found: list[Finding], records: list[KmsgRecord]) -> int | None:
    seqs = [r.seq for r in records]
    texts = [str(r) for r in records]
    for f in found:
        if f.key is not None and f.key[0] == "kmsg" and f.key[1] in seqs:
            return seqs.index(f.key[1])
        if f.key is None and f.line in texts:
            return texts.index(f.line)
    return None


_WARN_AT = re.compile(r"WARNING: .*? at (\S+?):\d+ (\w+)")
_TAINT = re.compile(r"taint flags? (\S+) ")


def signature(findings: list[str]) -> str:
    """A stable summary of findings ("kind: line" strings), without timestamps
    or line numbers: "WARN fs/dax.c dax_insert_entry; new taint W"."""
    keys: list[str] = []
    for f in findings:
        if "cut here" in f:
            continue
        m = _WARN_AT.search(f)
        if m:
            key = f"WARN {m[1]} {m[2]}"
        elif f.startswith("new taint"):
            t = _TAINT.search(f)
            key = f"new taint {t[1] if t else '?'}"
        else:
            key = re.sub(r"\[\s*\d+\.\d+\]\s*", "", f)
        if key not in keys:
            keys.append(key)
    return "; ".join(keys)
