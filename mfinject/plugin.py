"""The pytest plugin (entry point ``pytest11``): options, markers, result records.

Options live in one group; each has an ini twin and an environment fallback:

=========================  ========================  =======================
option                     ini                       environment
=========================  ========================  =======================
--mfinject-device=DEV      mfinject_device           MFINJECT_DEVICE
--mfinject-disposable      mfinject_disposable       MFINJECT_DISPOSABLE=1
--mfinject-results=DIR     mfinject_results          MFINJECT_RESULTS
--mfinject-require-pmem    mfinject_require_pmem     MFINJECT_REQUIRE_PMEM=1
=========================  ========================  =======================

``--mfinject-require-pmem`` (also on when CI=true) turns every "no pmem" skip
into an error, so a broken VM can never go green with everything skipped.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mfinject import results as results_mod
from mfinject.expectations.model import ERROR, FAIL, PASS
from mfinject.report import table

RESULTS_KEY = pytest.StashKey[list]()
RECORDED_KEY = pytest.StashKey[bool]()
RESULT_KEY = pytest.StashKey[results_mod.ScenarioResult]()


@dataclass(frozen=True)
class Settings:
    device: str | None
    disposable: bool
    results_dir: Path | None
    require_pmem: bool


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mfinject", "memory-failure injection on fsdax")
    group.addoption("--mfinject-device", dest="mfinject_device", default=None,
                    help="the pmem namespace or /dev/pmemN the suite may reconfigure, "
                         "format and poison (env MFINJECT_DEVICE)")
    group.addoption("--mfinject-disposable", dest="mfinject_disposable", action="store_true",
                    default=None, help="the designated device holds nothing of value: allow "
                    "reconfiguring its namespace and overwriting an existing filesystem")
    group.addoption("--mfinject-results", dest="mfinject_results", default=None,
                    help="directory for results.json (env MFINJECT_RESULTS)")
    group.addoption("--mfinject-require-pmem", dest="mfinject_require_pmem", action="store_true",
                    default=None, help="fail instead of skipping when no pmem is usable "
                    "(env MFINJECT_REQUIRE_PMEM=1; on when CI=true)")
    group.addoption("--mfinject-seed", dest="mfinject_seed", default=None,
                    help="seed of the race scenarios: a number, or 'random' for a fresh one "
                    f"(env MFINJECT_SEED; default {DEFAULT_SEED}); every race prints it")
    group.addoption("--mfinject-race-iterations", dest="mfinject_race_iterations", type=int,
                    default=None, help="iterations of each race scenario (env "
                    f"MFINJECT_RACE_ITERATIONS; default {DEFAULT_RACE_ITERATIONS})")
    parser.addini("mfinject_device", "designated pmem namespace or device", default="")
    parser.addini("mfinject_disposable", "the designated device is disposable", type="bool",
                  default=False)
    parser.addini("mfinject_results", "directory for results.json", default="")
    parser.addini("mfinject_require_pmem", "fail instead of skipping without pmem", type="bool",
                  default=False)


def settings(config: pytest.Config) -> Settings:
    opt = config.option
    device = opt.mfinject_device or config.getini("mfinject_device") or \
        os.environ.get("MFINJECT_DEVICE") or None
    disposable = bool(opt.mfinject_disposable or config.getini("mfinject_disposable")
                      or _truthy(os.environ.get("MFINJECT_DISPOSABLE")))
    results = opt.mfinject_results or config.getini("mfinject_results") or \
        os.environ.get("MFINJECT_RESULTS") or None
    require = bool(opt.mfinject_require_pmem or config.getini("mfinject_require_pmem")
                   or _truthy(os.environ.get("MFINJECT_REQUIRE_PMEM"))
                   or _truthy(os.environ.get("CI")))
    return Settings(device, disposable, Path(results) if results else None, require)


DEFAULT_SEED = 20221125
DEFAULT_RACE_ITERATIONS = 32
SEED_KEY = pytest.StashKey[int]()


def race_seed(config: pytest.Config) -> int:
    """The session's race seed, chosen once: fixed by default, or fresh with 'random'."""
    if SEED_KEY not in config.stash:
        raw = str(config.option.mfinject_seed or os.environ.get("MFINJECT_SEED")
                  or DEFAULT_SEED).strip()
        if raw == "random":
            seed = secrets.randbits(32)
        else:
            try:
                seed = int(raw, 0)
            except ValueError:
                raise pytest.UsageError(f"--mfinject-seed {raw!r}: give a number or 'random'")
        config.stash[SEED_KEY] = seed
    return config.stash[SEED_KEY]


def race_iterations(config: pytest.Config) -> int:
    raw = config.option.mfinject_race_iterations or os.environ.get("MFINJECT_RACE_ITERATIONS")
    return int(raw) if raw else DEFAULT_RACE_ITERATIONS


