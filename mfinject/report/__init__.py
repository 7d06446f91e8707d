"""Reports rendered from result records (never from live objects).

Every format takes a :class:`~mfinject.results.ResultSet` and returns text:
- table: the terminal matrix (scenario x kernel/filesystem), then the
  failure report (scenario, kernel, filesystem, expected, observed) and the
  details of each failure with its dmesg excerpt;
- markdown: the same for CI step summaries;
- junit: JUnit XML with the siginfo observations and kernel as properties;
- kcidb: KernelCI KCIDB (schema v4) test records;
- ktap: KTAP version 1 with a kselftest-style totals line;
- summary: the verdicts only, a row per scenario and a column per kernel.
"""

from __future__ import annotations

from collections.abc import Callable

from mfinject.results import ResultSet


def _formats() -> dict[str, Callable[[ResultSet], str]]:
    from mfinject.report import junit, kcidb, ktap, markdown, table

    return {"table": table.full, "markdown": markdown.render, "junit": junit.render,
            "kcidb": kcidb.render, "ktap": ktap.render, "summary": table.summary}


FORMAT_NAMES = ("table", "markdown", "junit", "kcidb", "ktap", "summary")


def render(fmt: str, rs: ResultSet) -> str:
    return _formats()[fmt](rs)
