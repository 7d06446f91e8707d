"""The terminal table: scenario, kernel, filesystem, expected, observed, verdict."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from mfinject.expectations.model import FLAKY, PASS, SKIPPED, UNSPECIFIED
from mfinject.observers.health import signature
from mfinject.results import ResultSet, ScenarioResult

_ORDER = {"crashed": 0, "flaky": 1, "error": 2, "fail": 3, "known-deviation": 4,
          "unspecified": 5, "pass": 6, "skipped": 7}


def _observed_participant(p: dict[str, Any]) -> str:
    bits = []
    if p["sigbus"]:
        s = p["sigbus"][0]
        own = " (own)" if s["addr"] == p["vaddr"] else f" (mapped at {p['vaddr']:#x})" \
            if p["vaddr"] else ""
        bits.append(f"{s['code']} addr={s['addr']:#x}{own} lsb={s['addr_lsb']} "
                    f"+{s['after_ms']:.0f}ms")
    else:
        bits.append("no SIGBUS")
    if p["mapped_after"] is not None:
        bits.append("mapped" if p["mapped_after"] else "unmapped")
    if p["injection"] is not None and p["injection"] != "caller killed":
        bits.append(f"inject={p['injection']}")
    if p.get("access"):
        bits.append(f"then access: {p['access']}")
    if p.get("read"):
        bits.append(f"pread: {p['read']}")
    return f"{p['name']}: " + " ".join(bits)


_ERRNO_SHORT = {"Input/output error": "EIO", "Bad address": "EFAULT",
                "Operation not supported": "EOPNOTSUPP", "Device or resource busy": "EBUSY",
                "Memory page has hardware error": "EHWPOISON"}


def _short(text: str) -> str:
    for long, short in _ERRNO_SHORT.items():
        text = text.replace(long, short)
    return text


def facts_line(obs: dict[str, Any]) -> str | None:
    """Run-wide facts worth a line: a race's seed and outcomes, the node counters."""
    facts = dict(obs.get("facts") or [])
    if "seed" in facts:
        return _short(f"seed {facts['seed']}, {facts.get('iterations')} iterations: inject "
                      f"{facts.get('injection_outcomes')}; racer {facts.get('racer_outcomes')}; "
                      f"violations: {facts.get('violations')}")
    stats = facts.get("memory_failure_stats")
    if stats and stats != "absent":
        return f"node memory_failure: {stats}"
    return None


def path_text(obs: dict[str, Any], untraced: str = "not traced") -> str:
    """The path the injection took, and where its verdict rests on it, what the space
    map said the poisoned block was (the block_owner fact)."""
    owner = dict(obs.get("facts") or []).get("block_owner")
    path = obs.get("path_observed", untraced)
    return f"{path} (block: {owner})" if owner else path


def observed_cell(r: ScenarioResult) -> str:
    if r.observation is None:
        return r.message.splitlines()[0] if r.message else "-"
    lines = [_observed_participant(p) for p in r.observation["participants"]]
    lines.append(f"path: {path_text(r.observation)}, HardwareCorrupted "
                 f"+{r.observation.get('hardware_corrupted_delta_kb')} kB")
    extra = facts_line(r.observation)
    if extra:
        lines.append(extra)
    return "\n".join(lines)


# How each checked field reads in the expected column; unlisted fields stand as they are.
EXPECTED_FORMAT = {
    "si_addr_lsb": "lsb={}",
    "si_addr": "addr={}",
    "injection": "inject={}",
    "access": "then access: {}",
    "path": "path: {}",
    "unpoison": "unpoison: {}",
    "fault": "fault: {}",
    "range": "range {}",
    "hardware_corrupted_kb": "HardwareCorrupted {} kB",
    "recovery_action": "dmesg: recovery action {}",
}


def expected_cell(r: ScenarioResult) -> str:
    per: dict[str, list[str]] = {}
    for c in r.checks:
        val = c["expected"]
        if c["field"] == "si_addr" and val == "poisoned page":
            val = "the page"
        elif c["field"] == "signal" and val == "none":
            val = "no SIGBUS"
        per.setdefault(c["participant"], []).append(
            EXPECTED_FORMAT.get(c["field"], "{}").format(val))
    return "\n".join(f"{who}: {' '.join(vals)}" for who, vals in per.items()) or "-"


