"""The session's result rows, and their one owner: the :class:`Recorder`.

Every pmem-marked test the session collects gets exactly one row, whatever
happened in which phase: its scenario's observation (``mf_record``), or the
outcome of a test that produced none. Like pytest's own reporters, the
recorder folds the setup, call and teardown reports of a node id into it:

- a skip (in setup or call) is a ``skipped`` row whose message is the reason;
- a failure in setup is an ``error`` row; one in the call is ``fail`` for a
  test that plays no scenario or race (a guard) and ``error`` for one that
  failed before it had an observation. Once there is an observation its
  verdict stands: a test failing on it says nothing new (a call that fails
  after a pass, known deviation or unspecified row makes the row ``error``);
- an xfail keeps the row the scenario recorded (``known-deviation`` or
  ``unspecified``); an xfail with no row is ``known-deviation``, or
  ``unspecified`` when its reason says so (``unspecified: ...``);
- a failure in teardown appends "teardown: ..." to the message and makes a
  ``pass``, ``known-deviation``, ``unspecified`` or ``skipped`` row an
  ``error``; a ``fail`` stays ``fail``. The observation and checks are kept;
- the kernel-health finding after the observation (``mf_kernel_health``)
  amends the row through :meth:`Recorder.amend`; when it also fails the
  teardown, its text is not appended twice;
- a collected test that has no outcome when the session ends (INTERNALERROR,
  ``-x``, an interrupt, the hung-kernel exit) gets an ``error`` row, "no
  outcome recorded (the session ended early)", and a test whose teardown
  never reported gets its row with "teardown: ..." saying so.

Files in the results directory (``--mfinject-results=DIR``):

``collected.json``
    Written right after collection: a JSON list of the node ids of the
    collected pmem-marked tests (deselected ones left out), in run order::

        ["tests/kernel/test_scenarios.py::test_scenario[xfs-madvise-self]", ...]

    Every pytest session replaces it: a VM run's later boots (which deselect
    the tests already done) list only their own tests. A node id listed there
    that has no row in results.jsonl once the session died never got one.
``results.jsonl``
    One result per line (a ScenarioResult as a JSON object), appended and
    fsync'ed at once. A row is streamed as soon as it is known and whenever it
    changes before its test ends, with ``"final": false`` (the observation,
    the call's outcome, a health amendment), so a guest that dies in teardown
    still leaves it; the folded row follows after teardown with ``"final":
    true``, once per node id and session. The last line of a node id is its
    row (:func:`mfinject.results.read_jsonl` keeps it).
``results.json``
    At the session's end (and before the hung-kernel exit): every row, all
    final, in collection order; ``meta`` holds ``kernel``, ``collected`` (the
    node ids of collected.json), ``collected_count``, ``exit_status`` (pytest's,
    after the all-skipped rule; 3 for the hung-kernel exit) and, when rows
    were made up for tests without an outcome, ``ended_early`` (why).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mfinject import results as results_mod
from mfinject.expectations.model import (CRASHED, ERROR, FAIL, KNOWN_DEVIATION, PASS, SKIPPED,
                                         UNSPECIFIED, combine)

ScenarioResult = results_mod.ScenarioResult

# The filesystem fixture: its parameter, a kind's name (one of fs.kind_names():
# "xfs", "xfs-rmapbt", ..., "custom-ext4"), is the record's fs and the first part
# of the test ids (test_scenario[xfs-madvise-self]).
FS_FIXTURE = "mf_dax_fs"
# The test pytest runs after this one (None: the last), and whether a phase of
# this one failed: the filesystem fixture keeps its filesystem only for a next
# test of the same kind, after a test that did not fail (mfinject.fspool).
NEXT_ITEM_KEY = pytest.StashKey["pytest.Item | None"]()
FAILED_KEY = pytest.StashKey[bool]()
# the session put the designated namespace into fsdax mode itself (fixtures/pmem.py)
RECONFIGURED_KEY = pytest.StashKey[bool]()
# The parameters that name what a test plays: its row's scenario.
SUBJECTS = ("scenario", "race")
COLLECTED_FILE = "collected.json"
ENDED_EARLY = "no outcome recorded (the session ended early)"
# After these, a failure in a later phase is no news to the verdict.
FAILED = (FAIL, ERROR, CRASHED)
# After these, a failure in the call is news: the test failed on something else.
NOT_FAILED = (PASS, KNOWN_DEVIATION, UNSPECIFIED)


def params(item: pytest.Item) -> dict[str, Any]:
    callspec = getattr(item, "callspec", None)
    return dict(callspec.params) if callspec is not None else {}


def fs_of(item: pytest.Item) -> str:
    """The name of the filesystem kind the test runs on, "-" for none."""
    kind = params(item).get(FS_FIXTURE, "-")
    return str(getattr(kind, "name", kind))


def chooses_fs(item: pytest.Item) -> bool:
    """The test parametrizes the filesystem fixture itself (test_unbind_mounted)."""
    return any(FS_FIXTURE in str(m.args[0] if m.args else m.kwargs.get("argnames", ""))
               for m in item.iter_markers("parametrize"))


def subject_of(item: pytest.Item) -> str:
    """The scenario or race the test plays, or the test's own name."""
    got = params(item)
    for name in SUBJECTS:
        if name in got:
            return str(getattr(got[name], "name", got[name]))
    own = str(getattr(item, "originalname", item.name))
    from mfinject.scenarios.catalogue import SEPARATE  # test_<name> plays <name>
    return next((s.name for s in SEPARATE if own == "test_" + s.name.replace("-", "_")), own)


