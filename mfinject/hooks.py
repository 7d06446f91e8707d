"""The plugin's hooks, registered only in mfinject's sessions (see mfinject.plugin).

Markers, the report header, the deliberate-crash gate, the one-time check
of the designated device, one row per collected pmem test (each phase's
report goes to the session's :class:`mfinject.records.Recorder`), progress
lines for the VM runner's display, the hung-kernel exit, and the results
table at the end.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Generator
from typing import TypeVar

import pytest

from mfinject import kernel, pmem
from mfinject.expectations.model import SKIPPED
from mfinject.options import settings, truthy
from mfinject.records import (FAILED_KEY, NEXT_ITEM_KEY, RECORDER_KEY, Recorder, ScenarioResult,
                              chooses_fs, fs_of, is_pmem, properties, recorder, subject_of)
from mfinject.report import table

T = TypeVar("T")


def progress(line: str) -> None:
    """One line for the host's progress display (the VM runner sets MFINJECT_PROGRESS)."""
    path = os.environ.get("MFINJECT_PROGRESS")
    if path:
        with open(path, "a") as f:
            f.write(f"{line} [up {_uptime()}]\n")


def _uptime() -> str:
    """The guest's clock, as the kernel log stamps it: where a boot's time goes."""
    try:
        with open("/proc/uptime") as f:
            return f"{float(f.read().split()[0]):.1f} s"
    except (OSError, ValueError, IndexError):
        return "?"


def nothing_ran(rows: list[ScenarioResult]) -> str | None:
    """The line that says so, when every pmem test that has a row skipped.

    A session of skips is no pass.
    """
    skipped = [r.message for r in rows if r.verdict == SKIPPED]
    if not skipped or len(skipped) < len(rows):
        return None
    reasons = Counter(skipped).most_common()
    shown = "; ".join(f"{n}: {why}" for why, n in reasons[:3])
    more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
    return (f"mfinject: no scenario ran: {len(skipped)} skipped ({shown}{more}); "
            "a run of skips is not a pass")


# All mfinject tests skipped: exit 5, pytest's "no tests ran", rather than 1
# ("tests failed"): nothing failed, nothing was tested. `mfinject vm` reads a
# guest's 5 as a complete run whose rows (all skipped) explain its exit status
# (cli._collect), where 1 would read as a failure no row shows.
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
    config.stash[RECORDER_KEY] = Recorder(settings(config).results_dir, os.uname().release)


def pytest_report_header(config: pytest.Config) -> str:
    s = settings(config)
    line = (f"mfinject: race seed {s.race_seed} ({s.race_iterations} iterations "
            "per race; reproduce with --mfinject-seed)")
    progress(line)  # the host's progress display shows it too
    debug = kernel.debug_state()
    if debug:
        progress(f"mfinject: {debug}")
        line += f"\nmfinject: {debug}"
    return line


