"""A debug kernel for the locking contract, built from Debian's own source.

``--kernel debian-debug:6.12`` (any release ``debian:`` knows) fetches the
``linux-source-X.Y`` package of the suite that ships that kernel (the same
version as its packaged image: Debian's patches applied), configures it as a
small VM kernel (virtme-ng's minimal config, ``virtme-configkernel
--defconfig``) plus what the suite needs and the debug options below, builds
it once with the host's cores and keeps it in the cache, keyed by the source
version and the configuration. Later runs reuse it.

What the debug options find, and what health.SPLATS reads from the log:
lockdep (PROVE_LOCKING: "possible circular locking dependency", "Invalid wait
context"), PROVE_RCU ("suspicious RCU usage": an RCU-protected pointer read
outside a read-side section, the very thing dax_lock_folio() must not do),
DEBUG_ATOMIC_SLEEP ("sleeping function called from invalid context"), KASAN
("BUG: KASAN: use-after-free ..."), DEBUG_VM (VM_BUG_ON / VM_WARN_ON) and
DEBUG_LIST. A WARN does not panic (PANIC_ON_OOPS off, panic_on_warn unset):
one splat must not end the run.

No debug information (DEBUG_INFO_NONE): it triples the link on two cores, and
the splats name functions through kallsyms anyway.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mfinject import hosttools
from mfinject.kernel import parse_config
from mfinject.vm import kernels
from mfinject.vm.kernels import Kernel, KernelResolveError

log = logging.getLogger(__name__)

PREFIX = "debian-debug:"
LOCALVERSION = "-mfinject-debug"

# What the suite needs from a kernel, beyond virtme-ng's minimal VM config
# (which turns XFS, ext4 and CRYPTO off: they are turned back on here).
NEEDS: tuple[str, ...] = (
    "CONFIG_MEMORY_FAILURE=y", "CONFIG_HWPOISON_INJECT=m", "CONFIG_TRANSPARENT_HUGEPAGE=y",
    "CONFIG_ZONE_DEVICE=y", "CONFIG_FS_DAX=y", "CONFIG_LIBNVDIMM=y", "CONFIG_BLK_DEV_PMEM=y",
    "CONFIG_NVDIMM_PFN=y", "CONFIG_NVDIMM_DAX=y", "CONFIG_ACPI_NFIT=y",
    "CONFIG_XFS_FS=y", "CONFIG_XFS_POSIX_ACL=y", "CONFIG_EXT4_FS=y",
    "CONFIG_MD=y", "CONFIG_BLK_DEV_DM=y", "CONFIG_DM_DELAY=m", "CONFIG_BLK_DEV_LOOP=m",
    "CONFIG_IO_URING=y", "CONFIG_FTRACE=y", "CONFIG_FUNCTION_TRACER=y", "CONFIG_DEBUG_FS=y",
    "CONFIG_X86_MCE=y", "CONFIG_X86_MCE_INTEL=y", "CONFIG_X86_MCE_AMD=y", "CONFIG_RAS=y",
    "CONFIG_ACPI_APEI=y", "CONFIG_ACPI_APEI_EINJ=m", "CONFIG_MAGIC_SYSRQ=y",
    "CONFIG_IKCONFIG=y", "CONFIG_IKCONFIG_PROC=y", "CONFIG_MODULES=y", "CONFIG_MODULE_SIG=n",
    "CONFIG_DETECT_HUNG_TASK=y", "CONFIG_SOFTLOCKUP_DETECTOR=y",
)
# The debug options: each must still be set after olddefconfig, or the build
# stops naming it (a dependency dropped it silently otherwise).
DEBUG: tuple[str, ...] = (
    "CONFIG_DEBUG_KERNEL=y", "CONFIG_PROVE_LOCKING=y", "CONFIG_PROVE_RCU=y",
    "CONFIG_DEBUG_ATOMIC_SLEEP=y", "CONFIG_DEBUG_VM=y", "CONFIG_DEBUG_LIST=y",
    "CONFIG_KASAN=y", "CONFIG_KASAN_GENERIC=y", "CONFIG_KASAN_INLINE=y",
    "CONFIG_PANIC_ON_OOPS=n", "CONFIG_BOOTPARAM_HUNG_TASK_PANIC=n",
    "CONFIG_DEBUG_INFO_NONE=y", "CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=n",
    f'CONFIG_LOCALVERSION="{LOCALVERSION}"', "CONFIG_LOCALVERSION_AUTO=n",
)
FRAGMENT = NEEDS + DEBUG


@dataclass(frozen=True)
class Source:
    spec: str  # debian-debug:6.12
    suite: str
    package: str  # linux-source-6.12
    version: str  # 6.12.118-1: the Debian version of the packaged image's source

    @property
    def key(self) -> str:
        digest = hashlib.sha256("\n".join(FRAGMENT).encode()).hexdigest()[:10]
        return f"{self.version}-{digest}"


def fragment_text() -> str:
    return "\n".join(f"# {o.split('=')[0]} is not set" if o.endswith("=n") else o
                     for o in FRAGMENT) + "\n"


def dropped(config: dict[str, str]) -> list[str]:
    """The fragment's options the final .config does not hold as asked."""
    out = []
    for item in FRAGMENT:
        name, want = item.split("=", 1)
        have = config.get(name)
        if (want == "n" and have not in (None, "n")) or (want != "n" and have != want):
            out.append(f"{item} (got {have or 'unset'})")
    return out


