"""Markdown for CI step summaries ($GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from mfinject.report import table
from mfinject.results import ResultSet


def render(rs: ResultSet) -> str:
    kernels = sorted({r.kernel for r in rs.results})
    out = [f"## mfinject: {', '.join(kernels)}", "", table.matrix(rs.results, "github"), ""]
    fail_table = table.failures(rs.results, "github")
    if fail_table:
        out += ["### Failures and deviations", "",
                fail_table.replace("\n|", "\n|"), ""]
        details = table.failure_details(rs.results)
        out += ["<details><summary>details and dmesg</summary>", "", "```", details, "```",
                "", "</details>", ""]
    out += ["```", table.totals(rs.results), "```"]
    return "\n".join(out) + "\n"
