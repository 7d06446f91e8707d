"""Result records and the tabulated report rendered from them."""

from mfinject import results
from mfinject.expectations.evaluate import judge
from mfinject.report import table

from .samples import ao, ar, observation, participant


def _records():
    good = observation("madvise-self", [participant("A", sigbus=[ar()])], fs="ext4")
    bad = observation("madvise-self", [participant("A", mapped_after=True)], fs="xfs")
    return [results.from_observation(good, judge(good)), results.from_observation(bad, judge(bad))]


def test_json_roundtrip(tmp_path):
    rs = results.ResultSet(tuple(_records()), {"kernels": ["debian:6.1"]})
    rs.save(tmp_path / "results.json")
    back = results.load(tmp_path / "results.json")
    assert back.results == rs.results
    assert back.meta == {"kernels": ["debian:6.1"]}


def test_load_rejects_foreign_json(tmp_path):
    (tmp_path / "x.json").write_text('{"results": []}')
    try:
        results.load(tmp_path / "x.json")
    except results.ResultsError as e:
        assert "not an mfinject results file" in str(e)
    else:
        raise AssertionError("foreign file accepted")


def test_table_puts_failures_first_and_shows_fields():
    out = table.render(_records())
    lines = out.splitlines()
    header = lines[1]
    for col in ("scenario", "kernel", "filesystem", "expected", "observed", "verdict"):
        assert col in header
    body = "\n".join(lines[3:])
    assert body.index("FAIL") < body.index("pass")
    assert "BUS_MCEERR_AR addr=0x7f77659c2000 (own) lsb=12" in out
    assert "A: no SIGBUS mapped" in out


def test_totals_closing_line():
    text = table.totals(_records())
    assert text.splitlines()[-1] == "scenarios: 1 passed, 1 failed, 0 skipped, 0 unspecified"


def test_failure_details_carry_source_and_dmesg():
    details = table.failure_details(_records())
    assert "madvise-self on xfs" in details
    assert "deviates from madvise(2)" in details
    assert "dmesg: Memory failure: 0x101218" in details
    assert "on ext4" not in details


def test_error_record_without_observation_renders():
    r = results.ScenarioResult("corrupt-pfn", "xfs", "6.1.0", "error", message="setup: boom")
    out = table.render([r])
    assert "setup: boom" in out and "ERROR" in out


def test_early_signal_cell():
    a = participant("A", sigbus=[ar()])
    c = participant("C", sigbus=[ao()], vaddr=0x7F1122330000)
    obs = observation("madvise-early", [a, c])
    out = table.render([results.from_observation(obs, judge(obs))])
    assert "C: BUS_MCEERR_AO addr=0x7f1122330000 (own) lsb=12" in out


def test_totals_count_flaky_as_failed_unless_the_crash_is_catalogued_and_skips_apart():
    from mfinject.results import ScenarioResult
    rows = [ScenarioResult("a", "xfs", "6.1", "flaky"),
            ScenarioResult("b", "xfs", "7.3", "flaky", known_crash="tcg-int3-text-patching"),
            ScenarioResult("c", "ext4", "6.1", "skipped", message="needs reflink"),
            ScenarioResult("d", "xfs", "6.1", "pass")]
    assert table.totals(rows).splitlines()[-1] == \
        "scenarios: 1 passed, 1 failed, 1 skipped, 0 unspecified"
    assert "c on ext4, 6.1: needs reflink" in table.skipped(rows)


def test_an_unspecified_row_is_no_pass_no_failure_and_said_plainly():
    from mfinject import cli
    from mfinject.expectations.model import UNSPECIFIED

    from .test_report_formats_valid import unspecified_row

    row = unspecified_row()
    assert not row.fails_run and not cli._is_failure(row)
    assert table.verdict_cell(row) == "unspecified (A.window)"
    assert table.short_cell(row) == "unspecified A.window: only the poisoned page unmapped"
    verdicts, closing = table.totals([row]).splitlines()
    assert "0 pass, 0 known-deviation, 1 unspecified, 0 fail" in verdicts
    assert closing == "scenarios: 0 passed, 0 failed, 0 skipped, 1 unspecified"
    assert table.counts([row])[UNSPECIFIED] == 1 and table.counts([row])["pass"] == 0
    assert "madvise-self on xfs-rmapbt" in table.failure_details([row])  # shown, not a pass
    summary = table.summary(results.ResultSet((row,)))
    assert "| unspec" in summary and "1 unspecified" in summary


