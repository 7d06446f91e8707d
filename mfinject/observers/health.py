"""Kernel health around a test: splats in the log and new taint flags.

A test fails when, while it ran, the kernel logged a WARN, BUG, oops, lockdep
report, hung task, RCU stall or KASAN report, logged any other message at
KERN_ERR or above that is not on the explicit list of expected
memory-failure messages, or raised a taint flag it did not have before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mfinject import kernel
from mfinject.observers.kmsg import KmsgCapture, KmsgRecord

SPLATS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx)) for name, rx in (
        ("WARN", r"WARNING: CPU: \d+ PID: \d+ at |------------\[ cut here \]------------"),
        ("KASAN", r"BUG: KASAN: "),
        ("BUG", r"\bBUG: |kernel BUG at "),
        ("oops", r"Oops: |general protection fault|Unable to handle kernel"),
        ("lockdep", r"possible circular locking dependency|possible recursive locking"
                    r"|inconsistent lock state|suspicious RCU usage|lock held when returning"),
        ("hung task", r"INFO: task .* blocked for more than \d+ seconds"),
        ("RCU stall", r"rcu: INFO: rcu_\w+ detected stalls|rcu_sched self-detected stall"),
        ("panic", r"Kernel panic - not syncing"),
        ("soft lockup", r"watchdog: BUG: soft lockup"),
    )
)

# Messages at KERN_ERR or above that memory-failure handling is expected to
# print (mm/memory-failure.c pr_err()s, hwpoison-inject, filesystem reports).
EXPECTED_ERRORS: tuple[re.Pattern[str], ...] = tuple(re.compile(rx) for rx in (
    r"^Memory failure: ",
    r"^Injecting memory failure",
    r"^MCE: Killing .* due to hardware memory corruption",
    r"^MCE \w+: Killing .* due to hardware memory corruption",
    r"^Soft offlining pfn ",
))

# Taint bits (Documentation/admin-guide/tainted-kernels.rst) a memory-failure
# test may legitimately raise: none so far.
ALLOWED_TAINT = 0

TAINT_NAMES = "PFSRMBUDAWCIOELKXTN"


@dataclass(frozen=True)
class Finding:
    kind: str
    line: str


def scan(records: list[KmsgRecord], allowed: tuple[re.Pattern[str], ...] = ()) -> list[Finding]:
    """Splats always count; other KERN_ERR-or-worse lines unless expected or ``allowed``."""
    out = []
    for rec in records:
        for name, rx in SPLATS:
            if rx.search(rec.text):
                out.append(Finding(name, str(rec)))
                break
        else:
            if rec.level <= 3 and not any(rx.search(rec.text)
                                          for rx in (*EXPECTED_ERRORS, *allowed)):
                out.append(Finding("unexpected error message", str(rec)))
    return out


def taint_letters(mask: int) -> str:
    return "".join(TAINT_NAMES[i] for i in range(len(TAINT_NAMES)) if mask & (1 << i)) or "-"


class HealthWatch:
    """Started before a test; :meth:`findings` says what went wrong since."""

    def __init__(self, allowed: tuple[str, ...] = ()) -> None:
        self.allowed = tuple(re.compile(rx) for rx in allowed)
        self.taint_before = kernel.taint()
        self._kmsg = KmsgCapture()
        self.records: list[KmsgRecord] = []

    def findings(self) -> list[Finding]:
        self.records += self._kmsg.read()
        found = scan(self.records, self.allowed)
        new = kernel.taint() & ~self.taint_before & ~ALLOWED_TAINT
        if new:
            found.append(Finding("new taint", f"taint flags {taint_letters(new)} ({new:#x}) "
                                              "appeared during the test"))
        return found

    def close(self) -> None:
        self._kmsg.close()


def describe(found: list[Finding], records: list[KmsgRecord], context: int = 12) -> str:
    """The findings, then the log excerpt around the first one."""
    lines = [f"kernel health: {f.kind}: {f.line}" for f in found[:10]]
    texts = [str(r) for r in records]
    if found and found[0].line in texts:
        i = texts.index(found[0].line)
        lines.append("dmesg excerpt:")
        lines += [f"  {t}" for t in texts[max(0, i - 3): i + context]]
    return "\n".join(lines)


_WARN_AT = re.compile(r"WARNING: .*? at (\S+?):\d+ (\w+)")
_TAINT = re.compile(r"taint flags (\S+) ")


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
