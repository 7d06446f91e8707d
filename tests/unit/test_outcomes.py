"""Crashes, lost rows and the guest's exit status become rows (mfinject.vm.outcomes, cli)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfinject import cli
from mfinject.expectations.model import CRASHED, ERROR, FAIL, FLAKY, PASS
from mfinject.results import ScenarioResult
from mfinject.vm import outcomes, runner
from mfinject.vm.kernels import Kernel

NODE = "tests/kernel/test_races.py::test_race[xfs-race-truncate]"
R61, R73 = "6.1.0-56-amd64", "7.3.4+deb13-amd64"


def _crash(boot: int, first: str = "Kernel panic - not syncing: sysrq triggered crash",
           nodeid: str = NODE) -> outcomes.CrashAttempt:
    return outcomes.CrashAttempt(nodeid, "race-truncate", "xfs", boot,
                                 "console.log" if boot == 0 else f"console-{boot}.log", first,
                                 "guest crashed (VM exited without a result)")


def _row(verdict: str = PASS, nodeid: str = NODE, release: str = R61) -> ScenarioResult:
    return ScenarioResult("race-truncate", "xfs", release, verdict, nodeid=nodeid)


def test_a_crash_then_a_clean_retry_is_flaky_with_both_consoles_and_fails_the_run():
    [row] = outcomes.fold([_row()], [_crash(0)], R61)
    assert row.verdict == FLAKY
    assert row.crash_consoles == ("console.log",) and "sysrq triggered crash" in row.message
    assert "came out pass" in row.message
    assert cli._is_failure(row)


def test_a_catalogued_crash_is_named_and_does_not_fail_the_run():
    [row] = outcomes.fold([_row(release=R73)], [_crash(0, "Oops: int3 0000 [#1] PREEMPT SMP")],
                          R73)
    assert row.verdict == FLAKY and row.known_crash == "tcg-int3-text-patching"
    assert not cli._is_failure(row)


def test_a_catalogued_crash_outside_its_kernel_range_is_not_known():
    [row] = outcomes.fold([_row()], [_crash(0, "Oops: int3 0000 [#1] PREEMPT SMP")], R61)
    assert row.known_crash == "" and cli._is_failure(row)


def test_a_crash_in_every_attempt_is_crashed_with_every_console():
    [row] = outcomes.fold([], [_crash(0), _crash(1)], R61)
    assert row.verdict == CRASHED and row.nodeid == NODE
    assert row.crash_consoles == ("console.log", "console-1.log")


def test_a_crash_then_a_failure_stays_a_failure_and_keeps_the_crash():
    [row] = outcomes.fold([_row(FAIL)], [_crash(0)], R61)
    assert row.verdict == FAIL and "also crashed" in row.message


def test_a_collected_test_without_a_row_is_an_error(tmp_path: Path):
    (tmp_path / "collected-0.json").write_text(f'{{"nodeids": ["{NODE}", "x::test_scenario[ext4-corrupt-pfn]"]}}')
    collected = outcomes.read_collected(tmp_path)
    [lost] = outcomes.missing_rows([_row()], collected, R61)
    assert lost.verdict == ERROR and (lost.scenario, lost.fs) == ("corrupt-pfn", "ext4")


def _run(tmp_path: Path, code: int | None, **kw: object) -> runner.GuestRun:
    kernel = Kernel("debian:6.1", R61, tmp_path / "vmlinuz", tmp_path)
    return runner.GuestRun(kernel, "tcg", "", tmp_path, code, False, 1.0, **kw)


def test_pytest_failing_with_every_row_passing_is_an_error_row(tmp_path: Path):
    cli_rows = _collected(tmp_path, 1)
    assert [r.verdict for r in cli_rows] == [PASS, ERROR]
    assert "exited 1" in cli_rows[-1].message


def test_a_clean_session_adds_nothing(tmp_path: Path):
    assert [r.verdict for r in _collected(tmp_path, 0)] == [PASS]


def test_an_internal_error_is_an_error_row(tmp_path: Path):
    assert _collected(tmp_path, 3)[-1].verdict == ERROR


def _collected(tmp_path: Path, code: int) -> list[ScenarioResult]:
    from mfinject.results import append_jsonl
    append_jsonl(tmp_path / "results.jsonl", _row())
    return cli._collect(_run(tmp_path, code))


def test_a_row_whose_teardown_never_finished_is_an_error():
    import dataclasses
    [row] = outcomes.fold([dataclasses.replace(_row(), final=False)], [], R61)
    assert row.verdict == ERROR and "teardown did not finish" in row.message


def test_a_row_cut_short_by_the_crash_in_every_attempt_is_crashed():
    import dataclasses
    [row] = outcomes.fold([dataclasses.replace(_row(), final=False)], [_crash(0), _crash(1)], R61)
    assert row.verdict == CRASHED


def test_a_crash_then_a_skip_is_flaky():
    import dataclasses
    [row] = outcomes.fold([dataclasses.replace(_row(), verdict="skipped")], [_crash(0)], R61)
    assert row.verdict == FLAKY and cli._is_failure(row)


def test_a_guest_that_died_between_tests_is_a_row_that_fails_the_run():
    [row] = outcomes.between_tests([_crash(0, nodeid="")], R61)
    assert row.verdict == FLAKY and row.scenario == "(vm)" and cli._is_failure(row)
    assert row.crash_consoles == ("console.log",)


def test_the_tcg_crash_is_no_excuse_under_kvm():
    import dataclasses
    kvm = dataclasses.replace(_crash(0, "Oops: int3 0000 [#1] PREEMPT SMP"), accel="kvm")
    [row] = outcomes.fold([_row(release=R73)], [kvm], R73)
    assert row.known_crash == "" and cli._is_failure(row)


def test_mfinject_report_of_a_kernel_directory_folds_the_saved_crashes(tmp_path: Path):
    from mfinject.results import append_jsonl, load
    append_jsonl(tmp_path / "results.jsonl", _row())
    outcomes.save_crashes(tmp_path, R61, [_crash(0)], [_crash(1, nodeid="")])
    rows = load(tmp_path).results
    assert sorted(r.verdict for r in rows) == [FLAKY, FLAKY]
    assert {r.scenario for r in rows} == {"race-truncate", "(vm)"}


def test_a_crash_then_an_unspecified_case_is_flaky_like_a_known_deviation():
    from mfinject.expectations.model import UNSPECIFIED
    [row] = outcomes.fold([_row(UNSPECIFIED)], [_crash(0)], R61)
    assert row.verdict == FLAKY and "came out unspecified" in row.message
    assert row.crash_consoles == ("console.log",) and cli._is_failure(row)
    [known] = outcomes.fold([_row(UNSPECIFIED, release=R73)],
                            [_crash(0, "Oops: int3 0000 [#1] PREEMPT SMP")], R73)
    assert known.verdict == FLAKY and not cli._is_failure(known)


def test_an_unspecified_row_whose_teardown_never_finished_is_an_error():
    import dataclasses

    from mfinject.expectations.model import UNSPECIFIED
    [row] = outcomes.fold([dataclasses.replace(_row(UNSPECIFIED), final=False)], [], R61)
    assert row.verdict == ERROR and "the row was unspecified before it" in row.message
    assert cli._is_failure(row)


def test_an_unspecified_row_alone_fails_nothing(tmp_path: Path):
    from mfinject.expectations.model import UNSPECIFIED
    from mfinject.results import append_jsonl
    append_jsonl(tmp_path / "results.jsonl", _row(UNSPECIFIED))
    rows = cli._collect(_run(tmp_path, 0))  # an xfail: the guest's pytest exits 0
    assert [r.verdict for r in rows] == [UNSPECIFIED]
    assert not any(cli._is_failure(r) for r in rows)


_OOPS = """[  201.118392] BUG: kernel NULL pointer dereference, address: 0000000000000001
[  201.119001] #PF: supervisor read access in kernel mode
[  201.120311] Oops: 0000 [#1] PREEMPT SMP NOPTI
[  201.121875] RIP: 0010:dax_lock_folio+0x4e/0x140
"""


def test_a_crash_signature_ignores_addresses_and_times_but_not_the_function():
    from mfinject.vm.runner import crash_signature
    first = "[  201.118392] BUG: kernel NULL pointer dereference, address: 0000000000000001"
    sig = crash_signature(first, _OOPS)
    assert sig.endswith("@ dax_lock_folio") and "201" not in sig
    again = crash_signature(first.replace("201.118392", "77.5"), _OOPS.replace("0x4e", "0x51"))
    assert again == sig
    assert crash_signature(first, _OOPS.replace("dax_lock_folio", "memory_failure")) != sig
    assert crash_signature(None, "sysrq: Trigger a crash") == " @ ?"


def test_the_guests_pytest_arguments_come_from_a_file_not_the_kernel_command_line(tmp_path):
    """virtme-ng passes --exec through the 2048-byte kernel command line."""
    import json

    from mfinject.vm.guest import parse
    many = [f"--deselect=tests/kernel/test_scenarios.py::test_scenario[xfs-s{i}]"
            for i in range(100)]
    f = tmp_path / "pytest-args.json"
    f.write_text(json.dumps(["-k", "madvise-self", *many]))
    args = parse(["--results", str(tmp_path), "--tests", "t", "--args-file", str(f), "--", "-x"])
    assert args.pytest_args == ["-k", "madvise-self", *many, "-x"]


_NULL_1 = "[  269.098880] BUG: kernel NULL pointer dereference, address: 0000000000000001"
# the same oops on the KASAN build (debian-debug:6.12): the shadow check faults first
_KASAN_NULL = ("[  354.914878] Oops: general protection fault, probably for non-canonical "
               "address 0xdffffc0000000000: 0000 [#1] PREEMPT SMP KASAN NOPTI")


_DLF = "dax_lock_folio"  # the RIP line of both


@pytest.mark.parametrize(("scenario", "fs", "release", "verdict", "first", "rip"), [
    ("corrupt-pfn-shared", "xfs", "6.12.118+deb13-amd64", "known-deviation", _NULL_1, _DLF),
    ("corrupt-pfn-reflink", "xfs", "6.12.118-mfinject-debug", "known-deviation", _KASAN_NULL, _DLF),
    # the KASAN fault elsewhere, or another general protection fault: a crash
    ("corrupt-pfn", "xfs", "6.12.118-mfinject-debug", "crashed", _KASAN_NULL, _DLF),
    ("corrupt-pfn-reflink", "xfs", "6.12.118-mfinject-debug", "crashed",
     _KASAN_NULL.replace("0xdffffc0000000000", "0xdffffc0000000042"), _DLF),
    # KASAN's fault at address 0..7 is any NULL dereference: in another function, a crash
    ("corrupt-pfn-reflink", "xfs", "6.12.118-mfinject-debug", "crashed", _KASAN_NULL,
     "xfs_dax_notify_failure"),
    ("corrupt-pfn-shared", "xfs", "6.12.118+deb13-amd64", "crashed", _NULL_1, ""),
    ("madvise-shared", "xfs-daxinode", "6.12.118+deb13-amd64", "known-deviation", _NULL_1, _DLF),
    # where it was not seen, or not that scenario, or not the generic path: a crash
    ("corrupt-pfn-shared", "xfs", "7.3.4+deb13-amd64", "crashed", _NULL_1, _DLF),
    ("corrupt-pfn-shared", "xfs-rmapbt", "6.12.118+deb13-amd64", "crashed", _NULL_1, _DLF),
    ("corrupt-pfn", "xfs", "6.12.118+deb13-amd64", "crashed", _NULL_1, _DLF),
])
def test_the_612_oops_on_a_shared_page_is_a_known_deviation_only_where_seen(
        scenario, fs, release, verdict, first, rip):
    from mfinject.vm import outcomes
    node = f"tests/kernel/test_scenarios.py::test_scenario[{fs}-{scenario}]"
    a = outcomes.CrashAttempt(node, scenario, fs, 0, "console.log", first, "guest crashed",
                              "tcg", rip)
    (row,) = outcomes.fold([], [a], release)
    assert row.verdict == verdict
    if verdict == "known-deviation":
        assert row.message.startswith("the kernel crashed (known deviation, kernel)")
        assert "dax_lock_folio" in row.message and not row.fails_run
    else:
        assert row.fails_run
