"""The guest's cached import directories: which are shared, which are left alone."""

from __future__ import annotations

from pathlib import Path

from mfinject.vm import shares
from mfinject.vm.shares import CachedDir


def test_plan_keeps_one_share_per_tree_and_drops_nested_ones(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".venv").mkdir(parents=True)
    (tmp_path / "repo" / "mfinject").mkdir()
    (tmp_path / "python").mkdir()
    dirs = shares.plan([tmp_path / "python", tmp_path / "repo" / ".venv", tmp_path / "repo",
                        tmp_path / "repo" / "mfinject", tmp_path / "missing"])
    assert [d.host for d in dirs] == [str(tmp_path / "python"), str(tmp_path / "repo")]
    assert len({d.staging for d in dirs}) == 2


def test_a_directory_with_a_mount_below_or_on_it_is_left_uncached() -> None:
    # the results directory of a run inside the tree, and /usr as virtme-ng's overlay
    mounts = ("/dev/root / 9p ro 0 0\n"
              "virtme.initmount1 /run/mfinject/cached/0 9p rw 0 0\n"
              "virtme.initmount2 /run/mfinject/cached/1 9p rw 0 0\n"
              "virtme.initmount0 /work/main/results/x 9p rw 0 0\n"
              "overlay /usr overlay rw 0 0\n")
    said = shares.remount_cached((CachedDir("/work/main", "/run/mfinject/cached/0"),
                                  CachedDir("/usr", "/run/mfinject/cached/1")), mounts)
    assert said == ["/work/main: not cached (a mount at /work/main/results/x would be hidden)",
                    "/usr: not cached (a mount at /usr would be hidden)"]


def test_a_share_the_guest_does_not_have_is_said_not_cached() -> None:
    said = shares.remount_cached((CachedDir("/opt/py", "/run/mfinject/cached/0"),),
                                 "/dev/root / 9p ro 0 0\n")
    assert said == ["/opt/py: not cached (no share at /run/mfinject/cached/0)"]


def test_the_plan_travels_as_json(tmp_path: Path) -> None:
    dirs = (CachedDir("/a", "/run/mfinject/cached/0"),)
    shares.write_plan(dirs, tmp_path / "shares.json")
    assert shares.read_plan(tmp_path / "shares.json") == dirs
