"""Reports rendered from result records (never from live objects).

Every format takes a :class:`~mfinject.results.ResultSet` and returns text:
- table: the terminal matrix (scenario x kernel/filesystem), then the
  failure report (scenario, kernel, filesystem, expected, observed) and the
  details of each failure with its dmesg excerpt;
- markdown: the same for CI step summaries;
- junit: JUnit XML with the siginfo observations and kernel as properties;
- kcidb: KernelCI KCIDB (schema v5.3) test records;
- ktap: KTAP version 1 with a kselftest-style totals line;
- summary: the verdicts only, a row per scenario and a column per kernel.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mfinject.results import ResultSet

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # CSI sequences: colours, cursor moves
# not a Char of XML 1.0 (https://www.w3.org/TR/xml/#charsets), nor text a UTF-8
# file can hold (lone surrogates)
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def plain_text(text: str) -> str:
    """Console and dmesg excerpts as text any format can carry: colour sequences
    dropped, other control characters written as \\xNN (\\uNNNN above 0xff)."""
    return _NOT_TEXT.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100
                         else f"\\u{ord(m[0]):04x}", _ANSI.sub("", text))


def _formats() -> dict[str, Callable[[ResultSet], str]]:
    from mfinject.report import junit, kcidb, ktap, markdown, table

    return {"table": table.full, "markdown": markdown.render, "junit": junit.render,
            "kcidb": kcidb.render, "ktap": ktap.render, "summary": table.summary}


FORMAT_NAMES = ("table", "markdown", "junit", "kcidb", "ktap", "summary")


def render(fmt: str, rs: ResultSet) -> str:
    return _formats()[fmt](rs)