@pytest.hookimpl(trylast=True)  # after -k and -m: a shard is part of what they selected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked deliberate_crash run only in the VM and only when asked for.

    They crash the kernel: on a real pmem machine they would take it down.
    The rest run grouped by filesystem kind, so that one filesystem serves a
    kind's tests in a row (mfinject.fspool); with --mfinject-shard, only the
    part asked for.
    """
    allowed = truthy(os.environ.get("MFINJECT_IN_VM")) and \
        truthy(os.environ.get("MFINJECT_CRASH_TEST"))
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("deliberate_crash") and not allowed else keep).append(item)
    ordered = by_fs_kind(keep, list(settings(config).fs_kinds()))
    shard = settings(config).shard
    if shard is not None:
        mine = set(map(id, shard_of(ordered, *shard)))
        drop += [item for item in ordered if id(item) not in mine]
        ordered = [item for item in ordered if id(item) in mine]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = ordered


def shard_of(items: list[T], part: int, parts: int) -> list[T]:
    """Part ``part`` (1-based) of ``parts`` contiguous, near-equal parts of ``items``.

    Contiguous in the run's order (tests on no filesystem, then kind by kind):
    each part makes few filesystems, and the parts of one collection are the
    same wherever they run. Together they are ``items``, each once.
    """
    n = len(items)
    return items[(part - 1) * n // parts: part * n // parts]


def by_fs_kind(items: list[pytest.Item], kinds: list[str]) -> list[pytest.Item]:
    """Tests on no filesystem first, then each kind's in the kinds' order, then the
    machine-check tests by kind (their bad ranges outlive them: see
    request_fresh_boot), within each kind the tests that spoil its filesystem
    last, then the tests that choose their filesystem themselves
    (unbind-mounted: on 7.2 and 7.3 it leaves a task hung and ends the session,
    so nothing may come after it); otherwise as collected."""
    from mfinject.scenarios.catalogue import spoils_filesystem

    def key(item: pytest.Item) -> tuple[int, int, bool]:
        name = fs_of(item)
        if name == "-":
            return (0, 0, False)
        if chooses_fs(item) or name not in kinds:
            return (4, 0, False)
        # within a kind, the tests that spoil the filesystem last (each makes the
        # next test reset the namespace and mkfs again: about 2 s under TCG)
        return (3 if machine_checks(item) else 1, kinds.index(name),
                spoils_filesystem(subject_of(item)))
    return sorted(items, key=key)


def machine_checks(item: pytest.Item) -> bool:
    from mfinject.scenarios.machine_check import SCENARIOS
    return subject_of(item) in {s.name for s in SCENARIOS}


FRESH_BOOT = "fresh-boot.json"  # in the results directory: the guest asks for a new VM
FRESH_BOOT_KEY = pytest.StashKey[str]()


def request_fresh_boot(item: pytest.Item, why: str) -> None:
    """In the VM, end the session after this test so that the next one runs in a new VM
    (the runner boots again for the tests left; mfinject.vm.runner).

    For bad blocks that nothing in the guest can clear: a machine check leaves
    a bad range on QEMU's NVDIMM bus (the emulated bus has no Clear
    Uncorrectable Error), and the kernel keeps the page out of its direct map
    (set_mce_nospec()). A new filesystem on it may put metadata there (mkfs
    and the fs then fail with EIO), and rebinding the bus to forget the range
    made the next write through the direct map oops (6.1, pmem_do_write()).
    """
    results = settings(item.config).results_dir
    if item.stash.get(NEXT_ITEM_KEY, None) is None or results is None \
            or not truthy(os.environ.get("MFINJECT_IN_VM")):
        return
    item.config.stash[FRESH_BOOT_KEY] = why
    item.session.shouldstop = why
    progress(f"asking for a fresh VM: {why}")


def _check_device(session: pytest.Session) -> None:
    """A designated device that is not there stops the session once, not once per test.

    Only as root: the namespace's sysfs resource is root's to read, and a
    session that is not root skips every pmem test anyway, saying so.
    """
    s = settings(session.config)
    if s.device is None or os.geteuid() != 0:
        return
    if not any(is_pmem(item) for item in session.items):
        return
    try:
        pmem.lookup(s.device)
    except pmem.PmemError as e:
        raise pytest.UsageError(f"--mfinject-device: {e}") from None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check the device, then give the recorder the tests that will run (collected.json)."""
    if session.config.option.collectonly:
        return
    _check_device(session)
    recorder(session.config).collect(session.items)
    progress(f"collected {len(session.items)} tests")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, None, None]:
    """Each phase's report of a pmem test goes to the recorder, which folds them into
    one row (see mfinject.records); after teardown the row is final, and JUnit XML
    gets its verdict as properties."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.stash[FAILED_KEY] = True
    if not is_pmem(item):
        return
    rec = recorder(item.config)
    rec.fold(item, report, call)
    if report.when == "teardown":
        props = properties(rec.finish(item))
        item.user_properties.extend(props)
        report.user_properties.extend(props)  # junitxml reads the teardown report's


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    item.stash[NEXT_ITEM_KEY] = nextitem
    progress(f"running {item.nodeid} scenario={subject_of(item)} fs={fs_of(item)}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when != "call" and report.failed):
        outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
        progress(f"{outcome} {report.nodeid} ({report.when}, {report.duration:.1f} s)")


KERNEL_HUNG_KEY = pytest.StashKey[str]()
HUNG_EXIT = 3


def kernel_hung(item: pytest.Item, why: str) -> None:
    """The test left a task stuck in the kernel: end the session after its report.

    Teardown (unmount, namespace reset) would block behind the stuck task, and
    so would every later test. The result is already recorded; the session
    ends at the start of this test's teardown, with the reason on stderr, its
    row and results.json saved, and every test that did not run an error row.
    """
    item.stash[KERNEL_HUNG_KEY] = why


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    why = item.stash.get(KERNEL_HUNG_KEY, None)
    if why is None:
        return
    rec = recorder(item.config)
    rec.finish(item, note=f"teardown: not run, a task is hung in the kernel ({why})")
    rec.end(HUNG_EXIT, why=f"{item.nodeid} left a task hung in the kernel")
    msg = (f"mfinject: {item.nodeid} left a task hung in the kernel ({why}); ending the "
           "session without teardown. The kernel needs a reboot before more tests.")
    progress(msg)
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(HUNG_EXIT)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The all-skipped rule, then a row for every test without one, and results.json.

    A session stopped for a fresh VM leaves its unstarted tests to that VM,
    and tells the runner (FRESH_BOOT) whether any of its own failed.
    """
    rec = recorder(session.config)
    why = session.config.stash.get(FRESH_BOOT_KEY, None)
    results = settings(session.config).results_dir
    if why is not None and results is not None:
        rec.postpone_unstarted()
        (results / FRESH_BOOT).write_text(json.dumps(
            {"reason": why, "failed": session.testsfailed}))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED if session.testsfailed \
            else pytest.ExitCode.OK
    line = nothing_ran(rec.rows())
    if line is not None:
        progress(line)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = NOTHING_RAN
    debug = kernel.debug_state()
    if debug:  # still live at the end: every test was checked for lock order
        progress(f"mfinject: at the end: {debug}")
    rec.end(int(session.exitstatus), why=_why_ended(session))


def _why_ended(session: pytest.Session) -> str:
    """Why tests may have been left without an outcome: -x, --maxfail, the exit status."""
    stop = session.shouldstop or session.shouldfail
    if stop:
        return str(stop)
    status = int(session.exitstatus)
    try:
        return f"pytest exit status {status} ({pytest.ExitCode(status).name})"
    except ValueError:
        return f"pytest exit status {status}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    got = recorder(terminalreporter.config).rows()
    nothing = nothing_ran(got)
    if not got:
        return
    terminalreporter.section("mfinject results")
    if nothing is not None:  # a table of nothing but skips would only repeat this line
        terminalreporter.write_line(nothing)
        return
    terminalreporter.write_line(table.render(got))
    terminalreporter.write_line(table.totals(got))
    details = table.failure_details(got)
    if details:
        terminalreporter.write_line(details)
