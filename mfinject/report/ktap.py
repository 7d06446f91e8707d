"""KTAP version 1 (Documentation/dev-tools/ktap.rst), with a kselftest totals line."""

from __future__ import annotations

from mfinject.expectations.model import CRASHED, ERROR, FAIL, KNOWN_DEVIATION, PASS
from mfinject.report import table
from mfinject.results import ResultSet


def render(rs: ResultSet) -> str:
    results = sorted(rs.results, key=lambda r: (r.kernel, r.fs, r.scenario))
    out = ["KTAP version 1", f"1..{len(results)}"]
    for i, r in enumerate(results, 1):
        name = f"{r.scenario}.{r.fs}.{r.kernel}"
        if r.verdict != PASS:
            for line in (r.message or table.short_cell(r)).splitlines():
                out.append(f"# {line}")
        if r.verdict == PASS:
            out.append(f"ok {i} {name}")
        elif r.verdict == KNOWN_DEVIATION:
            out.append(f"not ok {i} {name} # TODO known deviation")
        else:
            out.append(f"not ok {i} {name}")
    c = table.counts(results)
    out.append(f"# Totals: pass:{c[PASS]} fail:{c[FAIL]} xfail:{c[KNOWN_DEVIATION]} xpass:0 "
               f"skip:0 error:{c[ERROR] + c[CRASHED]}")
    return "\n".join(out) + "\n"
