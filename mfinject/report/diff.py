"""Compare two runs: newly failing, newly passing, changed observations.

Results are matched on scenario, filesystem and kernel series (major.minor),
so a nightly run on 6.1.0-57 compares with the previous one on 6.1.0-56.
Observations are compared on the checked values (signal, si_addr relative to
the mapping, si_addr_lsb, mapping state), not on addresses or timings that
change from run to run.
"""

from __future__ import annotations

from dataclasses import dataclass

from tabulate import tabulate

from mfinject.expectations.model import PASS, UNSPECIFIED
from mfinject.kernel import Version
from mfinject.report.table import short_cell
from mfinject.results import ResultSet, ScenarioResult


def _series(kernel: str) -> str:
    try:
        v = Version.parse(kernel)
    except Exception:  # noqa: BLE001 - "(vm)" rows and odd releases compare as they are
        return kernel
    return f"{v.major}.{v.minor}"


def _key(r: ScenarioResult) -> tuple[str, str, str]:
    return (r.scenario, r.fs, _series(r.kernel))


def _observed(r: ScenarioResult) -> dict[tuple[str, str], str]:
    return {(c["participant"], c["field"]): c["observed"] for c in r.checks}


@dataclass(frozen=True)
class Change:
    kind: str  # newly failing, newly passing, verdict changed, observation changed, new, gone
    scenario: str
    fs: str
    kernel: str
    old: str
    new: str


def _verdict_change(old: str, new: str) -> str:
    """An unspecified case to or from a pass is no news of the kernel (no source says
    what it should do: the catalogue changed), so neither newly failing nor passing."""
    if UNSPECIFIED in (old, new):
        return "verdict changed"
    return ("newly passing" if new == PASS else
            "newly failing" if old == PASS else "verdict changed")


def compare(old: ResultSet, new: ResultSet) -> list[Change]:
    a = {_key(r): r for r in old.results}
    b = {_key(r): r for r in new.results}
    changes = []
    for key in sorted(a.keys() | b.keys()):
        ra, rb = a.get(key), b.get(key)
        scen, fs, series = key
        if ra is None:
            changes.append(Change("new", scen, fs, rb.kernel, "-", short_cell(rb)))
            continue
        if rb is None:
            changes.append(Change("gone", scen, fs, ra.kernel, short_cell(ra), "-"))
            continue
        kernel = ra.kernel if ra.kernel == rb.kernel else f"{ra.kernel} -> {rb.kernel}"
        if ra.verdict != rb.verdict:
            kind = _verdict_change(ra.verdict, rb.verdict)
            changes.append(Change(kind, scen, fs, kernel, short_cell(ra), short_cell(rb)))
            continue
        oa, ob = _observed(ra), _observed(rb)
        diffs = [f"{p}.{f}: {oa.get((p, f), '-')} -> {ob.get((p, f), '-')}"
                 for (p, f) in sorted(oa.keys() | ob.keys()) if oa.get((p, f)) != ob.get((p, f))]
        if diffs:
            changes.append(Change("observation changed", scen, fs, kernel,
                                  "; ".join(d.split(" -> ")[0] for d in diffs),
                                  "; ".join(diffs)))
    return changes


ORDER = ["newly failing", "verdict changed", "observation changed", "new", "gone", "newly passing"]


def render(old: ResultSet, new: ResultSet) -> str:
    changes = sorted(compare(old, new), key=lambda c: (ORDER.index(c.kind), c.scenario, c.fs))
    if not changes:
        return "no changes: same verdicts and the same observed values"
    rows = [[c.kind, c.scenario, c.kernel, c.fs, c.old, c.new] for c in changes]
    counts = {k: sum(c.kind == k for c in changes) for k in ORDER}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    return tabulate(rows, headers=["change", "scenario", "kernel", "filesystem", "before", "after"],
                    tablefmt="grid", maxcolwidths=[None, None, None, None, 40, 50]) + "\n" + summary
