"""mfinject list, and mfinject vm --fs/--scenario turned into pytest arguments."""

import json
from pathlib import Path

import pytest

from mfinject import cli, listing, selection
from mfinject.expectations.catalogue import EXPECTATIONS, KNOWN_DEVIATIONS
from mfinject.fs import FS_KINDS
from mfinject.scenarios import catalogue, races

KERNEL_TESTS = Path(__file__).resolve().parent.parent / "kernel"
NAMES = [s.name for s in catalogue.ALL] + [r.name for r in races.RACES]
KINDS = "xfs, xfs-noreflink, xfs-rmapbt, ext4, xfs-daxinode, ext4-daxinode"
WITH_REFLINK = ["xfs", "xfs-rmapbt", "xfs-daxinode"]


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("CI", "MFINJECT_REQUIRE_PMEM", "MFINJECT_DEVICE", "MFINJECT_DISPOSABLE",
                "MFINJECT_IN_VM", "MFINJECT_CRASH_TEST", "MFINJECT_MKFS_OPTIONS",
                "MFINJECT_FSTYPE", "MFINJECT_MOUNT_OPTIONS"):
        monkeypatch.delenv(var, raising=False)


def _collected(pytester, *args: str) -> list[str]:
    """The item names pytest collects from tests/kernel with ``args``."""
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", *args,
                             str(KERNEL_TESTS))
    return [line.rsplit("::", 1)[1] for line in res.stdout.lines if "::" in line]


# mfinject list