def _source(name: str) -> Source:
    spec = PREFIX + name
    if name in kernels.DEBIAN_KERNELS:
        dk = kernels.DEBIAN_KERNELS[name]
        root = kernels._apt_root(dk.suite, dk.security)
        kernels._apt(root, "update")
        image = kernels._image_package(root, dk.metapackage)
    elif re.fullmatch(r"\d+\.\d+", name):
        dk, root, image = kernels._find_moving(name)
    else:
        raise KernelResolveError(
            f"unknown Debian kernel {name!r}: choose one of "
            + ", ".join(PREFIX + k for k in kernels.DEBIAN_KERNELS) + f", or {PREFIX}X.Y")
    m = re.match(r"linux-image-(\d+\.\d+)", image)
    if not m:
        raise KernelResolveError(f"{spec}: cannot tell the release of {image}")
    package = f"linux-source-{m.group(1)}"
    policy = kernels._apt(root, "policy", package)
    cand = re.search(r"Candidate:\s*(\S+)", policy)
    if not cand or cand.group(1) == "(none)":
        raise KernelResolveError(f"{spec}: {dk.suite} has no {package} package to build from")
    return Source(spec, dk.suite, package, cand.group(1))


def _run(cmd: list[str], logf: Path, cwd: Path, what: str) -> None:
    log.info("+ %s", " ".join(cmd))
    with logf.open("a") as out:
        out.write(f"\n+ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(logf.read_text(errors="replace").splitlines()[-25:])
        raise KernelResolveError(f"{what} failed (exit {proc.returncode}); the end of {logf}:\n"
                                 f"{tail}")


def _unpack_source(src: Source, root: Path, logf: Path) -> Path:
    """The unpacked tree of Debian's linux-source package (patched already)."""
    tree_parent = kernels.cache_dir() / "build" / f"src-{src.version}"
    tree = tree_parent / src.package
    if (tree / "Makefile").exists():
        return tree
    debs = root / "debs"
    debs.mkdir(exist_ok=True)
    if not list(debs.glob(f"{src.package}_{src.version}_*.deb")):
        kernels._apt(root, "download", f"{src.package}={src.version}")
        for deb in root.glob(f"{src.package}_*.deb"):
            deb.replace(debs / deb.name)
    deb = next(debs.glob(f"{src.package}_{src.version}_*.deb"))
    pkg = tree_parent / "pkg"
    pkg.mkdir(parents=True, exist_ok=True)
    _run(["dpkg", "-x", str(deb), str(pkg)], logf, tree_parent, "dpkg -x")
    tarball = next((pkg / "usr" / "src").glob(f"{src.package}.tar.*"))
    _run(["tar", "-xf", str(tarball), "-C", str(tree_parent)], logf, tree_parent,
         f"unpacking {tarball.name}")
    shutil.rmtree(pkg)
    return tree


def configkernel() -> str:
    beside = Path(sys.executable).parent / "virtme-configkernel"
    found = str(beside) if beside.exists() else shutil.which("virtme-configkernel")
    if not found:
        raise KernelResolveError("virtme-configkernel not found: run scripts/setup "
                                 "(pip install 'mfinject[vm]')")
    return found


def _configure(tree: Path, obj: Path, logf: Path) -> dict[str, str]:
    obj.mkdir(parents=True, exist_ok=True)
    frag = obj / "mfinject.config"
    frag.write_text(fragment_text())
    _run([configkernel(), "--defconfig", "--custom", str(frag), f"O={obj}"], logf, tree,
         "virtme-configkernel --defconfig")
    # virtme-ng appends its own list after ours; the fragment goes last again
    with (obj / ".config").open("a") as cfg:
        cfg.write("\n" + fragment_text())
    _run(["make", f"O={obj}", "olddefconfig"], logf, tree, "make olddefconfig")
    config = parse_config((obj / ".config").read_text())
    lost = dropped(config)
    if lost:
        raise KernelResolveError(
            "the debug kernel's configuration lost " + ", ".join(lost)
            + f" (see {obj / '.config'}): a dependency is missing; add it to "
            "mfinject/vm/debugkernel.py NEEDS")
    return config


def _build(src: Source, root: Path) -> Kernel:
    build = kernels.cache_dir() / "build"
    obj = build / f"obj-{src.key}"
    dest = kernels.cache_dir() / "kernels" / f"debian-debug-{src.key}"
    logf = obj.parent / f"build-{src.key}.log"
    obj.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tree = _unpack_source(src, root, logf)
    _configure(tree, obj, logf)
    jobs = str(os.cpu_count() or 1)
    print(f"mfinject: building {src.spec} ({src.package} {src.version}, lockdep, KASAN, "
          f"DEBUG_VM) with {jobs} jobs; log: {logf}", flush=True)
    _run(["make", f"O={obj}", f"-j{jobs}", "bzImage", "modules"], logf, tree, "the kernel build")
    release = subprocess.run(["make", "-s", f"O={obj}", "kernelrelease"], cwd=tree,
                             capture_output=True, text=True, check=True).stdout.strip()
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "boot").mkdir(parents=True)
    _run(["make", f"O={obj}", f"INSTALL_MOD_PATH={dest}", "INSTALL_MOD_STRIP=1",
          "modules_install"], logf, tree, "make modules_install")
    shutil.copy(obj / "arch" / "x86" / "boot" / "bzImage", dest / "boot" / f"vmlinuz-{release}")
    shutil.copy(obj / ".config", dest / "boot" / f"config-{release}")
    shutil.copy(obj / "System.map", dest / "boot" / f"System.map-{release}")
    seconds = round(time.monotonic() - started)
    (dest / "build.json").write_text(json.dumps({
        "spec": src.spec, "package": src.package, "version": src.version, "release": release,
        "build_seconds": seconds, "jobs": int(jobs), "fragment": list(FRAGMENT)}, indent=1))
    print(f"mfinject: built {release} in {seconds} s ({dest})", flush=True)
    return kernels._unpacked(src.spec, dest)


