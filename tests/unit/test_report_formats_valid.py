"""Every verdict in every machine-read format: KCIDB validated with kcidb-io, KTAP
directives and totals as kselftest writes them, JUnit XML that always parses."""

import dataclasses
import json
import xml.etree.ElementTree as ET

import kcidb_io  # the dev extra: a missing validator is a failure, never a skip
import pytest

from mfinject import report
from mfinject.expectations.evaluate import judge
from mfinject.expectations.model import (CRASHED, ERROR, FAIL, FLAKY, KNOWN_DEVIATION, PASS,
                                         SKIPPED, UNSPECIFIED)
from mfinject.report import kcidb, ktap
from mfinject.results import ResultSet, ScenarioResult, from_observation

from .samples import ar, observation, participant

KERNEL = "6.1.0-56-amd64"
ALL_VERDICTS = {PASS, FAIL, KNOWN_DEVIATION, UNSPECIFIED, ERROR, CRASHED, SKIPPED, FLAKY}
# what a guest console hands back: a colour sequence, NUL, BEL, a lone surrogate
CONSOLE = ("the run did not complete (watchdog timeout).\n"
           "\x1b[0;31m[   12.345] Kernel panic - not syncing: Fatal machine check\x1b[0m\x00\x07\n"
           "BUG: soft lockup \udcff\x0c")


def _judged(scenario, fs, *, good=True):
    a = participant("A", sigbus=[ar()]) if good else participant("A", mapped_after=True)
    obs = observation(scenario, [a], fs=fs, kernel=KERNEL)
    return from_observation(obs, judge(obs), nodeid=f"tests/kernel/test_x.py::{scenario}[{fs}]")


UNSPECIFIED_MESSAGE = ("A window: observed only the poisoned page unmapped; unspecified: "
                       "no documentation sentence or commit says which pages stay mapped")


def unspecified_row() -> ScenarioResult:
    """A judged row whose one unspecified field makes it unspecified."""
    row = _judged("madvise-self", "xfs-rmapbt")
    checks = tuple(dict(c, expected=UNSPECIFIED, verdict=UNSPECIFIED, message=UNSPECIFIED_MESSAGE)
                   if c["field"] == "window" else c for c in row.checks)
    assert any(c["verdict"] == UNSPECIFIED for c in checks)
    return dataclasses.replace(row, verdict=UNSPECIFIED, checks=checks,
                               message=UNSPECIFIED_MESSAGE)


def every_verdict() -> ResultSet:
    passed = _judged("madvise-self", "ext4")
    failed = _judged("madvise-self", "xfs", good=False)
    assert (passed.verdict, failed.verdict) == (PASS, FAIL)
    rows = (
        passed, failed,
        dataclasses.replace(_judged("madvise-self", "xfs"), scenario="madvise-early",
                            verdict=KNOWN_DEVIATION,
                            message="A.si_addr_lsb: 21: known deviation (kernel): PMD mapping"),
        ScenarioResult("reflink-shared", "ext4", KERNEL, SKIPPED,
                       message="reflink needs xfs-rmapbt; ext4 has no reflink"),
        ScenarioResult("unbind-mounted", "xfs", KERNEL, ERROR,
                       message="could not set up: mkfs.xfs exited 1\x1b[1m"),
        dataclasses.replace(_judged("madvise-self", "ext4"), scenario="madvise-early",
                            verdict=FLAKY,
                            message="guest crashed in boot 1 (console kept), passed in boot 2"),
        ScenarioResult("truncate-mapped", "xfs", KERNEL, CRASHED,
                       message="guest crashed: Kernel panic, while this scenario ran; console:\n"
                       + CONSOLE, nodeid="tests/kernel/test_x.py::truncate-mapped[xfs]"),
        ScenarioResult("(vm)", "-", KERNEL, CRASHED, message=CONSOLE),
        unspecified_row(),
    )
    assert {r.verdict for r in rows} == ALL_VERDICTS
    return ResultSet(rows, {"created": "20261125-093007"})


# --- KCIDB ------------------------------------------------------------------

def _kcidb(rs=None):
    return json.loads(report.render("kcidb", rs or every_verdict()))


def test_kcidb_every_verdict_validates_against_the_kcidb_io_schema():
    data = _kcidb()
    kcidb_io.schema.LATEST.validate(data)  # against the version the data claims
    assert data["version"] == {"major": 5, "minor": 3}
    kcidb_io.schema.V5_3.validate_exactly(data)
    # and as a KCIDB newer than 5.3 would take it
    kcidb_io.schema.LATEST.validate(kcidb_io.schema.LATEST.upgrade(data))


