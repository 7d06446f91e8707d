"""One row per collected pmem test, folded from its setup, call and teardown.

Each test runs a small pmem-marked suite that touches no pmem through the
plugin (pytester) with --mfinject-results, and reads what it left there:
results.json (rows and meta), results.jsonl (streamed, the last line of a
node id is its row) and collected.json.
"""

import json
from pathlib import Path

import pytest

from mfinject.observers import health

ENV = ("CI", "MFINJECT_REQUIRE_PMEM", "MFINJECT_DEVICE", "MFINJECT_DISPOSABLE", "MFINJECT_RESULTS",
       "MFINJECT_SEED", "MFINJECT_RACE_ITERATIONS", "MFINJECT_IN_VM", "MFINJECT_CRASH_TEST",
       "MFINJECT_PROGRESS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS")
# Loaded the way `-p` does it, so the run works with and without the entry point.
LOAD = ("-p", "no:cacheprovider", "-p", "mfinject.plugin")

SUITE = """
    import pytest

    pytestmark = pytest.mark.pmem

    @pytest.fixture
    def breaks_in_teardown():
        yield
        raise RuntimeError("unmount failed: device busy")

    def test_passes():
        pass

    def test_passes_then_teardown_fails(breaks_in_teardown):
        pass

    def test_fails_then_teardown_fails(breaks_in_teardown):
        assert 1 == 2, "the guard let it through"

    @pytest.mark.skip(reason="not meaningful here: no reflink on ext4")
    def test_skipped_by_marker():
        pass

    def test_skipped_in_call():
        pytest.skip("unbind on 6.1 hangs: not run")

    @pytest.mark.parametrize("n", [1, 2])
    def test_param(n):
        pass

    @pytest.mark.pmem
    def test_deselected():
        pass
"""
OTHER = """
    def test_not_pmem():
        pass
"""


@pytest.fixture
def clean_env(monkeypatch):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)


def _results(where: Path) -> tuple[dict, dict[str, dict]]:
    data = json.loads((where / "results.json").read_text())
    rows: dict[str, dict] = {}
    for r in data["results"]:
        assert r["nodeid"] not in rows, f"two rows for {r['nodeid']}"
        rows[r["nodeid"]] = r
    return data["meta"], rows


def _jsonl(where: Path) -> list[dict]:
    return [json.loads(line) for line in (where / "results.jsonl").read_text().splitlines()]


def _run_suite(pytester, tmp_path):
    pytester.makepyfile(test_suite=SUITE, test_other=OTHER)
    res = pytester.runpytest(*LOAD, f"--mfinject-results={tmp_path}",
                             "--deselect", "test_suite.py::test_deselected")
    return res, *_results(tmp_path)


def test_a_teardown_error_after_a_passing_call_is_an_error_row(pytester, clean_env, tmp_path):
    res, _, rows = _run_suite(pytester, tmp_path)
    res.assert_outcomes(passed=5, failed=1, errors=2, skipped=2, deselected=1)
    row = rows["test_suite.py::test_passes_then_teardown_fails"]
    assert row["verdict"] == "error"
    assert row["message"] == "teardown: RuntimeError: unmount failed: device busy"
    assert rows["test_suite.py::test_passes"]["verdict"] == "pass"


def test_a_teardown_error_after_a_fail_stays_fail_with_both_messages(pytester, clean_env,
                                                                        tmp_path):
    _, _, rows = _run_suite(pytester, tmp_path)
    row = rows["test_suite.py::test_fails_then_teardown_fails"]
    assert row["verdict"] == "fail"
    lines = row["message"].splitlines()
    assert lines[0] == "call: AssertionError: the guard let it through"
    assert lines[-1] == "teardown: RuntimeError: unmount failed: device busy"


def test_skipped_tests_have_a_skipped_row_with_the_reason(pytester, clean_env, tmp_path):
    _, _, rows = _run_suite(pytester, tmp_path)
    marker = rows["test_suite.py::test_skipped_by_marker"]
    assert (marker["verdict"], marker["message"]) == \
        ("skipped", "not meaningful here: no reflink on ext4")
    in_call = rows["test_suite.py::test_skipped_in_call"]
    assert (in_call["verdict"], in_call["message"]) == ("skipped", "unbind on 6.1 hangs: not run")


