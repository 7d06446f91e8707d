"""Guards that protect the host and name the fix (each fails if its guard goes)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mfinject import pmem
from mfinject.injectors import InjectError, check_pfn
from mfinject.kernel import missing_config, parse_config

NS = pmem.Namespace("namespace0.0", "fsdax", "pmem0", phys_start=0x100000000,
                    phys_size=0x40000000)
REPO = Path(__file__).resolve().parents[2]


def test_pfn_inside_namespace_accepted():
    check_pfn(NS, 0x100000)
    check_pfn(NS, 0x13FFFF)


@pytest.mark.parametrize("pfn", [0x0, 0xFFFFF, 0x140000, 0x1234])
def test_pfn_outside_namespace_refused(pfn):
    with pytest.raises(InjectError, match=f"refusing to inject at pfn {pfn:#x}: .*outside"):
        check_pfn(NS, pfn)


def test_missing_config_named():
    cfg = parse_config("CONFIG_MEMORY_FAILURE=y\n# CONFIG_FS_DAX is not set\n")
    assert missing_config(cfg) == ["CONFIG_FS_DAX", "CONFIG_HWPOISON_INJECT"]
    assert missing_config(parse_config("CONFIG_MEMORY_FAILURE=y\nCONFIG_FS_DAX=y\n"
                                       "CONFIG_HWPOISON_INJECT=m\n")) == []


def test_missing_ndctl_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pmem.PmemError, match=r"ndctl not found: install it \(apt-get install ndctl\)"):
        pmem.require_tool("ndctl", "ndctl")


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop to an unprivileged user")
    env = dict(os.environ, HOME="/tmp", MFINJECT_CACHE="/tmp/mfinject-nobody-cache")
    env.pop("CI", None)
    env.pop("MFINJECT_REQUIRE_PMEM", None)
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*drop, sys.executable, "-c", "import mfinject"], capture_output=True,
                           text=True, env=env, cwd="/tmp", timeout=60, check=False)
    if probe.returncode != 0:
        pytest.skip("the unprivileged user cannot run this checkout's Python (clone it where "
                    f"uid 65534 can read it): {probe.stderr.strip()[-200:]}")
    return subprocess.run([*drop, *cmd], capture_output=True, text=True, env=env, cwd="/tmp",
                          timeout=120, check=False)


def test_not_root_mfinject_vm():
    proc = _as_nobody(sys.executable, "-m", "mfinject.cli", "vm")
    assert proc.returncode == 2
    assert "not root: run it as root (sudo)" in proc.stderr


def test_not_root_pytest(tmp_path):
    proc = _as_nobody(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
                      "--mfinject-device=/dev/pmem0", str(REPO / "tests" / "kernel"))
    assert "not root: run pytest as root" in proc.stdout, proc.stdout[-2000:]