def is_pmem(item: pytest.Item) -> bool:
    return item.get_closest_marker("pmem") is not None


def outcome_row(item: pytest.Item, verdict: str, message: str, kernel: str) -> ScenarioResult:
    """The row of a test that has no observation."""
    return ScenarioResult(scenario=subject_of(item), fs=fs_of(item), kernel=kernel,
                          verdict=verdict, message=message, nodeid=item.nodeid)


def _join(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions of a phase: pytest groups several teardown errors."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pytest.fail.Exception):
        return str(exc)  # pytest.fail(msg): the message says it all
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure_texts(report: pytest.TestReport, call: pytest.CallInfo[None]) -> list[str]:
    """What failed in this phase, one text per exception."""
    if call.excinfo is not None:
        return [_describe(e) for e in _leaves(call.excinfo.value)]
    lines = str(report.longrepr).splitlines()  # no exception: e.g. a strict XPASS
    return [lines[-1] if lines else "failed"]


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    why = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return why.removeprefix("Skipped: ")


def xfail_verdict(reason: str) -> str:
    """The verdict of an xfail that left no row: ``unspecified`` when its reason
    begins so (tests/kernel xfails an unspecified case with "unspecified: ..."),
    otherwise ``known-deviation``."""
    return UNSPECIFIED if str(reason).startswith(f"{UNSPECIFIED}:") else KNOWN_DEVIATION


def properties(row: ScenarioResult) -> list[tuple[str, str]]:
    """The row as JUnit XML properties: verdict, kernel, each SIGBUS."""
    props = [("verdict", row.verdict), ("kernel", row.kernel)]
    for p in (row.observation or {}).get("participants", []):
        for s in p["sigbus"]:
            props.append((f"{p['name']}.sigbus",
                          f"{s['code']} addr={s['addr']:#x} lsb={s['addr_lsb']}"))
    return props


@dataclass
class _Test:
    item: pytest.Item
    row: ScenarioResult | None = None
    folded: tuple[str, ...] = ()  # texts the row already holds (health findings)
    final: bool = False
    durations: dict[str, float] = dataclasses.field(default_factory=dict)  # phase -> s


class Recorder:
    """The one owner of every pmem test's row, from collection to the session's end."""

    def __init__(self, results_dir: Path | None, kernel: str) -> None:
        self.results_dir = results_dir
        self.kernel = kernel
        self.collected: list[str] = []
        self.ended_early = ""
        self._tests: dict[str, _Test] = {}

    def collect(self, items: list[pytest.Item]) -> None:
        """The tests that will run: each gets a row; collected.json lists them."""
        chosen = [item for item in items if is_pmem(item)]
        self.collected = [item.nodeid for item in chosen]
        for item in chosen:
            self._test(item)
        if self.results_dir is not None:
            _write_json(self.results_dir / COLLECTED_FILE, self.collected)

    def row(self, item: pytest.Item) -> ScenarioResult | None:
        test = self._tests.get(item.nodeid)
        return test.row if test is not None else None

    def rows(self) -> list[ScenarioResult]:
        return [t.row for t in self._tests.values() if t.row is not None]

    def observe(self, item: pytest.Item, result: ScenarioResult) -> None:
        """A scenario's observation and verdict (mf_record)."""
        self._set(self._test(item), result)

    def amend(self, item: pytest.Item, verdict: str, text: str) -> None:
        """Fold a later finding (the kernel-health check) into the row."""
        test = self._test(item)
        old = test.row
        new = outcome_row(item, verdict, text, self.kernel) if old is None else \
            dataclasses.replace(old, verdict=combine([old.verdict, verdict]),
                                message=_join(old.message, text))
        test.folded += (text,)
        self._set(test, new)

    def fold(self, item: pytest.Item, report: pytest.TestReport,
             call: pytest.CallInfo[None]) -> None:
        """One phase's report; the teardown's makes the row final."""
        test = self._test(item)
        if test.final:
            return
        test.durations[report.when] = round(report.duration, 3)
        if report.skipped and not hasattr(report, "wasxfail"):
            if test.row is None:
                self._set(test, outcome_row(item, SKIPPED, skip_reason(report), self.kernel))
        elif report.skipped:  # xfail: a scenario's known deviation or unspecified case
            if test.row is None:  # has its row already
                self._set(test, outcome_row(item, xfail_verdict(report.wasxfail),
                                            f"xfail: {report.wasxfail}", self.kernel))
        elif report.failed:
            self._failed(test, report.when, failure_texts(report, call))
        elif report.when == "call" and test.row is None:
            self._set(test, outcome_row(item, PASS, "", self.kernel))
        if report.when == "teardown":
            self.finish(item)

    def _failed(self, test: _Test, when: str, texts: list[str]) -> None:
        texts = [t for t in texts if t not in test.folded]
        if not texts:
            return  # what failed is in the row already
        msg = f"{when}: " + "\n".join(texts)
        old = test.row
        if old is None:
            plays = any(name in params(test.item) for name in SUBJECTS)
            verdict = FAIL if when == "call" and not plays else ERROR
            self._set(test, outcome_row(test.item, verdict, msg, self.kernel))
        elif when == "call" and old.verdict not in NOT_FAILED:
            return  # the test failing on its own verdict: the row says so
        else:
            verdict = old.verdict if old.verdict in FAILED else ERROR
            self._set(test, dataclasses.replace(old, verdict=verdict,
                                                message=_join(old.message, msg)))

    def finish(self, item: pytest.Item, note: str = "") -> ScenarioResult:
        """The test is over: its row, with ``note`` appended, is final and streamed."""
        test = self._test(item)
        if not test.final:
            row = test.row or outcome_row(item, ERROR, ENDED_EARLY, self.kernel)
            test.row = dataclasses.replace(row, message=_join(row.message, note),
                                           durations=dict(test.durations))
            test.final = True
            self._stream(test.row, final=True)
        assert test.row is not None
        return test.row

    def postpone_unstarted(self) -> None:
        """Forget the tests that never began: a fresh VM runs them (no row here)."""
        self._tests = {k: t for k, t in self._tests.items() if t.final or t.row is not None}

    def end(self, exit_status: int, why: str = "") -> None:
        """The session ends: a row for every test still open, then results.json."""
        open_tests = [t for t in self._tests.values() if not t.final]
        if open_tests:
            self.ended_early = why or f"pytest exit status {exit_status}"
        for test in open_tests:
            detail = f"{ENDED_EARLY}: {self.ended_early}"
            old = test.row
            if old is None:
                test.row = outcome_row(test.item, ERROR, detail, self.kernel)
            else:  # it began and never finished
                verdict = old.verdict if old.verdict in FAILED else ERROR
                test.row = dataclasses.replace(old, verdict=verdict, message=_join(
                    old.message, f"teardown: {detail}"))
            self.finish(test.item)
        self.save(exit_status)

    def save(self, exit_status: int) -> None:
        if self.results_dir is None:
            return
        meta: dict[str, Any] = {"kernel": self.kernel, "collected": self.collected,
                                "collected_count": len(self.collected),
                                "exit_status": int(exit_status)}
        if self.ended_early:
            meta["ended_early"] = self.ended_early
        results_mod.ResultSet(tuple(self.rows()), meta).save(self.results_dir / "results.json")

    def _test(self, item: pytest.Item) -> _Test:
        return self._tests.setdefault(item.nodeid, _Test(item))

    def _set(self, test: _Test, row: ScenarioResult) -> None:
        if row != test.row:
            test.row = row
            self._stream(row, final=False)  # on disk at once: a guest crash cannot lose it

    def _stream(self, row: ScenarioResult, final: bool) -> None:
        if self.results_dir is not None:
            results_mod.append_jsonl(self.results_dir / "results.jsonl",
                                     dataclasses.replace(row, final=final))


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


RECORDER_KEY = pytest.StashKey[Recorder]()


def recorder(config: pytest.Config) -> Recorder:
    """The session's recorder (mfinject.hooks puts it in the config's stash)."""
    return config.stash[RECORDER_KEY]
