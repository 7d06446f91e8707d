"""What a VM run costs, measured: the table scripts/benchmark prints.

One benchmark run boots the kernel three ways, one after the other on the
same host: bare (virtme-ng's command of the one-scenario run, with
``--exec true``), the one-scenario loop a kernel developer uses, and the
whole catalogue. From the last one's results.jsonl (each row's phase
durations, mfinject.records) it tells where the time inside the tests goes:
setup and teardown against the scenario's body, and the slowest tests.
Nothing here is asserted; the numbers are for reading and comparing.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from mfinject.results import ScenarioResult, read_jsonl
from mfinject.vm import runner

LOOP_SELECTION = ("-k", "madvise-self and not pmd")
SLOWEST = 10
BARE_TIMEOUT_S = 600


@dataclass(frozen=True)
class Run:
    what: str
    wall_s: float
    rows: tuple[ScenarioResult, ...] = ()
    exit: int | None = 0  # the command's exit status (None: killed at its timeout)


def overhead(row: ScenarioResult) -> float:
    """Setup and teardown of one test, in seconds."""
    return row.durations.get("setup", 0.0) + row.durations.get("teardown", 0.0)


def summary(runs: list[Run]) -> str:
    """The table of the issue: bare boot, loop, full catalogue, each against the bare boot."""
    bare = next((r.wall_s for r in runs if r.what == "bare boot" and r.exit == 0), None)
    lines = []
    for r in runs:
        ratio = f"{r.wall_s / bare:.1f}x" if bare else "-"
        verdicts = Counter(row.verdict for row in r.rows)
        lines.append([r.what, f"{r.wall_s:.0f}", ratio, len(r.rows),
                      ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items())) or "-",
                      "timed out" if r.exit is None else r.exit])
    return tabulate(lines, headers=["run", "wall (s)", "vs bare boot", "results", "verdicts",
                                    "exit"])


def inside_tests(rows: tuple[ScenarioResult, ...]) -> str:
    """Where the time inside the tests went, and the slowest tests."""
    timed = [r for r in rows if r.durations]
    if not timed:
        return "no row says how long its phases took (results from before durations were kept)"
    over = [overhead(r) for r in timed]
    body = [r.durations.get("call", 0.0) for r in timed]
    head = tabulate([
        ["tests timed", len(timed)],
        ["in test bodies (s)", f"{sum(body):.0f}"],
        ["in setup and teardown (s)", f"{sum(over):.0f}"],
        ["setup + teardown per test, median (s)", f"{statistics.median(over):.2f}"],
        ["tests whose setup + teardown exceed the body by > 2 s",
         str(sum(o > b + 2 for o, b in zip(over, body)))],
        ["participant start, median / max (ms)", _starts(rows)],
    ], disable_numparse=True)
    slow = sorted(timed, key=lambda r: -(overhead(r) + r.durations.get("call", 0.0)))[:SLOWEST]
    table = tabulate([[r.nodeid.split("::")[-1], r.kernel, f"{r.durations.get('call', 0):.1f}",
                       f"{r.durations.get('setup', 0):.1f}",
                       f"{r.durations.get('teardown', 0):.1f}"] for r in slow],
                     headers=["slowest tests", "kernel", "body (s)", "setup (s)",
                              "teardown (s)"])
    return head + "\n\n" + table


def _starts(rows: tuple[ScenarioResult, ...]) -> str:
    """From each scenario's participant_start_ms fact (fork, seize, first answer)."""
    ms = [float(v) for r in rows for k, text in (r.observation or {}).get("facts", ())
          if k == "participant_start_ms" for v in text.split(", ") if v]
    return f"{statistics.median(ms):.0f} / {max(ms):.0f} ({len(ms)} started)" if ms else "-"


def rows_of(results: Path) -> tuple[ScenarioResult, ...]:
    got: list[ScenarioResult] = []
    for stream in sorted(results.glob("*/results.jsonl")):
        got += read_jsonl(stream)[0]
    return tuple(got)


def _timed(what: str, argv: list[str], results: Path | None, timeout_s: float = 4 * 3600,
           console: Path | None = None) -> Run:
    """Run and time one command; ``console``: where its output goes (vng --verbose
    writes the guest's console to standard error), instead of the terminal."""
    print(f"benchmark: {what}: {shlex.join(argv)}", file=sys.stderr, flush=True)
    start = time.monotonic()
    rc: int | None
    try:
        with contextlib.ExitStack() as stack:
            err = stack.enter_context(console.open("w")) if console else None
            # the runner's environment: vng runs virtme-run from the venv's PATH
            rc = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=err,
                                timeout=timeout_s, env=runner.vng_env()).returncode
    except subprocess.TimeoutExpired:
        print(f"benchmark: {what}: no end within {timeout_s:.0f} s", file=sys.stderr)
        rc = None
    wall = time.monotonic() - start
    if rc != 0:
        print(f"benchmark: {what}: exit {rc}: no ratio rests on it", file=sys.stderr)
    return Run(what, wall, rows_of(results) if results else (), rc)


def bare_command(loop_results: Path) -> list[str]:
    """virtme-ng's command of a run, booting the same kernel with the same NVDIMM, that
    runs nothing (``--exec true``)."""
    found = sorted(loop_results.glob("*/vng-command.txt"))
    if not found:
        raise SystemExit(f"benchmark: no vng-command.txt under {loop_results}: the one-scenario "
                         "run did not boot; see its output above")
    argv = shlex.split(found[0].read_text())
    # the run's QMP socket lived in a directory removed after it: no monitor here
    argv = [re.sub(r" -qmp \S+", "", a) for a in argv]
    return [*argv[:argv.index("--exec")], "--exec", "true"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/benchmark", description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian:6.1")
    ap.add_argument("--out", type=Path, required=True, help="where the runs' results go")
    ap.add_argument("--no-full", action="store_true", help="skip the whole catalogue")
    ap.add_argument("vm_args", nargs="*", help="more arguments for every `mfinject vm`")
    a = ap.parse_args(argv)
    vm = [sys.executable, "-m", "mfinject.cli", "vm", "--kernel", a.kernel, *a.vm_args]
    loop = _timed("one-scenario loop", [*vm, "--results", str(a.out / "loop"), "--",
                                        *LOOP_SELECTION], a.out / "loop")
    runs = [_timed("bare boot", bare_command(a.out / "loop"), None, BARE_TIMEOUT_S,
                   console=a.out / "bare-boot-console.log"), loop]
    if not a.no_full:
        runs.append(_timed("full catalogue", [*vm, "--results", str(a.out / "full")],
                           a.out / "full"))
    print(summary(runs))
    print()
    print(inside_tests(runs[-1].rows))
    print(f"\nresults in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
