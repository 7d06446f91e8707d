"""The report formats and the comparison of two runs, from hand-built records."""

import json
import xml.etree.ElementTree as ET

from mfinject import report
from mfinject.expectations.evaluate import judge
from mfinject.report import diff, table
from mfinject.results import ResultSet, ScenarioResult, from_observation

from .samples import ao, ar, observation, participant


def _rs(kernel="6.1.0-56-amd64", bad_fs="xfs"):
    out = []
    for fs in ("ext4", "xfs"):
        a = participant("A", sigbus=[ar()]) if fs != bad_fs else participant("A", mapped_after=True)
        obs = observation("madvise-self", [a], fs=fs, kernel=kernel)
        out.append(from_observation(obs, judge(obs)))
    early = observation("madvise-early", [participant("A", sigbus=[ar()]),
                                          participant("C", sigbus=[ao()], vaddr=0x7F1122330000)],
                        kernel=kernel)
    out.append(from_observation(early, judge(early)))
    return ResultSet(tuple(out), {"created": "20261125-000000"})


def test_matrix_has_a_column_per_kernel_and_filesystem_and_worst_first():
    text = table.matrix(_rs().results)
    assert "6.1.0-56-amd64" in text.splitlines()[1] and "ext4" in text.splitlines()[2]
    body = "\n".join(text.splitlines()[4:])
    assert body.index("madvise-self") < body.index("madvise-early")
    assert "FAIL A.signal: none" in text
    assert "C:AO@own/12" in text


def test_full_table_has_failure_report_and_closing_line():
    text = table.full(_rs())
    assert "Failures and deviations:" in text
    assert text.splitlines()[-1] == "scenarios: 2 passed, 1 failed, 0 skipped, 0 unspecified"


def test_markdown_is_a_github_table():
    md = report.render("markdown", _rs())
    assert md.startswith("## mfinject: 6.1.0-56-amd64")
    assert "| scenario" in md and "|---" in md
    assert "### Failures and deviations" in md


def test_junit_properties_and_failures():
    root = ET.fromstring(report.render("junit", _rs()))
    (suite,) = root.findall("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    bad = cases[("6.1.0-56-amd64.xfs", "madvise-self")]
    assert bad.find("failure") is not None
    assert "deviates from madvise(2)" in bad.find("failure").text
    good = cases[("6.1.0-56-amd64.ext4", "madvise-self")]
    props = {p.get("name"): p.get("value") for p in good.iter("property")}
    assert props["kernel"] == "6.1.0-56-amd64"
    assert props["A.sigbus[0]"].startswith("BUS_MCEERR_AR si_addr=0x7f77659c2000 si_addr_lsb=12")


def test_kcidb_records():
    data = json.loads(report.render("kcidb", _rs()))
    assert data["version"] == {"major": 5, "minor": 3}
    tests = data["tests"]
    assert {t["status"] for t in tests} == {"PASS", "FAIL"}
    build_ids = {b["id"] for b in data["builds"]}
    for t in tests:
        assert t["origin"] == "mfinject" and t["build_id"] in build_ids
        assert t["path"].startswith("mfinject.madvise_")


def test_ktap_plan_and_totals():
    lines = report.render("ktap", _rs()).splitlines()
    assert lines[0] == "KTAP version 1" and lines[1] == "1..3"
    assert sum(line.startswith("not ok ") for line in lines) == 1
    assert lines[-1] == "# Totals: pass:2 fail:1 xfail:0 xpass:0 skip:0 error:0 todo:0"


def test_diff_newly_failing_and_passing_across_releases():
    old = _rs(kernel="6.1.0-56-amd64", bad_fs="xfs")
    new = _rs(kernel="6.1.0-57-amd64", bad_fs="ext4")
    kinds = {(c.kind, c.fs) for c in diff.compare(old, new)}
    assert ("newly failing", "ext4") in kinds
    assert ("newly passing", "xfs") in kinds
    text = diff.render(old, new)
    assert "6.1.0-56-amd64 -> 6.1.0-57-amd64" in text
    assert text.splitlines()[-1] == "1 newly failing, 1 newly passing"


def test_diff_observation_change_and_no_change():
    old = _rs()
    assert diff.render(old, old).startswith("no changes")
    changed = list(old.results)
    r = changed[2]
    checks = tuple(dict(c, observed="16") if c["participant"] == "C" and c["field"] == "si_addr_lsb"
                   else c for c in r.checks)
    changed[2] = ScenarioResult(**{**r.__dict__, "checks": checks})
    (c,) = diff.compare(old, ResultSet(tuple(changed)))
    assert c.kind == "observation changed" and "C.si_addr_lsb: 12 -> 16" in c.new