def test_every_collected_pmem_test_has_exactly_one_row(pytester, clean_env, tmp_path):
    res, meta, rows = _run_suite(pytester, tmp_path)
    collected = json.loads((tmp_path / "collected.json").read_text())
    assert collected == [
        "test_suite.py::test_passes", "test_suite.py::test_passes_then_teardown_fails",
        "test_suite.py::test_fails_then_teardown_fails", "test_suite.py::test_skipped_by_marker",
        "test_suite.py::test_skipped_in_call", "test_suite.py::test_param[1]",
        "test_suite.py::test_param[2]"]  # neither the deselected test nor the non-pmem one
    assert list(rows) == collected  # _results checked there is one row each
    assert meta["collected"] == collected and meta["collected_count"] == 7
    assert meta["exit_status"] == res.ret == pytest.ExitCode.TESTS_FAILED
    assert "ended_early" not in meta


def test_the_last_streamed_line_of_each_test_is_its_final_row(pytester, clean_env, tmp_path):
    _, _, rows = _run_suite(pytester, tmp_path)
    lines = _jsonl(tmp_path)
    last = {line["nodeid"]: line for line in lines}
    assert last == rows
    for nodeid in rows:
        mine = [line for line in lines if line["nodeid"] == nodeid]
        assert [line["final"] for line in mine] == [False] * (len(mine) - 1) + [True]
    # the row was on disk after the call, before the teardown failed
    first = next(line for line in lines
                 if line["nodeid"] == "test_suite.py::test_passes_then_teardown_fails")
    assert (first["verdict"], first["final"]) == ("pass", False)


def test_an_internal_error_leaves_no_test_without_a_row(pytester, clean_env, tmp_path):
    pytester.makeconftest("""
        def pytest_runtest_protocol(item):
            if item.name == "test_param[2]":
                raise RuntimeError("plugin bug")
    """)
    pytester.makepyfile(test_suite=SUITE)
    res = pytester.runpytest(*LOAD, f"--mfinject-results={tmp_path}")
    assert res.ret == pytest.ExitCode.INTERNAL_ERROR
    meta, rows = _results(tmp_path)
    assert list(rows) == meta["collected"] and meta["collected_count"] == 8
    for nodeid in ("test_suite.py::test_param[2]", "test_suite.py::test_deselected"):
        assert rows[nodeid]["verdict"] == "error"
        assert rows[nodeid]["message"] == "no outcome recorded (the session ended early): " \
                                          "pytest exit status 3 (INTERNAL_ERROR)"
    assert rows["test_suite.py::test_param[1]"]["verdict"] == "pass"
    assert meta["exit_status"] == 3 and meta["ended_early"]
    assert {line["nodeid"]: line for line in _jsonl(tmp_path)} == rows


def test_stopping_at_the_first_failure_says_why_the_rest_have_no_outcome(pytester, clean_env,
                                                                          tmp_path):
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest(*LOAD, f"--mfinject-results={tmp_path}", "-x")
    meta, rows = _results(tmp_path)
    assert list(rows) == meta["collected"]
    assert rows["test_suite.py::test_skipped_in_call"]["message"] == \
        "no outcome recorded (the session ended early): stopping after 1 failures"


def test_a_late_kernel_health_finding_is_folded_into_the_row_once(pytester, clean_env,
                                                                  tmp_path, monkeypatch):
    class SplatInTeardown:  # what unmounting after the test made the kernel log
        records: list = []

        def __init__(self, allowed=()):
            pass

        def findings(self):
            return [health.Finding("WARN", "WARNING: CPU: 0 PID: 1 at fs/dax.c:1 dax_x")]

        def close(self):
            pass

    monkeypatch.setattr(health, "HealthWatch", SplatInTeardown)
    pytester.makepyfile(test_guard="""
        import pytest
        pytestmark = pytest.mark.pmem

        @pytest.fixture
        def breaks_in_teardown():
            yield
            raise RuntimeError("unmount failed: device busy")

        def test_guard(breaks_in_teardown):
            pass
    """)
    res = pytester.runpytest(*LOAD, f"--mfinject-results={tmp_path}")
    res.assert_outcomes(passed=1, errors=1)  # one teardown error: two exceptions in a group
    _, rows = _results(tmp_path)
    row = rows["test_guard.py::test_guard"]
    assert row["verdict"] == "fail"  # a splat fails the test; the unmount error adds to it
    assert row["message"] == "kernel health: WARN: WARNING: CPU: 0 PID: 1 at fs/dax.c:1 dax_x\n" \
                             "teardown: RuntimeError: unmount failed: device busy"