def resolve(spec: str, *, refresh: bool = False) -> Kernel:
    """debian-debug:X.Y -> the debug kernel of that release, built on first use."""
    name = spec.removeprefix(PREFIX)
    errs, _ = hosttools.preflight((hosttools.BUILD,))
    if errs:
        raise KernelResolveError(f"{spec} is built here, and " + "; ".join(errs))
    marker = kernels.cache_dir() / "kernels" / f"debian-debug-{name}.json"
    try:
        src = _source(name)
    except KernelResolveError as e:  # offline: the last build of this release, if any
        if marker.exists() and Path(json.loads(marker.read_text())["vmlinuz"]).exists():
            log.warning("%s: %s; using the last build", spec, e)
            data = json.loads(marker.read_text())
            return Kernel(spec, data["release"], Path(data["vmlinuz"]), Path(data["modules"]))
        raise
    dest = kernels.cache_dir() / "kernels" / f"debian-debug-{src.key}"
    build = kernels.cache_dir() / "build"
    build.mkdir(parents=True, exist_ok=True)
    with (build / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a second run waits, then reuses
        if not refresh and (dest / "build.json").exists():
            log.info("kernel %s: cached %s", spec, dest)
            kernel = kernels._unpacked(spec, dest)
        else:
            dk = kernels.DEBIAN_KERNELS.get(name)
            kernel = _build(src, kernels._apt_root(src.suite, dk.security if dk else False))
    marker.write_text(kernel.to_json())
    return kernel


def build_info(kernel: Kernel) -> dict[str, object] | None:
    """What build.json recorded for a debug kernel (None for any other kernel)."""
    path = kernel.vmlinuz.parent.parent / "build.json"
    return json.loads(path.read_text()) if path.exists() else None