def test_list_names_every_scenario_and_race(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert f"| {name} " in out
    assert ">=6.8" in out  # unbind-mounted


def test_list_json_says_where_each_runs(capsys):
    assert cli.main(["list", "--format", "json"]) == 0
    data = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert list(data) == NAMES
    assert data["corrupt-pfn-reflink"]["filesystems"] == WITH_REFLINK
    assert data["race-reflink"]["filesystems"] == WITH_REFLINK
    assert data["unbind-mounted"]["filesystems"] == ["xfs-rmapbt"]
    assert data["unbind-mounted"]["kernels"]["since"] == "6.8.0"
    assert data["unbind-mounted"]["injector"] == "unbind"
    assert data["corrupt-pfn"]["filesystems"] == list(FS_KINDS)
    assert data["corrupt-pfn"]["kernels"]["range"] == "all"
    assert data["corrupt-pfn"]["participants"] == [
        "I: injects; default kill", "B: maps main; default kill", "C: maps main; early kill"]


def test_expectations_json_has_a_source_and_range_for_each(capsys):
    assert cli.main(["list", "--expectations", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["expectations"]) == sum(len(x) for x in EXPECTATIONS.values())
    assert len(data["known_deviations"]) == len(KNOWN_DEVIATIONS)
    assert {x["scenario"] for x in data["expectations"]} == set(NAMES)
    for x in data["expectations"] + data["known_deviations"]:
        assert x["source"]["ref"] and x["source"]["quote"] and x["source"]["cite"]
        assert x["kernels"]["range"]
    stats = [x for x in data["expectations"] if x["scenario"] == "corrupt-pfn"
             and x["field"] == "memory_failure_stats"]
    assert {x["kernels"]["range"] for x in stats} == {">=6.4", "<6.4"}


def test_expectations_table_lists_sources_and_deviations(capsys):
    assert cli.main(["list", "--expectations"]) == 0
    out = capsys.readouterr().out
    assert "known deviations:" in out
    assert "commit 1ea7ca1b0901 (v6.5)" in out and "<6.5" in out  # badblocks si_code
    for d in KNOWN_DEVIATIONS:
        assert f"| {d.scenario} " in out


def test_list_filters_by_scenario_and_refuses_unknown_names(capsys):
    assert cli.main(["list", "--expectations", "--format", "json",
                     "--scenario", "corrupt-pfn"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {x["scenario"] for x in data["expectations"]} == {"corrupt-pfn"}
    assert cli.main(["list", "--scenario", "corrupt-pfn-thrice"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'corrupt-pfn-thrice'" in err and "corrupt-pfn-twice" in err


# the selection

def test_scenario_selects_exactly_that_name_on_each_filesystem():
    sel = selection.select([], ["corrupt-pfn"])
    assert sel.items == tuple(f"test_scenario[{fs}-corrupt-pfn]" for fs in KINDS.split(", "))
    assert sel.notes == ()


def test_fs_and_scenario_repeat_and_cross():
    sel = selection.select(["xfs", "ext4"], ["madvise-self", "race-fault"])
    assert sel.items == ("test_scenario[xfs-madvise-self]", "test_scenario[ext4-madvise-self]",
                         "test_race[xfs-race-fault]", "test_race[ext4-race-fault]")


def test_fs_alone_leaves_out_what_does_not_run_there():
    items = selection.select(["ext4"], []).items
    assert "test_scenario[ext4-corrupt-pfn-reflink]" not in items
    assert not any("unbind" in i or "reflink" in i for i in items)
    assert len(items) == len([e for e in listing.entries() if "ext4" in e.filesystems])
    assert "test_unbind_mounted[xfs-rmapbt]" in selection.select(["xfs-rmapbt"], []).items


def test_a_named_pair_that_does_not_run_is_noted_or_refused():
    sel = selection.select(["ext4"], ["corrupt-pfn", "corrupt-pfn-reflink"])
    assert sel.items == ("test_scenario[ext4-corrupt-pfn]",)
    assert sel.notes and "corrupt-pfn-reflink does not run on ext4" in sel.notes[0]
    with pytest.raises(selection.SelectionError, match="nothing selected: unbind-mounted does "
                       "not run on xfs.*v6.8"):
        selection.select(["xfs"], ["unbind-mounted"])


@pytest.mark.parametrize("fs, scenario, word", [
    (["xfs", "btrfs"], [], f"unknown filesystem 'btrfs': choose from {KINDS}"),
    ([], ["corrupt_pfn"], "unknown scenario 'corrupt_pfn': choose from madvise-self,"),
])
def test_unknown_names_are_refused_with_the_valid_ones(fs, scenario, word):
    with pytest.raises(selection.SelectionError, match=word):
        selection.pytest_args(fs, scenario)


def test_pytest_args_fold_in_a_k_from_the_extra_args():
    assert selection.pytest_args([], [], ["-x", "-k", "madvise"]) == (("-x", "-k", "madvise"), ())
    args, _ = selection.pytest_args(["ext4"], ["corrupt-pfn"], ["-x"])
    assert args == ("-x", "-k", "test_scenario[ext4-corrupt-pfn]")
    for extra in (["-k", "not slow"], ["-knot slow"], ["--keyword=not slow"],
                  ["--keyword", "not slow"], ["-k", "x", "-k", "not slow"]):
        args, _ = selection.pytest_args(["ext4"], ["corrupt-pfn"], ["-v", *extra, "-s"])
        assert args == ("-v", "-s", "-k", "(test_scenario[ext4-corrupt-pfn]) and (not slow)")
    args, _ = selection.pytest_args(["ext4"], ["badblocks"], keep=["test_deliberate_crash"])
    assert args == ("-k", "test_scenario[ext4-badblocks] or test_deliberate_crash")


# the selection against what pytest collects from tests/kernel

def test_every_entry_names_a_collected_test(pytester, clean_env):
    collected = _collected(pytester)
    known = {e.item_name(fs) for e in listing.entries() for fs in FS_KINDS}
    per_fs = [n for n in collected if "[" in n]
    assert per_fs and set(per_fs) <= known  # no scenario test the listing does not know
    for e in listing.entries():
        for fs in e.filesystems:
            assert e.item_name(fs) in collected


def test_the_k_expression_selects_exactly_in_pytest(pytester, clean_env):
    args, _ = selection.pytest_args([], ["corrupt-pfn"])
    assert _collected(pytester, *args) == [f"test_scenario[{fs}-corrupt-pfn]"
                                           for fs in KINDS.split(", ")]
    args, _ = selection.pytest_args(["xfs"], ["race-munmap", "madvise-self"], ["-k", "race"])
    assert _collected(pytester, *args) == ["test_race[xfs-race-munmap]"]
    args, _ = selection.pytest_args(["xfs-rmapbt"], ["unbind-mounted"])
    assert _collected(pytester, *args) == ["test_unbind_mounted[xfs-rmapbt]"]


# mfinject vm: refused before anything boots, or handed to the runner

class _Stop(Exception):
    pass


@pytest.fixture
def no_boot(monkeypatch):
    """cmd_vm gets no further than building its options: nothing is resolved or booted."""
    seen = {}

    def options(**kw):
        seen.update(kw)
        raise _Stop

    def never(*_a, **_k):
        raise AssertionError("mfinject vm would have gone on to boot")

    options.test_timeout_s = cli.runner.VmOptions.test_timeout_s  # the parser's default
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cli.runner, "preflight", lambda: [])
    monkeypatch.setattr(cli.runner, "VmOptions", options)
    monkeypatch.setattr(cli.runner, "run_kernel", never)
    monkeypatch.setattr(cli.kernels, "resolve", never)
    return seen


def test_vm_refuses_an_unknown_name_before_booting(no_boot, capsys):
    assert cli.main(["vm", "--fs", "xfs-rmapbt", "--scenario", "corrupt-pfn-thrice"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'corrupt-pfn-thrice': choose from" in err and "corrupt-pfn" in err
    assert cli.main(["vm", "--fs", "zfs"]) == 2
    assert f"unknown filesystem 'zfs': choose from {KINDS}" in capsys.readouterr().err
    assert no_boot == {}


def test_vm_hands_the_selection_to_the_guest(no_boot):
    with pytest.raises(_Stop):
        cli.main(["vm", "--fs", "xfs-rmapbt", "--scenario", "corrupt-pfn", "--scenario",
                  "corrupt-pfn-twice", "--", "-x", "-k", "not slow"])
    assert no_boot["pytest_args"] == (
        "-x", "-k", "(test_scenario[xfs-rmapbt-corrupt-pfn] or "
        "test_scenario[xfs-rmapbt-corrupt-pfn-twice]) and (not slow)")
