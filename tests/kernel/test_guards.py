"""Guards that need a real fsdax namespace: each fails if its guard is removed.

They run in the VM (or on designated pmem) and leave the namespace in fsdax
mode as they found it.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mfinject import fs, hwinject, mce, pmem
from mfinject.injectors import InjectError, MceInjector, require_debugfs

pytestmark = pytest.mark.pmem
SUITE = Path(__file__).resolve().parent  # tests/kernel, or mfinject/suite when installed


def _to_mode(ns: pmem.Namespace, mode: str) -> pmem.Namespace:
    waiter = pmem.BlockdevWaiter()
    try:
        out = pmem.ndctl("create-namespace", "-f", "-e", ns.name, "-m", mode)
        waiter.wait_add(str(out["blockdev"]))
    finally:
        waiter.close()
    return pmem.lookup(ns.name)


@pytest.mark.kernel_log_allows(r"DAX unsupported by block device")
def test_raw_namespace_is_refused_and_gives_no_dax(mf_pmem_namespace):
    raw = _to_mode(mf_pmem_namespace, "raw")
    try:
        assert raw.mode == "raw"
        with pytest.raises(pmem.PmemError, match=r"in raw mode, not fsdax.*"
                           r"ndctl create-namespace -f -e namespace\d+\.\d+ -m fsdax"):
            pmem.ensure_fsdax(raw, may_reconfigure=False)
        # what the guard prevents: XFS mounts with -o dax=always ("DAX unsupported by
        # block device. Turning off DAX."), but its files are in the page cache
        with fs.mounted(fs.FS_KINDS["xfs-noreflink"], raw.devpath) as mount:
            with pytest.raises(fs.FsError, match="is not DAX .*Put the namespace in fsdax mode"):
                fs.create_file(mount, "probe", 4096)
    finally:
        back = pmem.ensure_fsdax(pmem.lookup(mf_pmem_namespace.name), may_reconfigure=True)
    assert back.mode == "fsdax"


def test_mount_without_dax_is_refused(mf_clean_namespace):
    no_dax = dataclasses.replace(fs.FS_KINDS["xfs-noreflink"], mount_options="dax=never")
    with fs.mounted(no_dax, mf_clean_namespace.devpath) as mount:
        assert mount.features.dax_mode == "never"
        with pytest.raises(fs.FsError, match="is not DAX .*mount with -o dax=always"):
            fs.create_file(mount, "probe", 4096)


def test_missing_mkfs_is_named(mf_clean_namespace, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(fs.FsError, match=r"mkfs.xfs not found: install it "
                                         r"\(apt-get install xfsprogs\)"):
        fs.mkfs(fs.FS_KINDS["xfs"], mf_clean_namespace.devpath)


def test_unmounted_debugfs_is_named(mf_pmem_namespace):  # the fixture gates it to pmem hosts
    subprocess.run(["umount", "/sys/kernel/debug"], check=True)
    try:
        with pytest.raises(InjectError, match="debugfs is not mounted: mount -t debugfs none "
                                              "/sys/kernel/debug"):
            require_debugfs()
    finally:
        subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"], check=True)


def test_device_with_a_filesystem_needs_disposable(mf_clean_namespace):
    fs.mkfs(fs.FS_KINDS["ext4"], mf_clean_namespace.devpath)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MFINJECT_PROGRESS", "MFINJECT_DISPOSABLE", "MFINJECT_RESULTS")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x", "-q",
         f"--mfinject-device={mf_clean_namespace.devpath}",
         str(SUITE / "test_scenarios.py"), "-k", "xfs-madvise-self"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode != 0
    assert f"{mf_clean_namespace.devpath} holds a ext4: the suite formats it" in proc.stdout, \
        proc.stdout[-3000:]
    # the guard refused before touching anything: the filesystem is still there
    blkid = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", mf_clean_namespace.devpath],
                           capture_output=True, text=True, check=False)
    assert blkid.stdout.strip() == "ext4"


def test_hardware_injection_is_discovered_not_assumed(mf_pmem_namespace, monkeypatch):
    """What EINJ and ndctl inject-error a machine offers is read from its firmware.

    In the VM the answer is known: QEMU publishes no EINJ table and its NFIT
    root DSM offers no ARS injection function. Without the VM's relay, the
    machine-check injector refuses, and says what this machine offers.
    """
    einj, ars = hwinject.discover(mf_pmem_namespace.name)
    if os.environ.get("MFINJECT_IN_VM"):
        assert not einj.available and "no EINJ table" in einj.reason
        assert not ars.available and "lacks function 7 (ARS_INJECT_SET)" in ars.reason
    monkeypatch.delenv(mce.ENV_DIR, raising=False)
    with pytest.raises(InjectError, match=r"this machine: ACPI EINJ: (not )?available .*; "
                                          r"ndctl inject-error: (not )?available"):
        MceInjector(mf_pmem_namespace)