def label(verdict: str) -> str:
    """How a cell names a verdict that is not a pass: capitals, except unspecified,
    which is no failure, said plainly."""
    return verdict if verdict == UNSPECIFIED else verdict.upper()


def not_passed(r: ScenarioResult) -> list[dict[str, Any]]:
    """The checks that make the row's verdict: an unspecified field makes only an
    unspecified row (in a failing or deviating one, it explains nothing)."""
    return [c for c in r.checks if c["verdict"] != PASS
            and (c["verdict"] != UNSPECIFIED or r.verdict == UNSPECIFIED)]


def verdict_cell(r: ScenarioResult) -> str:
    if r.verdict == PASS:
        return "pass"
    what = ", ".join(f"{c['participant']}.{c['field']}" for c in not_passed(r))
    return label(r.verdict) + (f" ({what})" if what else "")


def sort_key(r: ScenarioResult) -> tuple[int, str, str, str]:
    return (_ORDER.get(r.verdict, 0), r.scenario, r.kernel, r.fs)


def _signature(p: dict[str, Any]) -> str:
    """``A:AR@own/12 unmapped``: signal, address, lsb, mapping; one participant."""
    if p["sigbus"]:
        s = p["sigbus"][0]
        code = s["code"].removeprefix("BUS_MCEERR_")
        where = "own" if s["addr"] == p["vaddr"] else f"{s['addr']:#x}"
        sig = f"{code}@{where}/{s['addr_lsb']}"
    else:
        sig = "none"
    state = "" if p["mapped_after"] is None else (" mapped" if p["mapped_after"] else " unmapped")
    if p.get("range_pages") and p["range_pages"] > 1 and p.get("range_present") is not None:
        state += f" ({p['range_present']}/{p['range_pages']} pages left)"
    later = f", then {p['access']}" if p.get("access") else ""
    if p.get("read"):
        later += f", pread: {p['read']}"
    if p.get("unpoison"):
        later += f", unpoison: {p['unpoison']}"
    if p.get("signal_thread") and p["signal_thread"] != "main thread":
        sig += f" to {p['signal_thread']}"
    if p.get("injection2"):
        later += f", again: {p['injection2']}"
    if p.get("pin"):
        later += f", pin: {p['pin'].removeprefix('O_DIRECT read in flight at the injection: ')}"
    if p.get("io"):
        later += ", io " + " ".join(f"{k}={v}" for k, v in p["io"])
    inject = f" write: {p['injection']}" if p.get("injection") not in (None, "ok",
                                                                        "caller killed") else ""
    return _short(f"{p['name']}:{sig}{state}{inject}{later}")


def short_cell(r: ScenarioResult) -> str:
    """One matrix cell: the verdict, then each participant's observation in brief.

    Not a pass: the first mismatch, as ``participant.field: observed (expected)``.
    """
    if r.observation is None:
        if r.verdict == PASS:
            return "pass"
        first = r.message.splitlines()[0] if r.message else ""
        return f"{label(r.verdict)} {brief(first, r)}"
    extra = facts_line(r.observation)
    is_race = "seed" in dict(r.observation.get("facts") or [])
    sigs = "\n".join([*(() if is_race else (_signature(p) for p in r.observation["participants"])),
                      f"via {path_text(r.observation, '?')}",
                      *([extra] if extra else [])])
    if r.verdict == PASS:
        return f"pass {sigs}"
    bad = not_passed(r)
    if not bad:
        return f"{label(r.verdict)} {sigs}"
    c = bad[0]
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    expected = "" if c["verdict"] == UNSPECIFIED else f" (expected {c['expected']})"
    observed = c["observed"]
    if (c["participant"], c["field"]) == ("kernel", "health"):
        # the splat's signature, as known deviations match it, not its first raw
        # line ("------------[ cut here ]------------"); the lines are in the details
        observed = signature(observed.split("; "))
    return (f"{label(r.verdict)} {c['participant']}.{c['field']}: {observed}"
            f"{expected}{more}")


