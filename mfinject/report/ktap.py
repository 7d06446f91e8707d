"""KTAP version 1 (Documentation/dev-tools/ktap.rst), with a kselftest totals line.

Result lines are ``<result> <number> <description> # <directive> <reason>``
as ktap.rst gives them and kselftest's ktap_helpers.sh writes them: a known
deviation is ``ok N name # XFAIL reason`` (ok, as ksft_test_result_xfail() in
kselftest.h prints it), an unspecified case ``ok N name # TODO unspecified:
reason``, a skipped row ``ok N name # SKIP reason``, a scenario that could
not be set up or a crashed guest ``not ok N name # ERROR reason`` (ktap.rst:
ERROR goes with "not ok"), a failure or a flaky row a plain ``not ok N
name``. Before each result that is not a pass, its whole message as
diagnostic lines (control characters of a console excerpt written as \\xNN,
colour sequences dropped). The totals line counts each kind as
ksft_print_cnts() does, then the unspecified cases as ``todo``, a counter of
ours after kselftest's six; every row is counted once, so the counts add up
to the plan.

An unspecified case has no expected value to pass against: of the directives
ktap.rst accepts, TODO (a test "not expected to pass at the moment") fits it;
SKIP would say it did not run, XFAIL that it is known to deviate. ktap.rst
discourages TODO in the kernel, and its table of differences lists it as not
recognized by KTAP; a parser that does not know a directive falls back to
the result, "ok" here as for the XFAIL of a known deviation. So the reason
begins "unspecified:" and the totals count it apart.
"""

from __future__ import annotations

import re

from mfinject.expectations.model import (CRASHED, ERROR, FAIL, FLAKY, KNOWN_DEVIATION, PASS,
                                         SKIPPED, UNSPECIFIED)
from mfinject.report import plain_text, table
from mfinject.results import ResultSet, ScenarioResult

# verdict: the result, the directive ("" for none) and the totals counter
LINE = {
    PASS: ("ok", "", "pass"),
    KNOWN_DEVIATION: ("ok", "XFAIL", "xfail"),
    UNSPECIFIED: ("ok", "TODO", "todo"),  # no pass: not counted as one
    SKIPPED: ("ok", "SKIP", "skip"),
    FAIL: ("not ok", "", "fail"),
    FLAKY: ("not ok", "", "fail"),  # a failure of the run unless catalogued
    ERROR: ("not ok", "ERROR", "error"),
    CRASHED: ("not ok", "ERROR", "error"),
}
UNKNOWN = ("not ok", "ERROR", "error")
TOTALS = ("pass", "fail", "xfail", "xpass", "skip", "error", "todo")


def _name(r: ScenarioResult) -> str:
    """The description: no '#' (ktap.rst), no white space."""
    return re.sub(r"[#\s]+", "_", f"{r.scenario}.{r.fs}.{r.kernel}")


def _result_line(i: int, r: ScenarioResult) -> str:
    result, directive, _ = LINE.get(r.verdict, UNKNOWN)
    line = f"{result} {i} {_name(r)}"
    if not directive:
        return line
    reason = (plain_text(r.message).splitlines() or [""])[0].strip() or r.verdict
    if r.verdict not in LINE:
        reason = f"unknown verdict {r.verdict!r}: {reason}"
    elif r.verdict == UNSPECIFIED and not reason.startswith(UNSPECIFIED):
        reason = f"{UNSPECIFIED}: {reason}"  # TODO alone does not say it
    return f"{line} # {directive} {reason}"


def render(rs: ResultSet) -> str:
    results = sorted(rs.results, key=lambda r: (r.kernel, r.fs, r.scenario))
    out = ["KTAP version 1", f"1..{len(results)}"]
    counts = dict.fromkeys(TOTALS, 0)
    for i, r in enumerate(results, 1):
        if r.verdict != PASS:
            text = plain_text(r.message or table.short_cell(r))
            out.extend(f"# {line}" for line in text.splitlines())
        out.append(_result_line(i, r))
        counts[LINE.get(r.verdict, UNKNOWN)[2]] += 1
    # xpass stays 0: a catalogued deviation that did not happen is judged a pass
    out.append("# Totals: " + " ".join(f"{k}:{counts[k]}" for k in TOTALS))
    return "\n".join(out) + "\n"
