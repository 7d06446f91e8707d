"""The plugin's hooks, registered only in mfinject's sessions (see mfinject.plugin).

Markers, the report header, the deliberate-crash gate, one record per pmem
test, progress lines for the VM runner's display, the hung-kernel exit, the
one-time check of the designated device, and the results table at the end.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field

import pytest

from mfinject import pmem
from mfinject import results as results_mod
from mfinject.expectations.model import ERROR, FAIL, PASS
from mfinject.options import settings, truthy
from mfinject.records import RECORDED_KEY, RESULTS_KEY, fs_of, params, record, recorded, save
from mfinject.report import table


def _progress(line: str) -> None:
    """One line for the host's progress display (the VM runner sets MFINJECT_PROGRESS)."""
    path = os.environ.get("MFINJECT_PROGRESS")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@dataclass
class Tally:
    """Which pmem tests ran and which skipped (with why): a session of skips is no pass."""
    ran: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            why = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.skipped[report.nodeid] = why.removeprefix("Skipped: ")
        elif report.when == "call" or report.failed:
            self.ran.add(report.nodeid)

    def nothing_ran(self) -> str | None:
        """The line that says so, when every pmem test that was run skipped."""
        if self.ran or not self.skipped:
            return None
        reasons = Counter(self.skipped.values()).most_common()
        shown = "; ".join(f"{n}: {why}" for why, n in reasons[:3])
        more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
        return (f"mfinject: no scenario ran: {len(self.skipped)} skipped ({shown}{more}); "
                "a run of skips is not a pass")


TALLY_KEY = pytest.StashKey[Tally]()
# All mfinject tests skipped: exit 5, pytest's "no tests ran", rather than 1
# ("tests failed"): nothing failed, nothing was tested. `mfinject vm` already
# reads a guest's 5 with no records as a complete run with nothing in it
# (cli._collect), where 1 with no records would read as a guest that crashed.
NOTHING_RAN = pytest.ExitCode.NO_TESTS_COLLECTED


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
    config.stash[TALLY_KEY] = Tally()


def pytest_report_header(config: pytest.Config) -> str:
    s = settings(config)
    line = (f"mfinject: race seed {s.race_seed} ({s.race_iterations} iterations "
            "per race; reproduce with --mfinject-seed)")
    _progress(line)  # the host's progress display shows it too
    return line


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked deliberate_crash run only in the VM and only when asked for.

    They crash the kernel: on a real pmem machine they would take it down.
    """
    allowed = truthy(os.environ.get("MFINJECT_IN_VM")) and \
        truthy(os.environ.get("MFINJECT_CRASH_TEST"))
    if allowed:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("deliberate_crash") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    """A designated device that is not there stops the session once, not once per test.

    Only as root: the namespace's sysfs resource is root's to read, and a
    session that is not root skips every pmem test anyway, saying so.
    """
    s = settings(session.config)
    if s.device is None or session.config.option.collectonly or os.geteuid() != 0:
        return
    if not any(item.get_closest_marker("pmem") for item in session.items):
        return
    try:
        pmem.lookup(s.device)
    except pmem.PmemError as e:
        raise pytest.UsageError(f"--mfinject-device: {e}") from None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("pmem") is None:
        return
    item.config.stash[TALLY_KEY].add(report)
    # Every pmem test gets a row: a scenario that failed before it produced
    # an observation gets an error record, and a test that is not a scenario
    # (a guard) gets a record of its outcome, so the table never loses a row.
    if item.stash.get(RECORDED_KEY, False):
        return
    if report.skipped or (report.passed and report.when != "call"):
        return
    got = params(item)
    scenario = getattr(got.get("scenario"), "name", None) or item.originalname
    msg = ""
    if report.failed:
        msg = str(report.longrepr.reprcrash.message) if hasattr(report.longrepr, "reprcrash") \
            else str(report.longrepr).splitlines()[-1]
        msg = f"{report.when}: {msg}"
    verdict = PASS if report.passed else (FAIL if report.when == "call" and
                                          "scenario" not in got else ERROR)
    record(item.config, item, results_mod.ScenarioResult(
        scenario=scenario, fs=fs_of(item), kernel=os.uname().release,
        verdict=verdict, message=msg, nodeid=item.nodeid))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> None:
    scenario = getattr(params(item).get("scenario"), "name", item.originalname)
    _progress(f"running {item.nodeid} scenario={scenario} fs={fs_of(item)}")


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
    save(item.config)
    msg = (f"mfinject: {item.nodeid} left a task hung in the kernel ({why}); ending the "
           "session without teardown. The kernel needs a reboot before more tests.")
    _progress(msg)
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(3)


def pytest_sessionfinish(session: pytest.Session) -> None:
    save(session.config)
    line = session.config.stash[TALLY_KEY].nothing_ran()
    if line is not None:
        _progress(line)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = NOTHING_RAN


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    got = recorded(terminalreporter.config)
    nothing = terminalreporter.config.stash[TALLY_KEY].nothing_ran()
    if not got and nothing is None:
        return
    terminalreporter.section("mfinject results")
    if got:
        terminalreporter.write_line(table.render(got))
        terminalreporter.write_line(table.totals(got))
        details = table.failure_details(got)
        if details:
            terminalreporter.write_line(details)
    if nothing is not None:
        terminalreporter.write_line(nothing)
