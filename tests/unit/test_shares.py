"""The guest's cached import directories: which are bound, which are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfinject.vm import shares


def test_plan_drops_nested_and_missing_directories(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".venv").mkdir(parents=True)
    (tmp_path / "repo" / "mfinject").mkdir()
    (tmp_path / "python").mkdir()
    dirs = shares.plan([tmp_path / "python", tmp_path / "repo" / ".venv", tmp_path / "repo",
                        tmp_path / "repo" / "mfinject", tmp_path / "missing"])
    assert dirs == (str(tmp_path / "python"), str(tmp_path / "repo"))


def test_one_share_whatever_the_plan() -> None:
    # each share is three of the guest kernel's 32 boot environment variables
    assert [a for a in shares.vng_args() if a.startswith("--rodir")] == [
        f"--rodir={shares.STAGING}=/"]


def test_a_directory_with_a_mount_below_or_on_it_is_left_uncached(monkeypatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(shares, "_run", lambda cmd: ran.append(cmd))
    # the results directory of a run inside the tree, and /usr as virtme-ng's overlay
    mounts = ("/dev/root / 9p ro 0 0\n"
              f"virtme.initmount2 {shares.STAGING} 9p rw 0 0\n"
              "virtme.initmount0 /work/main/results/x 9p rw 0 0\n"
              "overlay /usr overlay rw 0 0\n")
    said = shares.remount_cached(("/work/main", "/usr", "/opt/py"), mounts)
    assert said == ["/work/main: not cached (a mount at /work/main/results/x would be hidden)",
                    "/usr: not cached (a mount at /usr would be hidden)",
                    "/opt/py: cached (9p cache=loose, virtme.initmount2)"]
    assert ran[-1] == ["mount", "--bind", shares.STAGING + "/opt/py", "/opt/py"]


@pytest.mark.parametrize("mounts", ["/dev/root / 9p ro 0 0\n"])
def test_no_share_no_binds(mounts: str, monkeypatch) -> None:
    monkeypatch.setattr(shares, "_run", lambda cmd: pytest.fail(f"ran {cmd}"))
    assert shares.remount_cached(("/opt/py",), mounts) == [
        f"nothing cached: no share at {shares.STAGING}"]


def test_the_plan_travels_as_json(tmp_path: Path) -> None:
    shares.write_plan(("/a", "/b"), tmp_path / "shares.json")
    assert shares.read_plan(tmp_path / "shares.json") == ("/a", "/b")