def brief(text: str, r: ScenarioResult, limit: int = 60) -> str:
    """A reason for a matrix cell: without the scenario (and filesystem) its row and
    column name, cut after a whole word (the report lists every reason in full)."""
    text = re.sub(rf"(?<![\w-]){re.escape(r.scenario)}(?![\w-])( on {re.escape(r.fs)}\b)?",
                  "", text)
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    # one character more: a word that ends at the limit is whole
    return text[:limit + 1].rsplit(" ", 1)[0].rstrip(" ,;:(") + " ..."


def column_key(r: ScenarioResult) -> str:
    return f"{r.kernel}\n{r.fs}"


def _grid(rows: dict[str, dict[str, ScenarioResult]], columns: list[str], tablefmt: str) -> str:
    def worst(name: str) -> int:
        return min(_ORDER.get(r.verdict, 0) for r in rows[name].values())

    body = [[name, *[short_cell(rows[name][c]) if c in rows[name] else "-" for c in columns]]
            for name in sorted(rows, key=lambda n: (worst(n), n))]
    headers = ["scenario", *columns]
    if tablefmt != "grid":
        headers = [h.replace("\n", " ") for h in headers]
    return tabulate(body, headers=headers, tablefmt=tablefmt,
                    maxcolwidths=[None, *[24] * len(columns)] if tablefmt == "grid" else None)


def matrix(results: Iterable[ScenarioResult], tablefmt: str = "grid") -> str:
    """One row per scenario, one column per kernel and filesystem; worst rows first.

    Tests that are not per filesystem (guards, a crashed VM) follow in a
    second table with one column per kernel.
    """
    results = list(results)
    per_fs = [r for r in results if r.fs != "-"]
    other = [r for r in results if r.fs == "-"]
    parts = []
    if per_fs:
        rows: dict[str, dict[str, ScenarioResult]] = {}
        for r in per_fs:
            rows.setdefault(r.scenario, {})[column_key(r)] = r
        parts.append(_grid(rows, sorted({column_key(r) for r in per_fs}), tablefmt))
        if any(len(cols) < len({column_key(r) for r in per_fs}) for cols in rows.values()):
            parts.append("-: not run on that kernel or filesystem, where the scenario does not "
                         "apply (reflink needs xfs-rmapbt; unbind-mounted needs v6.8 and "
                         "xfs-rmapbt); the reason is in the test's skip message")
    if other:
        rows = {}
        for r in other:
            rows.setdefault(r.scenario, {})[r.kernel] = r
        parts.append(_grid(rows, sorted({r.kernel for r in other}), tablefmt))
    return "\n\n".join(parts)


def failures(results: Iterable[ScenarioResult], tablefmt: str = "grid") -> str:
    """The failure report: scenario, kernel, filesystem, expected, observed."""
    bad = [r for r in results if r.verdict not in (PASS, SKIPPED)]
    if not bad:
        return ""
    return render(bad, tablefmt)


def skipped(results: Iterable[ScenarioResult]) -> str:
    """What did not apply, once per reason: the tests it concerns, then why."""
    why: dict[str, list[str]] = {}
    for r in sorted(results, key=sort_key):
        if r.verdict == SKIPPED:
            why.setdefault(r.message.splitlines()[0] if r.message else "(no reason given)",
                           []).append(f"{r.scenario} on {r.fs}, {r.kernel}")
    return "\n".join(f"- {', '.join(who)}: {reason}" for reason, who in why.items())


def render(results: Iterable[ScenarioResult], tablefmt: str = "grid") -> str:
    rows = [
        [r.scenario, r.kernel, r.fs, expected_cell(r), observed_cell(r), verdict_cell(r)]
        for r in sorted(results, key=sort_key)
    ]
    return tabulate(rows, headers=["scenario", "kernel", "filesystem", "expected", "observed",
                                   "verdict"], tablefmt=tablefmt,
                    maxcolwidths=[None, None, None, 34, 60, 30] if tablefmt == "grid" else None)


def counts(results: Iterable[ScenarioResult]) -> dict[str, int]:
    out = {k: 0 for k in _ORDER}
    for r in results:
        out[r.verdict] = out.get(r.verdict, 0) + 1
    # a flaky row whose crash is catalogued does not fail the run (mfinject.vm.outcomes)
    out["flaky-failing"] = sum(r.verdict == FLAKY and r.fails_run for r in results)
    return out