HUNG = """
    import pytest
    from mfinject.hooks import kernel_hung

    pytestmark = pytest.mark.pmem

    @pytest.fixture
    def unmount():
        yield
        raise AssertionError("teardown ran behind a hung task")

    def test_first():
        pass

    def test_hangs(request, unmount):
        kernel_hung(request.node, "task umount blocked in xfs_dax_notify_failure")

    def test_after():
        pass
"""


def test_the_hung_kernel_exit_saves_every_row(pytester, clean_env, tmp_path):
    pytester.makepyfile(test_hung=HUNG)
    res = pytester.runpytest_subprocess(*LOAD, f"--mfinject-results={tmp_path}")
    assert res.ret == 3
    meta, rows = _results(tmp_path)
    assert meta["exit_status"] == 3 and meta["collected_count"] == 3
    assert list(rows) == meta["collected"]
    hung = rows["test_hung.py::test_hangs"]
    assert hung["verdict"] == "pass"
    assert hung["message"] == "teardown: not run, a task is hung in the kernel (task umount " \
                              "blocked in xfs_dax_notify_failure)"
    assert rows["test_hung.py::test_after"]["verdict"] == "error"
    assert rows["test_hung.py::test_after"]["message"] == \
        "no outcome recorded (the session ended early): test_hung.py::test_hangs left a task " \
        "hung in the kernel"
    assert {line["nodeid"]: line for line in _jsonl(tmp_path)} == rows


UNSPECIFIED_SUITE = """
    import pytest
    from mfinject.records import ScenarioResult, recorder

    pytestmark = pytest.mark.pmem
    WHY = "B si_addr: observed poisoned page; unspecified: no source says"

    @pytest.fixture
    def breaks_in_teardown():
        yield
        raise RuntimeError("unmount failed: device busy")

    def _record(request):  # what mf_record does for a scenario judged unspecified
        recorder(request.config).observe(request.node, ScenarioResult(
            "corrupt-pfn-shared", "xfs", "6.1.0", "unspecified", message=WHY,
            nodeid=request.node.nodeid))

    def test_unspecified(request):
        _record(request)
        pytest.xfail("unspecified: " + WHY)  # as tests/kernel/test_scenarios.py does

    def test_unspecified_then_teardown_fails(request, breaks_in_teardown):
        _record(request)
        pytest.xfail("unspecified: " + WHY)

    def test_unspecified_then_the_call_fails(request):
        _record(request)
        assert 1 == 2, "the test broke after recording"

    def test_xfail_saying_unspecified_without_a_row():
        pytest.xfail("unspecified: nothing recorded")

    def test_xfail_without_a_row():
        pytest.xfail("PMD mapping")
"""


def _unspecified_suite(pytester, tmp_path):
    pytester.makepyfile(test_unspec=UNSPECIFIED_SUITE)
    res = pytester.runpytest(*LOAD, f"--mfinject-results={tmp_path}")
    return res, _results(tmp_path)[1]


def test_an_xfail_keeps_the_unspecified_row_it_recorded(pytester, clean_env, tmp_path):
    res, rows = _unspecified_suite(pytester, tmp_path)
    res.assert_outcomes(xfailed=4, failed=1, errors=1)
    row = rows["test_unspec.py::test_unspecified"]
    assert row["verdict"] == "unspecified"
    assert row["message"] == "B si_addr: observed poisoned page; unspecified: no source says"
    assert res.ret == pytest.ExitCode.TESTS_FAILED  # for the two below, not for this one


