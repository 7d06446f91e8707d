"""Persistent-memory namespaces: discovery (sysfs, pyudev) and setup (ndctl).

A namespace is named either by its block device (``/dev/pmem0``, ``pmem0``)
or by its libnvdimm name (``namespace0.0``). Its physical range comes from
sysfs (``/sys/bus/nd/devices/namespaceX.Y/resource`` and ``size``): every PFN
the suite injects into must lie inside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyudev

from mfinject import ledger
from mfinject.errors import MfinjectError
from mfinject.syscalls import PAGE_SIZE

log = logging.getLogger(__name__)

ND_DEVICES = Path("/sys/bus/nd/devices")
UDEV_TIMEOUT_S = 60.0


class PmemError(MfinjectError):
    pass


@dataclass(frozen=True)
class Namespace:
    name: str  # namespaceX.Y
    mode: str  # fsdax, raw, devdax, sector
    blockdev: str | None  # pmemN
    phys_start: int
    phys_size: int

    @property
    def devpath(self) -> str:
        if not self.blockdev:
            raise PmemError(f"{self.name} has no block device (mode {self.mode})")
        return f"/dev/{self.blockdev}"

    def contains_pfn(self, pfn: int) -> bool:
        addr = pfn * PAGE_SIZE
        return self.phys_start <= addr < self.phys_start + self.phys_size

    def describe_range(self) -> str:
        return f"[{self.phys_start:#x}, {self.phys_start + self.phys_size:#x})"


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PmemError(f"{name} not found: install it (apt-get install {package})")
    return path


def ndctl(*args: str, timeout: float = 120.0) -> object:
    """Run ndctl and parse its JSON output (None when it prints nothing)."""
    cmd = [require_tool("ndctl", "ndctl"), *args]
    log.info("+ %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise PmemError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise PmemError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    out = proc.stdout.strip()
    return json.loads(out) if out.startswith(("{", "[")) else None


def _read_int(path: Path) -> int:
    return int(path.read_text().strip(), 0)


def namespace_of_blockdev(blockdev: str) -> str:
    """``pmem0`` -> ``namespace0.0``, through the sysfs parent (namespace or pfn)."""
    dev = Path(f"/sys/block/{blockdev}/device")
    if not dev.exists():
        raise PmemError(f"/dev/{blockdev} is not a pmem block device (no {dev})")
    target = dev.resolve()
    if target.name.startswith("namespace"):
        return target.name
    ns_attr = target / "namespace"  # pfnX.Y/namespace holds the namespace's name
    if ns_attr.is_file():
        name = ns_attr.read_text().strip()
        if name:
            return name
    raise PmemError(f"cannot find the namespace behind /dev/{blockdev} ({target})")


WHAT_PMEM_IS = ("a pmem namespace is a block device /dev/pmemN (or pmemN.M) backed by "
                "namespaceX.Y: `ndctl list -N` lists them; designate one with --mfinject-device")


def _missing(designation: str) -> PmemError:
    return PmemError(f"{designation} does not exist: check `ndctl list -N` and designate "
                     "an existing namespace with --mfinject-device")


def _sysfs_name(kind: str, st: os.stat_result) -> str:
    """``sda1``, ``null``: the device's name in /sys/dev/{block,char}/MAJ:MIN."""
    link = Path(f"/sys/dev/{kind}/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    return link.resolve().name if link.exists() else \
        f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}, not in sysfs"


def _namespace_of_path(designation: str, path: Path) -> str:
    """The namespace behind a device node, or an error saying what the path is instead."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _missing(designation) from None
    except OSError as e:
        raise PmemError(f"cannot look at {designation} ({e.strerror}): {WHAT_PMEM_IS}") from e
    if stat.S_ISBLK(st.st_mode):
        name = _sysfs_name("block", st)
        if name.startswith("pmem") and Path(f"/sys/block/{name}/device").exists():
            return namespace_of_blockdev(name)
        what = f"a block device ({name} in sysfs) that is not a pmem namespace"
    elif stat.S_ISCHR(st.st_mode):
        what = f"a character device ({_sysfs_name('char', st)} in sysfs), not a pmem namespace"
    elif stat.S_ISDIR(st.st_mode):
        what = "a directory, not a pmem namespace"
    elif stat.S_ISREG(st.st_mode):
        what = "a regular file, not a pmem namespace"
    else:
        what = "neither a file nor a device"
    raise PmemError(f"{designation} is {what}: {WHAT_PMEM_IS}")


def namespace_name(designation: str) -> str:
    """``/dev/pmemN``, ``pmemN``, ``namespaceX.Y`` (or any path to a pmem block device)
    -> ``namespaceX.Y``."""
    if "/" in designation:
        return _namespace_of_path(designation, Path(designation))
    if (ND_DEVICES / designation).exists():
        if not designation.startswith("namespace"):
            raise PmemError(f"{designation} is a libnvdimm device but not a namespace: "
                            f"{WHAT_PMEM_IS}")
        return designation
    if designation.startswith("pmem"):
        if not Path(f"/dev/{designation}").exists():
            raise _missing(designation)
        return namespace_of_blockdev(designation)
    for path in (Path(f"/dev/{designation}"), Path(designation)):  # "null", "sda", "x.img"
        if path.exists():
            return _namespace_of_path(designation, path)
    raise _missing(designation)


def namespaces(devices: Path = ND_DEVICES) -> list[str]:
    """Every namespace, namespace0.0 first (natural order: namespace10.0 after 9.0).

    Every namespace with a size, enabled or not: what ``ndctl list -N -i``
    lists, less the seeds of a label area (size 0, nothing to test on), from
    sysfs: ndctl cost 0.4 s of every boot under TCG.
    """
    # the bus registers its devices asynchronously: wait for its probes, as libndctl
    # does (ndctl_bus_wait_probe(): a read of the bus's wait_probe)
    for wait in devices.glob("ndbus*/wait_probe"):
        try:
            wait.read_text()
        except OSError:
            pass
    found = []
    for dev in devices.glob("namespace*.*"):
        try:
            size = int((dev / "size").read_text())
        except (OSError, ValueError):
            continue
        if size > 0:
            found.append(dev.name)
    return sorted(found, key=_natural)


def _natural(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


# a claim device's prefix -> the mode ndctl names (the namespace's holder attribute)
CLAIM_MODES = {"pfn": "fsdax", "dax": "devdax", "btt": "sector"}


def from_sysfs(name: str, devices: Path = ND_DEVICES) -> tuple[str, str | None] | None:
    """The namespace's mode and block device, as ``ndctl list -n`` gives them, read from
    sysfs (ndctl walks the whole bus: 0.33 s a call under TCG): the claim device its
    ``holder`` names (pfnX.Y: fsdax) or none (raw), and the disk under whichever of
    the two is bound to a driver. None where it is disabled or sysfs says too little."""
    node = devices / name
    try:
        holder = (node / "holder").read_text().strip()
    except OSError:
        return None
    owner = devices / holder if holder else node
    if not (owner / "driver").exists():
        return None
    mode = CLAIM_MODES.get(holder.rstrip("0123456789."), "raw") if holder else "raw"
    disks = sorted(p.name for p in (owner / "block").glob("*")) if (owner / "block").is_dir() \
        else []
    return mode, (disks[0] if disks else None)


def lookup(designation: str) -> Namespace:
    """Resolve ``/dev/pmemN``, ``pmemN`` or ``namespaceX.Y`` to a Namespace."""
    name = namespace_name(designation)
    if not (ND_DEVICES / name).exists():
        raise _missing(designation)
    found = from_sysfs(name)
    if found is None:  # disabled, or a kernel whose sysfs says less: ask ndctl
        listing = ndctl("list", "-n", name)
        if isinstance(listing, list):
            listing = listing[0] if listing else None
        if not isinstance(listing, dict):
            raise PmemError(f"ndctl does not list {name}: is it disabled? "
                            f"(ndctl enable-namespace {name})")
        found = (str(listing.get("mode", "unknown")), listing.get("blockdev"))
    return Namespace(
        name=name,
        mode=found[0],
        blockdev=found[1],
        phys_start=_read_int(ND_DEVICES / name / "resource"),
        phys_size=_read_int(ND_DEVICES / name / "size"),
    )


class BlockdevWaiter:
    """Waits for a udev ``add`` event of a block device; start it before acting."""

    def __init__(self) -> None:
        self._monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        self._monitor.filter_by("block")
        self._monitor.start()

    def wait_add(self, blockdev: str, timeout_s: float = UDEV_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PmemError(
                    f"no udev 'add' event for {blockdev} within {timeout_s:.0f} s: "
                    "is systemd-udevd running?"
                )
            device = self._monitor.poll(timeout=left)
            if device is not None and device.sys_name == blockdev and device.action == "add":
                if os.path.exists(f"/dev/{blockdev}"):
                    return

    def close(self) -> None:
        # pyudev monitors hold a netlink socket; drop it explicitly
        self._monitor = None  # type: ignore[assignment]


def ensure_fsdax(ns: Namespace, *, may_reconfigure: bool) -> Namespace:
    """Return the namespace in fsdax mode, reconfiguring it if allowed."""
    if ns.mode == "fsdax" and ns.blockdev:
        return ns
    if not may_reconfigure:
        raise PmemError(
            f"{ns.name} is in {ns.mode} mode, not fsdax: a raw namespace mounts with -o dax "
            f"but gives page cache. Run `ndctl create-namespace -f -e {ns.name} -m fsdax`, "
            "or pass --mfinject-disposable to let the suite do it"
        )
    waiter = BlockdevWaiter()
    try:
        out = ndctl("create-namespace", "-f", "-e", ns.name, "-m", "fsdax")
        if not isinstance(out, dict) or not out.get("blockdev"):
            raise PmemError(f"ndctl create-namespace on {ns.name} printed no blockdev: {out}")
        waiter.wait_add(str(out["blockdev"]))
    finally:
        waiter.close()
    return lookup(ns.name)


ND_PMEM_DRIVER = Path("/sys/bus/nd/drivers/nd_pmem")


def claim_of(ns: Namespace, devices: Path = ND_DEVICES) -> str | None:
    """The pfn device (pfnX.Y) that claims an fsdax namespace, bound or not: the one
    whose ``namespace`` attribute names it (the region's idle seed names none)."""
    for dev in sorted(devices.glob("pfn*")):
        with contextlib.suppress(OSError):
            if (dev / "namespace").read_text().strip() == ns.name:
                return dev.name
    return None


def _rebind(claim: str, devpath: str | None, driver: Path = ND_PMEM_DRIVER,
            devices: Path = ND_DEVICES) -> None:
    """Unbind the pfn device from nd_pmem (unless nothing binds it: unbind-mounted
    leaves it so on 6.12) and bind it again.

    As ndctl disable-namespace does, the block device is held open O_EXCL across
    the unbind: a sysfs unbind refuses nothing, and a filesystem still mounted
    somewhere would be told its device is going (kill_dax(): a shutdown, killed
    mappers, on 7.2 and 7.3 a hung task). A bind the kernel refuses raises."""
    if (devices / claim / "driver").exists():
        fd = None
        if devpath is not None and os.path.exists(devpath):
            try:
                fd = os.open(devpath, os.O_RDWR | os.O_EXCL)
            except OSError as e:
                raise PmemError(f"{devpath} is in use ({e.strerror}): unmount it before "
                                "the namespace is reset") from e
        try:
            (driver / "unbind").write_text(claim)
        finally:
            if fd is not None:
                os.close(fd)
    ledger.forget()  # the pages' memmap is gone with the unbind
    (driver / "bind").write_text(claim)


def reset(ns: Namespace) -> Namespace:
    """Give the namespace a new memmap: unbind and bind its pfn device.

    The bind runs pmem_attach_disk(), whose devm_memremap_pages() adds the
    range again and re-initialises every page of it (memmap_init_zone_device()),
    so the page flags a previous injection set, PG_hwpoison included, are gone
    and each scenario starts on clean pages; ndctl disable-namespace and
    enable-namespace reach the same pmem_attach_disk() by deleting the pfn
    device and probing the namespace again, at 0.44 s a call under TCG (libndctl
    walks the whole bus: six of a loop's 27 s went to ndctl). A namespace no pfn
    device claims is reset with ndctl. Software injection records no pmem bad
    blocks, so nothing else carries over.
    """
    claim = claim_of(ns) if ns.mode == "fsdax" else None
    waiter = BlockdevWaiter()
    try:
        try:
            if claim is not None:
                with _slow(f"unbind and bind {claim}"):
                    _rebind(claim, f"/dev/{ns.blockdev}" if ns.blockdev else None)
        except OSError as e:  # the bind refused: what ndctl makes of the namespace
            log.warning("binding %s to nd_pmem: %s; resetting %s with ndctl instead",
                        claim, e, ns.name)
            claim = None
        if claim is None:
            with _slow("ndctl disable-namespace"):
                ndctl("disable-namespace", ns.name)
            ledger.forget()
            with _slow("ndctl enable-namespace"):
                ndctl("enable-namespace", ns.name)
        if ns.blockdev:
            waiter.wait_add(ns.blockdev)
    finally:
        waiter.close()
    return lookup(ns.name)


SLOW_STEP_S = 5.0


@contextlib.contextmanager
def _slow(what: str) -> Iterator[None]:
    """Say when a namespace step takes long; in the VM, dump the blocked tasks then
    (sysrq w: their stacks go to the kernel log, and so to the test's dmesg), so
    a wait the kernel makes us do is seen where it waits."""
    def late() -> None:
        log.warning("%s still running after %.0f s", what, SLOW_STEP_S)
        if os.environ.get("MFINJECT_IN_VM") == "1":
            with contextlib.suppress(OSError):
                Path("/proc/sysrq-trigger").write_text("w")
    timer = threading.Timer(SLOW_STEP_S, late)
    timer.daemon = True
    start = time.monotonic()
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        took = time.monotonic() - start
        if took > SLOW_STEP_S:
            log.warning("%s took %.1f s", what, took)


def present(ns: Namespace) -> bool:
    """Whether the namespace's block device is there (bound to its driver)."""
    return ns.blockdev is not None and os.path.exists(f"/dev/{ns.blockdev}")


def badblocks(ns: Namespace) -> list[str]:
    path = Path(f"/sys/block/{ns.blockdev}/badblocks")
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()]


def bus_commands(ns: Namespace) -> str:
    """The commands the namespace's NVDIMM bus offers (ars_cap, clear_error, ...).

    Clearing a media error on a write needs ``clear_error`` (the ACPI Clear
    Uncorrectable Error function); an emulated or legacy bus may offer none.
    """
    node = Path(f"/sys/bus/nd/devices/{ns.name}").resolve()
    for d in (node, *node.parents):
        if d.name.startswith("ndbus"):
            try:
                return (d / "commands").read_text().strip() or "none"
            except OSError:
                return "unknown"  # unread is not "none": it says nothing about the bus
    return "unknown"


def data_start(ns: Namespace) -> int:
    """Physical address of sector 0 of the namespace's block device."""
    path = Path(f"/sys/block/{ns.blockdev}/device/resource")
    try:
        return int(path.read_text().strip(), 0)
    except OSError as e:
        raise PmemError(f"{path}: {e}: cannot place file offsets on {ns.name}") from e