def test_kcidb_statuses_are_the_schemas_and_each_verdict_has_one():
    assert set(kcidb.STATUS) == ALL_VERDICTS
    assert set(kcidb.STATUS.values()) <= set(kcidb_io.schema.V5_3.json["$defs"]["status"]["enum"])
    got = {t["misc"]["verdict"]: t["status"] for t in _kcidb()["tests"]}
    assert got == {PASS: "PASS", FAIL: "FAIL", KNOWN_DEVIATION: "DONE", UNSPECIFIED: "DONE",
                   SKIPPED: "SKIP", ERROR: "ERROR", CRASHED: "ERROR", FLAKY: "ERROR"}


def test_kcidb_unspecified_is_done_not_pass_and_its_misc_says_unspecified():
    (t,) = [t for t in _kcidb()["tests"] if t["misc"]["verdict"] == UNSPECIFIED]
    assert t["status"] == "DONE" and t["path"] == "mfinject.madvise_self.xfs_rmapbt"
    assert t["log_excerpt"] == UNSPECIFIED_MESSAGE
    assert [c["field"] for c in t["misc"]["checks"] if c["verdict"] == UNSPECIFIED] == ["window"]


def test_kcidb_crashed_vm_row_has_a_valid_path_and_its_console_as_log_excerpt():
    (vm,) = [t for t in _kcidb()["tests"] if t["misc"]["scenario"] == "(vm)"]
    assert vm["path"] == "mfinject.vm"  # "(vm)" reduced, fs "-" no node
    assert vm["id"].startswith("mfinject:20261125-093007:")
    assert "Kernel panic" in vm["log_excerpt"] and "\0" not in vm["log_excerpt"]
    assert "duration" not in vm  # no observation: missing, not 0
    skipped = next(t for t in _kcidb()["tests"] if t["status"] == "SKIP")
    assert skipped["log_excerpt"] == "reflink needs xfs-rmapbt; ext4 has no reflink"


def test_kcidb_long_message_is_cut_to_the_schema_limit_and_ids_stay_unique():
    long = ScenarioResult("(vm)", "-", KERNEL, CRASHED, message="x" * 40000)
    data = _kcidb(ResultSet((long, long), {}))  # no "created": a merged run may lack it
    kcidb_io.schema.V5_3.validate_exactly(data)
    assert len(data["tests"][0]["log_excerpt"]) == kcidb.LOG_EXCERPT_MAX
    ids = [t["id"] for t in data["tests"]]
    assert len(set(ids)) == 2 and ids[1] == ids[0] + ":2"


# --- KTAP -------------------------------------------------------------------

def _ktap_results():
    lines = report.render("ktap", every_verdict()).splitlines()
    return lines, {ln.split()[2 if ln.startswith("ok") else 3]: ln
                   for ln in lines if ln.startswith(("ok ", "not ok "))}


def test_ktap_directives_per_verdict():
    lines, by_name = _ktap_results()
    assert lines[:2] == ["KTAP version 1", "1..9"]
    assert by_name[f"madvise-self.ext4.{KERNEL}"].endswith(f"madvise-self.ext4.{KERNEL}")
    assert by_name[f"madvise-early.xfs.{KERNEL}"].endswith(
        "# XFAIL A.si_addr_lsb: 21: known deviation (kernel): PMD mapping")
    assert by_name[f"madvise-early.xfs.{KERNEL}"].startswith("ok ")
    assert by_name[f"reflink-shared.ext4.{KERNEL}"].startswith("ok ")
    assert by_name[f"reflink-shared.ext4.{KERNEL}"].endswith(
        "# SKIP reflink needs xfs-rmapbt; ext4 has no reflink")
    for name in ("madvise-self.xfs", "madvise-early.ext4"):  # fail, flaky
        assert by_name[f"{name}.{KERNEL}"].startswith("not ok ")
        assert "#" not in by_name[f"{name}.{KERNEL}"]
    for name in ("unbind-mounted.xfs", "truncate-mapped.xfs", "(vm).-"):  # error, crashed
        assert by_name[f"{name}.{KERNEL}"].startswith("not ok ")
        assert " # ERROR " in by_name[f"{name}.{KERNEL}"]
    assert "# guest crashed in boot 1 (console kept), passed in boot 2" in lines


def test_ktap_unspecified_is_ok_todo_said_unspecified_and_no_pass():
    lines, by_name = _ktap_results()
    line = by_name[f"madvise-self.xfs-rmapbt.{KERNEL}"]
    assert line.startswith("ok ")
    assert line.endswith(f"# TODO unspecified: {UNSPECIFIED_MESSAGE}")
    assert f"# {UNSPECIFIED_MESSAGE}" in lines  # its message as a diagnostic line
    totals = dict(kv.split(":") for kv in lines[-1].removeprefix("# Totals: ").split())
    assert (totals["pass"], totals["todo"]) == ("1", "1")  # the one pass is madvise-self.ext4


