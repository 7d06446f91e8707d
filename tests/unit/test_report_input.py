"""`mfinject report` on bad input: one line naming the fix, exit 2, no traceback; and a run
still going or interrupted rendered from its results.jsonl streams, marked partial."""

import json
import xml.etree.ElementTree as ET

import pytest

from mfinject import cli, results
from mfinject.expectations.evaluate import judge

from .samples import ar, observation, participant


def _record(scenario="madvise-self", fs="ext4", kernel="6.1.0-56-amd64"):
    obs = observation(scenario, [participant("A", sigbus=[ar()])], fs=fs, kernel=kernel)
    return results.from_observation(obs, judge(obs), nodeid=f"tests/kernel/x.py::{scenario}[{fs}]")


def _refused(capsys, *argv):
    """Run the command; it must exit 2 with one line on stderr and nothing on stdout."""
    assert cli.main(["report", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err.strip()


def test_results_json_that_is_a_list(tmp_path, capsys):
    (tmp_path / "results.json").write_text("[]")
    err = _refused(capsys, str(tmp_path / "results.json"))
    assert "results.json is a JSON list, not an mfinject results file" in err
    assert "give a results.json or the results directory `mfinject vm` printed" in err


def test_row_missing_fields(tmp_path, capsys):
    row = {"scenario": "madvise-self", "fs": "ext4", "kernel": "6.1.0-56-amd64"}
    (tmp_path / "results.json").write_text(
        json.dumps({"schema": results.SCHEMA, "meta": {}, "results": [row]}))
    err = _refused(capsys, str(tmp_path))
    assert "result #1 lacks verdict: every result needs scenario, fs, kernel, verdict" in err


def test_row_that_is_not_an_object(tmp_path, capsys):
    (tmp_path / "results.json").write_text(
        json.dumps({"schema": results.SCHEMA, "results": ["pass"]}))
    assert "result #1 is a JSON str, not a result object" in _refused(capsys, str(tmp_path))


def test_file_that_is_not_json(tmp_path, capsys):
    (tmp_path / "report.md").write_text("# mfinject\n| scenario |\n")
    err = _refused(capsys, str(tmp_path / "report.md"))
    assert "report.md is not JSON (Expecting value: line 1 column 1" in err


def test_missing_path(tmp_path, capsys):
    err = _refused(capsys, str(tmp_path / "results" / "nope"))
    assert "nope: no such file or directory: give a results.json or the results directory" in err


def test_missing_path_in_diff(tmp_path, capsys):
    err = _refused(capsys, "--diff", str(tmp_path / "old"), str(tmp_path / "new"))
    assert "old: no such file or directory" in err


def test_directory_with_nothing_recorded(tmp_path, capsys):
    (tmp_path / "debian-6.1").mkdir()
    err = _refused(capsys, str(tmp_path))
    assert "holds no results.json or results.jsonl, nor do its subdirectories" in err


def test_output_into_missing_folder(tmp_path, capsys):
    results.ResultSet((_record(),)).save(tmp_path / "results.json")
    out = tmp_path / "no" / "such" / "report.md"
    err = _refused(capsys, str(tmp_path), "--format", "markdown", "-o", str(out))
    assert err == (f"mfinject report: cannot write {out}: folder {out.parent} does not exist: "
                   f"create it (mkdir -p {out.parent}) first")
    assert not out.parent.exists()


def test_output_onto_a_directory(tmp_path, capsys):
    results.ResultSet((_record(),)).save(tmp_path / "results.json")
    err = _refused(capsys, str(tmp_path), "-o", str(tmp_path))
    assert f"cannot write {tmp_path}: Is a directory: choose another -o" in err


def _stream(path, *records, tail=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    for r in records:
        results.append_jsonl(path, r)
    if tail:
        with path.open("a") as f:
            f.write(tail)


def test_run_still_going_is_rendered_partial(tmp_path, capsys):
    """RUN/KERNEL/results.jsonl as `mfinject vm` lays it out, no RUN/results.json yet."""
    run = tmp_path / "20260101-120000"
    _stream(run / "debian-6.1" / "results.jsonl", _record(fs="ext4"), _record(fs="xfs"))
    results.ResultSet((_record(fs="ext4"),), {"kernel": "6.1.0-56-amd64"}).save(
        run / "debian-6.1" / "results.json")  # 6.1's guest session ended
    _stream(run / "debian-6.12" / "results.jsonl", _record(kernel="6.12.48-amd64"),
            tail='{"scenario": "madvise-sh')  # cut short by a crash
    (run / "debian-7.3").mkdir()
    (run / "debian-7.3" / "progress.log").write_text("booting\n")  # booted, nothing yet
    assert cli.main(["report", str(run)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "6.1.0-56-amd64" in out and "6.12.48-amd64" in out
    assert out.splitlines()[-1] == (
        f"partial run: {run} has no results.json yet, the run was interrupted or is still going "
        "(kernels unfinished: debian-6.12, debian-7.3); 3 result(s) so far, "
        "1 unreadable line(s) skipped")


def test_interrupted_kernel_directory_is_partial(tmp_path, capsys):
    _stream(tmp_path / "results.jsonl", _record())
    assert cli.main(["report", str(tmp_path), "--format", "summary"]) == 0
    out, _ = capsys.readouterr()
    assert f"partial run: no results.json beside {tmp_path / 'results.jsonl'}" in out


def test_finished_kernel_directory_reads_every_boot(tmp_path, capsys):
    """results.json beside the stream holds the last boot only; the stream holds all,
    and the crashes the runner appended: it is read, and the run is not partial."""
    crashed = results.ScenarioResult("madvise-early", "xfs", "6.1.0-56-amd64", "crashed",
                                     message="guest panic", nodeid="x::madvise-early[xfs]")
    _stream(tmp_path / "results.jsonl", _record(), crashed)
    results.ResultSet((_record(),), {"kernel": "6.1.0-56-amd64"}).save(tmp_path / "results.json")
    assert cli.main(["report", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert "madvise-early" in out and "guest panic" in out
    assert "partial" not in out


def test_machine_formats_stay_parseable_when_partial(tmp_path, capsys):
    _stream(tmp_path / "debian-6.1" / "results.jsonl", _record())
    assert cli.main(["report", str(tmp_path), "--format", "junit"]) == 0
    out, err = capsys.readouterr()
    ET.fromstring(out)
    assert err.startswith("mfinject report: partial run:")


def test_finished_run_is_not_partial(tmp_path, capsys):
    results.ResultSet((_record(),), {"created": "20260101-120000"}).save(
        tmp_path / "results.json")
    _stream(tmp_path / "debian-6.1" / "results.jsonl", _record())
    out_file = tmp_path / "report.md"
    assert cli.main(["report", str(tmp_path), "--format", "markdown", "-o", str(out_file)]) == 0
    out, err = capsys.readouterr()
    assert out == f"wrote {out_file}\n" and err == ""
    assert "partial" not in out_file.read_text()


@pytest.mark.parametrize("line", ['[1, 2]', '{"scenario": "x"}', '"pass"'])
def test_stream_lines_that_are_not_records_are_skipped(tmp_path, line):
    _stream(tmp_path / "results.jsonl", _record(), tail=line + "\n")
    assert results.read_jsonl(tmp_path / "results.jsonl") == ([_record()], 1)
