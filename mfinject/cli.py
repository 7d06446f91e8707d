"""The ``mfinject`` command: ``mfinject vm`` and ``mfinject report``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mfinject import listing, report, selection
from mfinject.errors import MfinjectError
from mfinject.expectations.model import CRASHED, ERROR, SKIPPED
from mfinject.options import parse_shard
from mfinject.report import diff, table
from mfinject.results import ResultSet, ScenarioResult, load, load_jsonl
from mfinject.vm import kernels, outcomes, runner

log = logging.getLogger(__name__)



def suite_dir() -> Path:
    """The in-guest tests: tests/kernel in a checkout, mfinject.suite when installed."""
    spec = importlib.util.find_spec("mfinject.suite")
    if spec is None or spec.origin is None:
        raise MfinjectError("the in-VM suite (mfinject.suite) is not installed: reinstall "
                            "mfinject (pip install 'mfinject[vm]', or scripts/setup)")
    return Path(spec.origin).resolve().parent


DELIBERATE_CRASH = "test_deliberate_crash"


def _collect(run: runner.GuestRun) -> list[ScenarioResult]:
    """One row per test over all boots: crashes folded in, lost rows and errors made rows."""
    release = run.kernel.release
    rows = outcomes.fold(load_jsonl(run.results_dir / "results.jsonl"), list(run.attempts),
                         release) + outcomes.between_tests(list(run.deaths), release)
    if run.interrupted:
        return [*rows, ScenarioResult("(vm)", "-", release, ERROR,
                                      message="interrupted (SIGINT/SIGTERM): the VM was stopped; "
                                      f"{len(rows)} result(s) had come back")]
    rows += outcomes.missing_rows(rows, outcomes.read_collected(run.results_dir), release)
    if run.exit_code is None or run.timed_out:
        why = "watchdog timeout" if run.timed_out else f"guest exit {run.exit_code}"
        tail = runner.console_tail(run.results_dir / "console.log")
        return [*rows, ScenarioResult("(vm)", "-", release, CRASHED,
                                      message=f"the run did not complete ({why}).\n{tail}")]
    trouble = _session_trouble(run, rows)
    return [*rows, ScenarioResult("(session)", "-", release, ERROR, message=trouble)] \
        if trouble else rows


def _session_trouble(run: runner.GuestRun, rows: list[ScenarioResult]) -> str | None:
    """The guest pytest's exit status, when no row accounts for it."""
    code = run.exit_code
    progress = run.results_dir / "progress.log"
    hung = progress.exists() and "left a task hung in the kernel" in progress.read_text()
    if code in (0, 5) or (code == 3 and hung):
        return None
    if code == 1 and any(_is_failure(r) for r in rows):
        return None
    meaning = {1: "pytest reported a failure or error that no row shows",
               2: "pytest was interrupted", 3: "pytest hit an internal error",
               4: "pytest refused its arguments (usage error)"}.get(code, "pytest failed")
    return f"the guest pytest exited {code}: {meaning}; see {run.results_dir}/guest*.log"


def _is_failure(r: ScenarioResult) -> bool:
    if r.scenario == DELIBERATE_CRASH and r.verdict == CRASHED:
        return False  # --crash-test: crashing is what it is for
    return r.fails_run


def cmd_vm(args: argparse.Namespace) -> int:
    # --fs/--scenario become a -k for the guest's pytest; an unknown name exits 2 here
    guest_args, notes = selection.pytest_args(
        args.fs or [], args.scenario or [], args.pytest_args,
        keep=[DELIBERATE_CRASH] if args.crash_test else [])
    for note in notes:
        print(f"mfinject: {note}", file=sys.stderr)
    if os.geteuid() != 0:
        print("mfinject vm: not root: run it as root (sudo); the guest runs the suite as root "
              "on the host's filesystem", file=sys.stderr)
        return 2
    for note in runner.preflight():  # a missing tool raises: exit 2 before anything boots
        print(f"mfinject: {note}", flush=True)
    suite = suite_dir()
    specs = args.kernel or [kernels.DEFAULT_SPEC]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = (args.results or Path("results") / stamp).resolve()
    opts = runner.VmOptions(pmem=args.pmem, accel=args.accel, timeout_s=args.timeout,
                            test_timeout_s=args.test_timeout, crash_test=args.crash_test,
                            pytest_args=guest_args, command=args.pmem_host_command,
                            command_cwd=os.getcwd(), plant_crash=args.plant_crash)
    resolved = [kernels.resolve(spec) for spec in specs]
    units = [(kernel, part) for kernel in resolved
             for part in _parts(args.shard, args.jobs, len(resolved))]
    plan = runner.plan_parallelism(len(units))
    print(f"mfinject: {plan.jobs} VM(s) at a time: {plan.reason}"
          + (f"; {len(units) // len(resolved)} part(s) of each kernel's tests"
             if len(units) > len(resolved) else ""), flush=True)

    def one(unit: tuple[kernels.Kernel, str | None]) -> list[ScenarioResult]:
        kernel, part = unit
        sub = run_dir / kernel.spec.replace(":", "-").replace("/", "_").strip("_")
        if part is not None and args.jobs:  # several parts in this run: one directory each
            sub = sub.with_name(sub.name + ".part" + part.replace("/", "of"))
        got = opts if part is None else dataclasses.replace(
            opts, pytest_args=(*opts.pytest_args, f"--mfinject-shard={part}"), part=part)
        return _collect(runner.run_kernel(kernel, sub, suite, got))

    with stop_on_signals(), ThreadPoolExecutor(max_workers=plan.jobs) as pool:
        all_results = [r for got in pool.map(one, units) for r in got]
    rs = ResultSet(tuple(all_results), {"kernels": specs, "created": stamp})
    write_reports(rs, run_dir)
    print(table.full(rs).replace(table.totals(rs.results), f"results: {run_dir}\n"
                                 + table.totals(rs.results)))
    if runner.STOP.is_set():
        return 130
    bad = [r for r in rs.results if _is_failure(r)]
    if bad or all(r.verdict == SKIPPED for r in rs.results):
        return 1  # a failure, or nothing tested at all
    return 0