def pytest_report_header(config: pytest.Config) -> str:
    line = (f"mfinject: race seed {race_seed(config)} ({race_iterations(config)} iterations "
            "per race; reproduce with --mfinject-seed)")
    _progress(line)  # the host's progress display shows it too
    return line


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kernel_log_allows(*regex): kernel error messages this test provokes on "
        "purpose; the kernel-health check accepts them")
    config.addinivalue_line(
        "markers", "deliberate_crash: crashes the guest kernel on purpose to prove that the VM "
        "runner survives it (only with `mfinject vm --crash-test`)")
    config.addinivalue_line(
        "markers", "pmem: injects poison into the designated fsdax namespace (needs root and "
        "--mfinject-device, or run it in the VM with `mfinject vm`)")
    config.stash[RESULTS_KEY] = []
    for mod in ("mfinject.fixtures.pmem", "mfinject.fixtures.fs", "mfinject.fixtures.poison"):
        config.pluginmanager.import_plugin(mod)


def _stream(config: pytest.Config, result: results_mod.ScenarioResult) -> None:
    """Append the record to results.jsonl at once: a guest crash cannot lose it."""
    s = settings(config)
    if s.results_dir is not None:
        results_mod.append_jsonl(s.results_dir / "results.jsonl", result)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked deliberate_crash run only in the VM and only when asked for.

    They crash the kernel: on a real pmem machine they would take it down.
    """
    allowed = _truthy(os.environ.get("MFINJECT_IN_VM")) and \
        _truthy(os.environ.get("MFINJECT_CRASH_TEST"))
    if allowed:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("deliberate_crash") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def record(config: pytest.Config, item: pytest.Item | None,
           result: results_mod.ScenarioResult) -> None:
    config.stash[RESULTS_KEY].append(result)
    _stream(config, result)
    if item is not None:
        item.stash[RECORDED_KEY] = True
        item.stash[RESULT_KEY] = result
        item.user_properties.append(("verdict", result.verdict))
        item.user_properties.append(("kernel", result.kernel))
        if result.observation:
            for p in result.observation["participants"]:
                for s in p["sigbus"]:
                    item.user_properties.append(
                        (f"{p['name']}.sigbus", f"{s['code']} addr={s['addr']:#x} "
                                                f"lsb={s['addr_lsb']}"))


def replace_record(config: pytest.Config, item: pytest.Item,
                   result: results_mod.ScenarioResult) -> None:
    got = config.stash[RESULTS_KEY]
    for i, r in enumerate(got):
        if r.nodeid == item.nodeid:
            got[i] = result
    item.stash[RESULT_KEY] = result
    _stream(config, result)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    # Every pmem test gets a row: a scenario that failed before it produced
    # an observation gets an error record, and a test that is not a scenario
    # (a guard) gets a record of its outcome, so the table never loses a row.
    if item.get_closest_marker("pmem") is None or item.stash.get(RECORDED_KEY, False):
        return
    if report.skipped or (report.passed and report.when != "call"):
        return
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    scenario = getattr(params.get("scenario"), "name", None) or item.originalname
    msg = ""
    if report.failed:
        msg = str(report.longrepr.reprcrash.message) if hasattr(report.longrepr, "reprcrash") \
            else str(report.longrepr).splitlines()[-1]
        msg = f"{report.when}: {msg}"
    verdict = PASS if report.passed else (FAIL if report.when == "call" and
                                          "scenario" not in params else ERROR)
    record(item.config, item, results_mod.ScenarioResult(
        scenario=scenario, fs=str(params.get("dax_fs", "-")), kernel=os.uname().release,
        verdict=verdict, message=msg, nodeid=item.nodeid))


def _progress(line: str) -> None:
    """One line for the host's progress display (the VM runner sets MFINJECT_PROGRESS)."""
    path = os.environ.get("MFINJECT_PROGRESS")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> None:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    scenario = getattr(params.get("scenario"), "name", item.originalname)
    _progress(f"running {item.nodeid} scenario={scenario} fs={params.get('dax_fs', '-')}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when != "call" and report.failed):
        outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
        _progress(f"{outcome} {report.nodeid} ({report.when}, {report.duration:.1f} s)")


KERNEL_HUNG_KEY = pytest.StashKey[str]()


def kernel_hung(item: pytest.Item, why: str) -> None:
    """The test left a task stuck in the kernel: end the session after its report.

    Teardown (unmount, namespace reset) would block behind the stuck task, and
    so would every later test. The result is already recorded; the session
    ends at the start of this test's teardown, with the reason on stderr.
    """
    item.stash[KERNEL_HUNG_KEY] = why


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    why = item.stash.get(KERNEL_HUNG_KEY, None)
    if why is None:
        return
    s = settings(item.config)
    got = item.config.stash.get(RESULTS_KEY, [])
    if s.results_dir is not None:
        results_mod.ResultSet(tuple(got), {"kernel": os.uname().release}).save(
            s.results_dir / "results.json")
    msg = (f"mfinject: {item.nodeid} left a task hung in the kernel ({why}); ending the "
           "session without teardown. The kernel needs a reboot before more tests.")
    _progress(msg)
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(3)


def pytest_sessionfinish(session: pytest.Session) -> None:
    s = settings(session.config)
    got = session.config.stash.get(RESULTS_KEY, [])
    if s.results_dir is not None:
        results_mod.ResultSet(tuple(got), {"kernel": os.uname().release}).save(
            s.results_dir / "results.json")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    got = terminalreporter.config.stash.get(RESULTS_KEY, [])
    if not got:
        return
    terminalreporter.section("mfinject results")
    terminalreporter.write_line(table.render(got))
    terminalreporter.write_line(table.totals(got))
    details = table.failure_details(got)
    if details:
        terminalreporter.write_line(details)
