"""The ``mfinject`` command: ``mfinject vm`` and ``mfinject report``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mfinject import report
from mfinject.errors import MfinjectError
from mfinject.expectations.model import CRASHED, KNOWN_DEVIATION, PASS
from mfinject.report import diff, table
from mfinject.results import ResultSet, ScenarioResult, load, load_jsonl
from mfinject.vm import kernels, runner

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent


DELIBERATE_CRASH = "test_deliberate_crash"


def _collect(run: runner.GuestRun) -> list[ScenarioResult]:
    """Every record the guest streamed, over all boots, crashed tests included."""
    got = load_jsonl(run.results_dir / "results.jsonl")
    if run.exit_code is not None and not run.timed_out and (got or run.exit_code == 5):
        return got
    why = "watchdog timeout" if run.timed_out else f"guest exit {run.exit_code}"
    tail = runner.console_tail(run.results_dir / "console.log")
    return [*got, ScenarioResult("(vm)", "-", run.kernel.release, CRASHED,
                                 message=f"the run did not complete ({why}).\n{tail}")]


def _is_failure(r: ScenarioResult) -> bool:
    if r.scenario == DELIBERATE_CRASH and r.verdict == CRASHED:
        return False  # --crash-test: crashing is what it is for
    return r.verdict not in (PASS, KNOWN_DEVIATION)


def cmd_vm(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("mfinject vm: not root: run it as root (sudo); the guest runs the suite as root "
              "on the host's filesystem", file=sys.stderr)
        return 2
    specs = args.kernel or [kernels.DEFAULT_SPEC]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = (args.results or Path("results") / stamp).resolve()
    opts = runner.VmOptions(pmem=args.pmem, accel=args.accel, timeout_s=args.timeout,
                            test_timeout_s=args.test_timeout, crash_test=args.crash_test,
                            pytest_args=tuple(args.pytest_args))
    resolved = [kernels.resolve(spec) for spec in specs]
    plan = runner.plan_parallelism(len(resolved))
    print(f"mfinject: {plan.jobs} VM(s) at a time: {plan.reason}", flush=True)

    def one(kernel: kernels.Kernel) -> list[ScenarioResult]:
        sub = run_dir / kernel.spec.replace(":", "-").replace("/", "_").strip("_")
        return _collect(runner.run_kernel(kernel, sub, REPO, opts))

    with ThreadPoolExecutor(max_workers=plan.jobs) as pool:
        all_results = [r for got in pool.map(one, resolved) for r in got]
    rs = ResultSet(tuple(all_results), {"kernels": specs, "created": stamp})
    write_reports(rs, run_dir)
    print(table.full(rs).replace(table.totals(rs.results), f"results: {run_dir}\n"
                                 + table.totals(rs.results)))
    bad = [r for r in rs.results if _is_failure(r)]
    if bad or not rs.results:
        return 1
    return 0


REPORT_FILES = {"markdown": "report.md", "junit": "junit.xml", "kcidb": "kcidb.json",
                "ktap": "results.ktap"}


def write_reports(rs: ResultSet, run_dir: Path) -> None:
    rs.save(run_dir / "results.json")
    for fmt, name in REPORT_FILES.items():
        (run_dir / name).write_text(report.render(fmt, rs))


def _load_many(paths: list[str]) -> ResultSet:
    results: list[ScenarioResult] = []
    meta: dict[str, object] = {"merged": paths}
    for path in paths:
        p = Path(path)
        rs = load(p / "results.json" if p.is_dir() else p)
        results.extend(rs.results)
        meta.setdefault("created", rs.meta.get("created"))
    return ResultSet(tuple(results), meta)


def cmd_report(args: argparse.Namespace) -> int:
    if args.diff:
        old, new = _load_many([args.diff[0]]), _load_many([args.diff[1]])
        print(diff.render(old, new))
        return 0
    if not args.results:
        print("mfinject report: give RESULTS... or --diff OLD NEW", file=sys.stderr)
        return 2
    rs = _load_many(args.results)
    text = report.render(args.format, rs)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mfinject", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)
    vm = sub.add_parser("vm", help="boot kernels with an emulated NVDIMM and run the suite")
    vm.add_argument("--kernel", action="append", metavar="SPEC",
                    help=f"debian:VERSION ({', '.join(kernels.DEBIAN_KERNELS)}) or a path to a "
                         f"vmlinuz; may repeat (default {kernels.DEFAULT_SPEC})")
    vm.add_argument("--pmem", choices=("nfit", "memmap"), default="nfit",
                    help="emulated pmem: ACPI NFIT NVDIMM (default) or legacy memmap= e820")
    vm.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                    help="auto probes KVM once per host and kernel and falls back to TCG")
    vm.add_argument("--timeout", type=float, default=runner.DEFAULT_TIMEOUT_S,
                    help="watchdog per kernel, seconds")
    vm.add_argument("--test-timeout", type=float, default=runner.VmOptions.test_timeout_s,
                    help="watchdog per test, seconds: a test running longer counts as a hang")
    vm.add_argument("--crash-test", action="store_true",
                    help="also run a test that crashes the guest on purpose (sysrq-c), to see "
                         "the runner record it and finish the rest in a fresh VM")
    vm.add_argument("--results", type=Path, help="results directory (default results/STAMP)")
    vm.add_argument("pytest_args", nargs="*", help="extra arguments for pytest in the guest "
                    "(after --)")
    vm.set_defaults(func=cmd_vm)
    rep = sub.add_parser("report", help="render saved results again")
    rep.add_argument("results", nargs="*", help="results.json files or results directories; "
                     "several are merged")
    rep.add_argument("--format", choices=report.FORMAT_NAMES, default="table")
    rep.add_argument("--output", "-o", help="write to this file instead of stdout")
    rep.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"),
                     help="compare two runs: newly failing, newly passing, changed observations")
    rep.set_defaults(func=cmd_report)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    try:
        return int(args.func(args))
    except MfinjectError as e:
        print(f"mfinject: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