def _parts(shard: str | None, jobs: int | None, n_kernels: int) -> list[str | None]:
    """The parts of each kernel's tests to run, as --mfinject-shard values (None: all).

    --shard K/N: that part alone (a CI system fans out the others). --jobs N:
    every part of N, each in its own VM; by default as many as cores and
    memory allow beside the other kernels (1 on a 2-core host).
    """
    if shard is not None:
        if jobs not in (None, 1):
            raise MfinjectError("give --shard or --jobs, not both: --shard runs one part here, "
                                "--jobs every part")
        try:
            part, parts = parse_shard(shard)
        except ValueError as e:
            raise MfinjectError(f"--shard {shard!r}: {e}") from None
        return [f"{part}/{parts}"]
    n = jobs if jobs is not None else max(1, runner.plan_parallelism(10**6).jobs // n_kernels)
    if n < 1:
        raise MfinjectError(f"--jobs {n}: give 1 or more VMs per kernel")
    return [None] if n == 1 else [f"{k}/{n}" for k in range(1, n + 1)]


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT/SIGTERM stop every VM (QEMU, virtiofsd) and let the reports be written."""
    def stop(signum: int, _frame: object) -> None:
        print(f"mfinject: {signal.Signals(signum).name}: stopping the VMs", flush=True)
        runner.STOP.set()
    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


REPORT_FILES = {"markdown": "report.md", "junit": "junit.xml", "kcidb": "kcidb.json",
                "ktap": "results.ktap"}


def write_reports(rs: ResultSet, run_dir: Path) -> None:
    rs.save(run_dir / "results.json")
    for fmt, name in REPORT_FILES.items():
        (run_dir / name).write_text(report.render(fmt, rs))


def _load_many(paths: list[str]) -> ResultSet:
    results: list[ScenarioResult] = []
    meta: dict[str, object] = {"merged": paths}
    partial = []
    for path in paths:
        rs = load(Path(path))  # a results.json, a results.jsonl or a results directory
        results.extend(rs.results)
        meta.setdefault("created", rs.meta.get("created"))
        if rs.meta.get("partial"):
            partial.append(str(rs.meta["partial"]))
    if partial:
        meta["partial"] = "\n".join(partial)
    return ResultSet(tuple(results), meta)


def cmd_list(args: argparse.Namespace) -> int:
    if args.scenario:  # an unknown name exits 2 with the valid ones
        selection.check_names("scenario", args.scenario, [e.name for e in listing.entries()])
    try:
        print(listing.render(args.format, args.expectations, args.scenario), flush=True)
    except BrokenPipeError:  # mfinject list | head: the reader left, say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.diff:
        old, new = _load_many([args.diff[0]]), _load_many([args.diff[1]])
        for note in (old.meta.get("partial"), new.meta.get("partial")):
            if note:
                print(f"mfinject report: {note}", file=sys.stderr)
        print(diff.render(old, new))
        return 0
    if not args.results:
        print("mfinject report: give RESULTS... or --diff OLD NEW", file=sys.stderr)
        return 2
    rs = _load_many(args.results)
    text = report.render(args.format, rs)
    note, noted = str(rs.meta.get("partial") or ""), ("table", "markdown", "summary")
    if note and args.format in noted:  # XML, JSON and KTAP stay parseable: stderr only
        text = text.rstrip("\n") + "\n" + note
    if note and (args.output or args.format not in noted):
        print(f"mfinject report: {note}", file=sys.stderr)
    if args.output:
        out = Path(args.output)
        try:
            out.write_text(text)
        except OSError as e:
            why = f"{e.strerror}: choose another -o" if out.parent.is_dir() else \
                f"folder {out.parent} does not exist: create it (mkdir -p {out.parent}) first"
            print(f"mfinject report: cannot write {out}: {why}", file=sys.stderr)
            return 2
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_kernel(args: argparse.Namespace) -> int:
    for spec in args.spec:
        k = kernels.resolve(spec)
        print(f"{spec}: {k.release} {k.vmlinuz}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mfinject", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--version", action="version",
                    version=f"%(prog)s {importlib.metadata.version('mfinject')}")
    sub = ap.add_subparsers(dest="command", required=True)
    vm = sub.add_parser("vm", help="boot kernels with an emulated NVDIMM and run the suite")
    vm.add_argument("--kernel", action="append", metavar="SPEC",
                    help=f"debian:VERSION ({', '.join(kernels.DEBIAN_KERNELS)}), "
                         "debian-debug:VERSION (built here from Debian's source with lockdep, "
                         "KASAN and DEBUG_VM, once) or a path to a vmlinuz; may repeat "
                         f"(default {kernels.DEFAULT_SPEC})")
    vm.add_argument("--pmem", choices=("nfit", "memmap"), default="nfit",
                    help="emulated pmem: ACPI NFIT NVDIMM (default) or legacy memmap= e820")
    vm.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                    help="auto probes KVM once per host and kernel and falls back to TCG")
    vm.add_argument("--timeout", type=float, default=runner.DEFAULT_TIMEOUT_S,
                    help="watchdog per kernel, seconds")
    vm.add_argument("--test-timeout", type=float, default=runner.VmOptions.test_timeout_s,
                    help="watchdog per test, seconds: a test running longer counts as a hang")
    vm.add_argument("--pmem-host-command", metavar="CMD",
                    help="run CMD in the guest, from this directory, as a pmem owner runs it "
                    "on a real machine (README.md): the namespace in fsdax mode holding ext4, "
                    "/dev/pmem1 in CMD standing for it; pytest arguments go to PYTEST_ADDOPTS")
    vm.add_argument("--plant-crash", metavar="PATTERN",
                    help="crash the guest (sysrq-c) one second into the first test whose node "
                    "id contains PATTERN, in the first boot only: the test runs again in a fresh "
                    "VM and must come out flaky, failing the run")
    vm.add_argument("--crash-test", action="store_true",
                    help="also run a test that crashes the guest on purpose (sysrq-c), to see "
                         "the runner record it and finish the rest in a fresh VM")
    vm.add_argument("--results", type=Path, help="results directory (default results/STAMP)")
    vm.add_argument("--fs", action="append", metavar="FS",
                    help="run the scenarios on this filesystem only; may repeat "
                         "(mfinject list shows which runs where)")
    vm.add_argument("--scenario", action="append", metavar="NAME",
                    help="run this scenario or race only (exact name); may repeat. With --fs "
                         "or --scenario the guard tests are left out")
    vm.add_argument("--jobs", type=int, metavar="N",
                    help="VMs per kernel, each running one of N parts of its tests (the split "
                    "of --shard), results merged; default: as many as cores and memory allow "
                    "beside the other kernels (1 on a 2-core host)")
    vm.add_argument("--shard", metavar="K/N",
                    help="run part K of N of each kernel's selected tests: the same split "
                    "wherever it runs, for CI systems that fan out (merge the parts with "
                    "mfinject report DIR...)")
    vm.add_argument("pytest_args", nargs="*", help="extra arguments for pytest in the guest "
                    "(after --)")
    vm.set_defaults(func=cmd_vm)
    rep = sub.add_parser("report", help="render saved results again")
    rep.add_argument("results", nargs="*", help="results.json files or results directories; "
                     "several are merged. A run still going or interrupted is read from its "
                     "results.jsonl streams and marked partial")
    rep.add_argument("--format", choices=report.FORMAT_NAMES, default="table")
    rep.add_argument("--output", "-o", help="write to this file instead of stdout")
    rep.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"),
                     help="compare two runs: newly failing, newly passing, changed observations")
    rep.set_defaults(func=cmd_report)
    ker = sub.add_parser("kernel", help="fetch (or build, for debian-debug:) kernels into the "
                         "cache without running anything, and print where they are")
    ker.add_argument("spec", nargs="+", metavar="SPEC", help="as --kernel of mfinject vm")
    ker.set_defaults(func=cmd_kernel)
    lst = sub.add_parser("list", help="the scenarios (participants, filesystems, injector, "
                         "kernels), or with --expectations every expectation and deviation")
    lst.add_argument("--expectations", action="store_true",
                     help="every expectation and known deviation, with source and kernel range")
    lst.add_argument("--format", choices=listing.FORMATS, default="table")
    lst.add_argument("--scenario", action="append", metavar="NAME",
                     help="only this scenario or race; may repeat")
    lst.set_defaults(func=cmd_list)
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
