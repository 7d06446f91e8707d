"""Guards that protect the host and name the fix (each fails if its guard goes)."""

import os
import re
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


# --mfinject-device that is not a pmem namespace: say what it is and what a namespace looks like.
PMEM_IS = r"a pmem namespace is a block device /dev/pmemN \(or pmemN\.M\) backed by namespaceX\.Y"


@pytest.fixture
def no_ndctl(monkeypatch):
    """These are host checks: ndctl must not be asked."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"ndctl {args} called for a device that is not a namespace")
    monkeypatch.setattr(pmem, "ndctl", refuse)


@pytest.mark.parametrize("designation", ["/dev/null", "null"])
def test_device_character_device_named(no_ndctl, designation):
    with pytest.raises(pmem.PmemError,
                       match=rf"^{designation} is a character device \(null in sysfs\), not a "
                             rf"pmem namespace: {PMEM_IS}: `ndctl list -N` lists them"):
        pmem.lookup(designation)


def test_device_regular_file_named(no_ndctl, tmp_path):
    image = tmp_path / "pmem.img"
    image.write_bytes(b"\0" * 4096)
    with pytest.raises(pmem.PmemError) as e:
        pmem.lookup(str(image))
    assert str(e.value).startswith(f"{image} is a regular file, not a pmem namespace: ")
    assert "enable-namespace" not in str(e.value)


def test_device_directory_named(no_ndctl, tmp_path):
    with pytest.raises(pmem.PmemError, match=rf"^{re.escape(str(tmp_path))} is a directory, "
                                             rf"not a pmem namespace: {PMEM_IS}"):
        pmem.lookup(str(tmp_path))


def test_device_block_device_not_pmem_named(no_ndctl):
    devs = [re.escape(d.name) for d in sorted(Path("/sys/block").glob("*"))
            if not d.name.startswith("pmem") and Path(f"/dev/{d.name}").exists()]
    if not devs:
        pytest.skip("no block device other than pmem on this host (/sys/block)")
    with pytest.raises(pmem.PmemError,
                       match=rf"^/dev/{devs[0]} is a block device \({devs[0]} in sysfs\) that is "
                             rf"not a pmem namespace: {PMEM_IS}"):
        pmem.lookup(f"/dev/{devs[0]}")


@pytest.mark.parametrize("designation", ["/nonexistent/pmem0", "/dev/pmem99", "pmem99",
                                         "namespace99.0"])
def test_device_missing_keeps_its_message(no_ndctl, designation):
    with pytest.raises(pmem.PmemError,
                       match=rf"^{designation} does not exist: check `ndctl list -N` and "
                             "designate an existing namespace with --mfinject-device$"):
        pmem.lookup(designation)