def totals(results: Iterable[ScenarioResult]) -> str:
    """Two lines: the breakdown, then a closing line that CI systems can read.

    Known deviations count neither as passed nor as failed; errors, crashes
    and flaky rows (unless their crash is catalogued) count as failed;
    skipped rows (the scenario does not apply there) are counted apart, and
    so are unspecified ones (no source says what the kernel should do).
    """
    c = counts(results)
    detail = ", ".join(f"{c[k]} {k}" for k in ("pass", "known-deviation", "unspecified", "fail",
                                                "error", "crashed", "flaky", "skipped"))
    failed = c["fail"] + c["error"] + c["crashed"] + c["flaky-failing"]
    return (f"verdicts: {detail}\nscenarios: {c['pass']} passed, {failed} failed, "
            f"{c['skipped']} skipped, {c['unspecified']} unspecified")


def failure_details(results: Iterable[ScenarioResult]) -> str:
    """For each non-pass: the mismatches with their sources, and the dmesg excerpt."""
    out = []
    for r in sorted(results, key=sort_key):
        if r.verdict in (PASS, SKIPPED):
            continue
        out.append(f"== {r.scenario} on {r.fs}, kernel {r.kernel}: {r.verdict}")
        if r.message:
            out.extend(f"   {line}" for line in r.message.splitlines())
        if r.observation:
            for line in r.observation.get("dmesg", [])[-15:]:
                out.append(f"   dmesg: {line}")
    return "\n".join(out)


def full(rs: ResultSet) -> str:
    """What a run prints: matrix, failure report, details, closing lines."""
    parts = [matrix(rs.results)]
    fail_table = failures(rs.results)
    if fail_table:
        parts += ["", "Failures and deviations:", fail_table]
    details = failure_details(rs.results)
    if details:
        parts += ["", details]
    skips = skipped(rs.results)
    if skips:
        parts += ["", "Skipped (the scenario does not apply there):", skips]
    parts.append(totals(rs.results))
    return "\n".join(parts)


_SHORT_VERDICT = {"pass": "pass", "known-deviation": "dev", "unspecified": "unspec",
                  "fail": "FAIL", "error": "ERROR", "crashed": "CRASH", "flaky": "FLAKY",
                  "skipped": "skip"}


def summary(rs: ResultSet, tablefmt: str = "github") -> str:
    """The verdicts only: a row per scenario, a column per kernel, one letter-group per
    filesystem ("pass dev -" for ext4, xfs, xfs-rmapbt), then per-kernel counts."""
    results = [r for r in rs.results if r.fs != "-"]
    kernels = sorted({r.kernel for r in results})
    fss = sorted({r.fs for r in results})
    cell: dict[tuple[str, str, str], str] = {(r.scenario, r.kernel, r.fs): r.verdict
                                              for r in results}
    rows = []
    for name in sorted({r.scenario for r in results}):
        rows.append([name, *[" ".join(_SHORT_VERDICT.get(cell.get((name, k, f), ""), "-")
                                      for f in fss) for k in kernels]])
    head = ["scenario", *[f"{k} ({' / '.join(fss)})" for k in kernels]]
    lines = [tabulate(rows, headers=head, tablefmt=tablefmt), ""]
    for k in kernels:
        mine = [r for r in rs.results if r.kernel == k]
        c = counts(mine)
        lines.append(f"{k}: {len({r.scenario for r in mine if r.fs != '-'})} scenarios, "
                     f"{len(mine)} results: {c['pass']} pass, {c['known-deviation']} known "
                     f"deviation, {c['unspecified']} unspecified, {c['fail']} fail, "
                     f"{c['error']} error, {c['crashed']} crashed, {c['flaky']} flaky, "
                     f"{c['skipped']} skipped")
    lines.append("dev: known deviation (see the failure report); unspec: unspecified, no "
                 "source says what the kernel should do (recorded, not a pass); skip: does not "
                 "apply there (the reason is in the report); -: no result at all")
    return "\n".join(lines)