def test_an_unspecified_field_in_a_failing_row_is_not_named_as_its_failure():
    import dataclasses

    from mfinject.expectations.model import UNSPECIFIED

    _, bad = _records()
    checks = tuple(dict(c, verdict=UNSPECIFIED, expected=UNSPECIFIED) if c["field"] == "window"
                   else c for c in bad.checks)
    row = dataclasses.replace(bad, checks=checks)
    assert row.verdict == "fail" and "A.window" not in table.verdict_cell(row)
    assert table.verdict_cell(row).startswith("FAIL (A.signal")


def test_an_unspecified_row_ranks_below_a_known_deviation_above_a_pass():
    from .test_report_formats_valid import unspecified_row

    good, bad = _records()
    dev = results.ScenarioResult("b", "xfs", "6.1.0", "known-deviation")
    ordered = sorted([good, unspecified_row(), dev, bad], key=table.sort_key)
    assert [r.verdict for r in ordered] == ["fail", "known-deviation", "unspecified", "pass"]


def test_diff_an_unspecified_case_to_or_from_a_pass_is_no_kernel_news():
    import dataclasses

    from mfinject.report import diff

    from .test_report_formats_valid import unspecified_row

    unspec = unspecified_row()
    passed = dataclasses.replace(unspec, verdict="pass")
    old, new = results.ResultSet((passed,)), results.ResultSet((unspec,))
    assert [c.kind for c in diff.compare(old, new)] == ["verdict changed"]
    assert [c.kind for c in diff.compare(new, old)] == ["verdict changed"]


def test_a_skipped_cell_says_why_in_whole_words_without_what_its_row_and_column_say():
    reason = ("not meaningful here: corrupt-pfn-metadata on ext4-daxinode (generic path): only "
              "XFS with a reverse map (rmapbt) is told whose the page is")
    r = results.ScenarioResult("corrupt-pfn-metadata", "ext4-daxinode", "6.1.0", "skipped",
                               message=reason)
    cell = table.short_cell(r)
    assert cell == "SKIPPED not meaningful here: (generic path): only XFS with a reverse ..."
    assert len(cell) <= len("SKIPPED ") + 64
    assert reason in table.skipped([r])  # in full, below the matrix


def test_a_short_reason_is_left_whole():
    r = results.ScenarioResult("corrupt-pfn", "xfs", "6.1.0", "error", message="setup: boom")
    assert table.short_cell(r) == "ERROR setup: boom"


def test_a_skip_reason_loses_its_scenario_name_not_another_scenarios():
    r = results.ScenarioResult("corrupt-pfn-shared", "ext4", "6.1.0", "skipped", message=(
        "not meaningful here: corrupt-pfn-shared needs shared blocks (reflink): ext4 has none"))
    assert table.short_cell(r) == ("SKIPPED not meaningful here: needs shared blocks (reflink): "
                                   "ext4 has ...")  # "has" ends at the limit: whole
    other = results.ScenarioResult("corrupt-pfn", "xfs", "6.1.0", "error",
                                   message="setup: corrupt-pfn-shared left shared blocks")
    assert table.short_cell(other) == "ERROR setup: corrupt-pfn-shared left shared blocks"


def test_a_splat_in_a_matrix_cell_is_its_signature_not_its_cut_here_line():
    from mfinject.expectations.evaluate import with_health
    good = observation("madvise-self", [participant("A", sigbus=[ar()])], fs="xfs")
    findings = ["WARN: [  167.397517] ------------[ cut here ]------------",
                "WARN: [  167.397724] WARNING: CPU: 1 PID: 835 at fs/dax.c:380 "
                "dax_insert_entry+0x227/0x320"]
    row = results.from_observation(good, with_health(judge(good), findings, good))
    assert row.verdict == "fail"
    assert table.short_cell(row) == ("FAIL kernel.health: WARN fs/dax.c dax_insert_entry "
                                     "(expected no splat)")
    assert "cut here" in table.failure_details([row])  # every line, below the matrix