def test_ktap_totals_count_every_kind_and_add_up_to_the_plan():
    lines, _ = _ktap_results()
    assert lines[-1] == "# Totals: pass:1 fail:2 xfail:1 xpass:0 skip:1 error:3 todo:1"
    counts = dict(kv.split(":") for kv in lines[-1].removeprefix("# Totals: ").split())
    assert sum(map(int, counts.values())) == 9
    assert ktap.TOTALS == tuple(counts)


def test_ktap_console_excerpt_is_plain_text():
    text = report.render("ktap", every_verdict())
    text.encode("utf-8")  # the file is written as UTF-8: no lone surrogate left
    for bad in ("\x1b", "\x00", "\x07", "\udcff"):
        assert bad not in text
    assert "# [   12.345] Kernel panic - not syncing: Fatal machine check\\x00\\x07" in text


def test_ktap_unknown_verdict_is_an_error_not_a_pass():
    rs = ResultSet((ScenarioResult("x", "xfs", KERNEL, "exploded", message="boom"),))
    lines = report.render("ktap", rs).splitlines()
    assert lines[-2] == f"not ok 1 x.xfs.{KERNEL} # ERROR unknown verdict 'exploded': boom"
    assert "error:1" in lines[-1].split()


# --- JUnit ------------------------------------------------------------------

def _junit():
    text = report.render("junit", every_verdict())
    (suite,) = ET.fromstring(text).findall("testsuite")
    text.encode("utf-8")  # writable as the UTF-8 it declares: no lone surrogate left
    # classname is KERNEL.FS: the key is (scenario, filesystem)
    return text, suite, {(c.get("name"), c.get("classname").removeprefix(f"{KERNEL}.")): c
                         for c in suite.findall("testcase")}


def test_junit_parses_with_console_control_characters():
    text, _, cases = _junit()
    for bad in ("\x1b", "\x00", "\x07", "\x0c", "\udcff"):
        assert bad not in text
    error = cases[("(vm)", "-")].find("error")
    assert "[   12.345] Kernel panic - not syncing" in error.text  # colour sequence dropped
    assert "\\x00\\x07" in error.text and "\\udcff\\x0c" in error.text  # shown, not lost
    setup = cases[("unbind-mounted", "xfs")].find("error")
    assert setup.text == "could not set up: mkfs.xfs exited 1"


def test_junit_time_and_timestamp():
    _, suite, cases = _junit()
    assert suite.get("timestamp") == "2026-11-25T09:30:07"
    assert cases[("madvise-self", "ext4")].get("time") == "0.500"  # the observation's duration_s
    assert cases[("(vm)", "-")].get("time") == "0.000"  # no observation
    assert suite.get("time") == "2.500"  # five rows with an observation


def test_junit_outcome_per_verdict_and_counts():
    _, suite, cases = _junit()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("9", "2", "3", "3")
    assert list(cases[("madvise-self", "ext4")]) == [cases[("madvise-self", "ext4")][0]]
    skipped = cases[("reflink-shared", "ext4")].find("skipped")
    assert skipped.get("message") == "reflink needs xfs-rmapbt; ext4 has no reflink"
    xfail = cases[("madvise-early", "xfs")].find("skipped")
    assert xfail.get("type") == "known-deviation" and "PMD mapping" in xfail.get("message")
    flaky = cases[("madvise-early", "ext4")].find("failure")
    assert flaky.get("type") == FLAKY and "passed in boot 2" in flaky.text
    crashed = cases[("truncate-mapped", "xfs")].find("error")
    assert crashed.get("type") == CRASHED and crashed.text.startswith("guest crashed: Kernel panic")


def test_junit_unspecified_is_skipped_with_its_own_type():
    _, _, cases = _junit()
    case = cases[("madvise-self", "xfs-rmapbt")]
    assert [el.tag for el in case] == ["properties", "skipped"]  # no failure, no error
    skipped = case.find("skipped")
    assert skipped.get("type") == "unspecified"
    assert skipped.get("message") == f"unspecified: {UNSPECIFIED_MESSAGE}"
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["verdict"] == UNSPECIFIED


def test_junit_without_a_created_stamp_has_no_timestamp():
    rs = ResultSet((ScenarioResult("(vm)", "-", KERNEL, ERROR, message="interrupted"),),
                   {"created": None})
    (suite,) = ET.fromstring(report.render("junit", rs)).findall("testsuite")
    assert suite.get("timestamp") is None