def test_a_teardown_error_after_an_unspecified_row_is_an_error(pytester, clean_env, tmp_path):
    _, rows = _unspecified_suite(pytester, tmp_path)
    row = rows["test_unspec.py::test_unspecified_then_teardown_fails"]
    assert row["verdict"] == "error"
    assert row["message"].splitlines() == [
        "B si_addr: observed poisoned page; unspecified: no source says",
        "teardown: RuntimeError: unmount failed: device busy"]


def test_a_call_failing_after_an_unspecified_row_is_an_error(pytester, clean_env, tmp_path):
    _, rows = _unspecified_suite(pytester, tmp_path)
    row = rows["test_unspec.py::test_unspecified_then_the_call_fails"]
    assert row["verdict"] == "error"  # as after a pass or a known deviation
    assert "call: AssertionError: the test broke after recording" in \
        row["message"].splitlines()


def test_an_xfail_without_a_row_is_unspecified_only_when_it_says_so(pytester, clean_env,
                                                                     tmp_path):
    _, rows = _unspecified_suite(pytester, tmp_path)
    said = rows["test_unspec.py::test_xfail_saying_unspecified_without_a_row"]
    assert (said["verdict"], said["message"]) == \
        ("unspecified", "xfail: unspecified: nothing recorded")
    assert rows["test_unspec.py::test_xfail_without_a_row"]["verdict"] == "known-deviation"


def test_a_late_kernel_health_finding_fails_an_unspecified_row(pytester, clean_env, tmp_path,
                                                               monkeypatch):
    class SplatInTeardown:  # what unmounting after the test made the kernel log
        records: list = []

        def __init__(self, allowed=()):
            pass

        def findings(self):
            return [health.Finding("WARN", "WARNING: CPU: 0 PID: 1 at fs/dax.c:1 dax_x")]

        def close(self):
            pass

    monkeypatch.setattr(health, "HealthWatch", SplatInTeardown)
    pytester.makepyfile(test_unspec=UNSPECIFIED_SUITE)
    res = pytester.runpytest(*LOAD, f"--mfinject-results={tmp_path}", "-k",
                             "test_unspecified and not teardown and not call")
    res.assert_outcomes(xfailed=1, errors=1)  # the finding fails the teardown
    _, rows = _results(tmp_path)
    row = rows["test_unspec.py::test_unspecified"]
    assert row["verdict"] == "fail"
    assert row["message"].splitlines()[-1] == \
        "kernel health: WARN: WARNING: CPU: 0 PID: 1 at fs/dax.c:1 dax_x"


def test_each_row_says_how_long_each_phase_took(pytester, clean_env, tmp_path):
    """scripts/benchmark reads them: setup and teardown against the test's body."""
    _, _, rows = _run_suite(pytester, tmp_path)
    assert set(rows["test_suite.py::test_passes"]["durations"]) == {"setup", "call", "teardown"}
    assert all(v >= 0 for v in rows["test_suite.py::test_passes"]["durations"].values())
    # skipped at setup: no call phase
    assert "call" not in rows["test_suite.py::test_skipped_by_marker"]["durations"]


def test_two_shards_run_what_one_run_does_each_test_once(pytester, clean_env, tmp_path):
    pytester.makepyfile(test_suite=SUITE, test_other=OTHER)
    selected = []
    for shard in ("", "1/2", "2/2"):
        out = tmp_path / (shard.replace("/", "of") or "whole")
        args = [f"--mfinject-shard={shard}"] if shard else []
        pytester.runpytest(*LOAD, f"--mfinject-results={out}", "-k", "not test_param", *args)
        selected.append(json.loads((out / "collected.json").read_text()))
    whole, first, second = selected
    assert first and second and not set(first) & set(second)
    assert first + second == whole
    assert not any("test_param" in n for n in whole)  # the split is of what -k selected


def test_a_shard_that_is_not_k_of_n_is_a_usage_error(pytester, clean_env):
    pytester.makepyfile(test_suite=SUITE)
    res = pytester.runpytest(*LOAD, "--mfinject-shard=3/2")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--mfinject-shard '3/2': give K/N*"])
