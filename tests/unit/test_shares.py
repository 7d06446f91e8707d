"""The guest's cached import directories: which are bound, which are left alone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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


def _cache_imports(tmp_path: Path, mounts: str, plan: tuple[str, ...],
                   fail: str = "") -> tuple[list[str], list[str]]:
    """Run cache-imports.sh against a mount table, with mount and umount recorded
    (one that names ``fail`` fails); what it said, and what it ran."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "mounts").write_text(mounts)
    shares.write_plan(plan, tmp_path / "plan")
    ran = tmp_path / "ran"
    stub = tmp_path / "stub"
    stub.write_text(f'#!/bin/bash\necho "$(basename "$0") $*" >> {ran}\n'
                    f'[[ -z "{fail}" || "$*" != *"{fail}"* ]] || {{ echo "refused"; exit 32; }}\n')
    stub.chmod(0o755)
    (tmp_path / "mount").symlink_to(stub)
    (tmp_path / "umount").symlink_to(stub)
    env = dict(os.environ, MFINJECT_MOUNTS=str(tmp_path / "mounts"),
               MFINJECT_MOUNT=str(tmp_path / "mount"), MFINJECT_UMOUNT=str(tmp_path / "umount"))
    r = subprocess.run(["bash", str(shares.SCRIPT), shares.STAGING, str(tmp_path / "plan")],
                       env=env, capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.splitlines(), ran.read_text().splitlines() if ran.exists() else []


REMOUNT = ("mount -t 9p -o ro,version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose "
           "virtme.initmount{} " + shares.STAGING)


def test_a_directory_with_a_mount_below_or_on_it_is_left_uncached(tmp_path: Path) -> None:
    # the results directory of a run inside the tree, and /usr as virtme-ng's overlay
    mounts = ("/dev/root / 9p ro 0 0\n"
              f"virtme.initmount2 {shares.STAGING} 9p rw 0 0\n"
              "virtme.initmount0 /work/main/results/x 9p rw 0 0\n"
              "overlay /usr overlay rw 0 0\n")
    said, ran = _cache_imports(tmp_path, mounts, ("/work/main", "/usr", "/opt/py"))
    assert said == ["/work/main: not cached (a mount at /work/main/results/x would be hidden)",
                    "/usr: not cached (a mount at /usr would be hidden)",
                    "/opt/py: cached (9p cache=loose, virtme.initmount2)"]
    assert ran == [f"umount {shares.STAGING}", REMOUNT.format(2),
                   f"mount --bind {shares.STAGING}/opt/py /opt/py"]


def test_no_share_no_binds(tmp_path: Path) -> None:
    said, ran = _cache_imports(tmp_path, "/dev/root / 9p ro 0 0\n", ("/opt/py",))
    assert said == [f"nothing cached: no share at {shares.STAGING}"]
    assert ran == []


def test_a_failed_remount_caches_nothing(tmp_path: Path) -> None:
    mounts = f"virtme.initmount1 {shares.STAGING} 9p ro 0 0\n"
    said, ran = _cache_imports(tmp_path, mounts, ("/opt/py",), fail="-t 9p")
    assert said == [f"nothing cached: {REMOUNT.format(1)}: refused"]
    assert ran == [f"umount {shares.STAGING}", REMOUNT.format(1)]


def test_a_failed_bind_leaves_only_its_directory_uncached(tmp_path: Path) -> None:
    mounts = f"virtme.initmount1 {shares.STAGING} 9p ro 0 0\n"
    said, _ = _cache_imports(tmp_path, mounts, ("/opt/py", "/opt/b"), fail="/opt/py")
    assert said == [f"/opt/py: not cached (mount --bind {shares.STAGING}/opt/py /opt/py: refused)",
                    "/opt/b: cached (9p cache=loose, virtme.initmount1)"]


def test_a_mount_point_the_kernel_escaped_and_a_plan_line_with_spaces(tmp_path: Path) -> None:
    mounts = (f"virtme.initmount1 {shares.STAGING} 9p ro 0 0\n"
              "tmpfs /opt/my\\040dir/results\\011x tmpfs rw 0 0\n")
    said, ran = _cache_imports(tmp_path, mounts, ("/opt/my dir", " /opt/py "))
    assert said == ["/opt/my dir: not cached (a mount at /opt/my dir/results\tx would be hidden)",
                    " /opt/py : cached (9p cache=loose, virtme.initmount1)"]
    assert ran[-1] == f"mount --bind {shares.STAGING} /opt/py   /opt/py "


def test_with_busybox_on_the_path_its_mount_and_timeout_do_it(tmp_path: Path) -> None:
    """A static busybox: 40 ms a mount under TCG, util-linux's 100 ms; each with a limit."""
    (tmp_path / "mounts").write_text(f"virtme.initmount1 {shares.STAGING} 9p ro 0 0\n")
    shares.write_plan(("/opt/py",), tmp_path / "plan")
    busybox = tmp_path / "bin" / "busybox"
    busybox.parent.mkdir()
    busybox.write_text(f'#!/bin/bash\necho "busybox $*" >> {tmp_path / "ran"}\n'
                       '[[ $1 == timeout ]] && { shift 2; exec "$@"; }\nexit 0\n')
    busybox.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFINJECT_")}
    env.update(MFINJECT_MOUNTS=str(tmp_path / "mounts"), PATH=f"{busybox.parent}:/usr/bin:/bin")
    r = subprocess.run(["bash", str(shares.SCRIPT), shares.STAGING, str(tmp_path / "plan")],
                       env=env, capture_output=True, text=True, timeout=30, check=True)
    assert r.stdout.splitlines() == ["/opt/py: cached (9p cache=loose, virtme.initmount1)"]
    ran = (tmp_path / "ran").read_text().splitlines()
    assert ran[0] == f"busybox timeout 30 {busybox} umount {shares.STAGING}"
    assert ran[2].startswith(f"busybox timeout 30 {busybox} mount -t 9p -o ro,")
    assert ran[4] == f"busybox timeout 30 {busybox} mount --bind {shares.STAGING}/opt/py /opt/py"


def test_the_plan_travels_as_lines(tmp_path: Path) -> None:
    shares.write_plan(("/a", "/b c"), tmp_path / "shares.txt")
    assert (tmp_path / "shares.txt").read_text() == "/a\n/b c\n"


def test_the_host_makes_the_rewritten_bytecode_the_guest_reads(tmp_path: Path,
                                                               monkeypatch) -> None:
    """The guest's plugins, on the host, with the variable that forbids bytecode unset:
    pytest then leaves each rewritten module's pyc beside it, where the guest finds it."""
    suite = tmp_path / "kernel"
    suite.mkdir()
    (suite / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("MFINJECT_DEVICE", "/dev/pmem9")
    from mfinject.vm import guest
    assert shares.precompile_rewritten(suite, guest.plugin_args(str(suite))) is None
    assert [p.name for p in (suite / "__pycache__").glob("test_one.*-pytest-*.pyc")]


def test_a_failed_precompile_says_what_failed(tmp_path: Path) -> None:
    said = shares.precompile_rewritten(tmp_path, ["-p", "no_such_plugin_anywhere"])
    assert said is not None and "exited" in said and "--collect-only" in said
