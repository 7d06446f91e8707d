"""Kernel resolution: a SPEC names a kernel; the result is an unpacked vmlinuz.

- ``debian:6.1`` (the default), ``debian:6.12``: Debian's packaged kernel of
  that stable release; ``debian:unstable``, ``debian:backports``: whatever
  sid or trixie-backports ships now; ``debian:X.Y`` (e.g. ``debian:7.3``):
  the moving suite that ships X.Y now. Each is downloaded with apt-get through a sources list kept in the
  cache (never /etc/apt), unpacked with ``dpkg -x`` and never installed.
- a path to a vmlinuz: an x86 bzImage, whose boot header names its RELEASE;
  the modules of that release must sit beside it, either in
  ``../lib/modules/RELEASE`` (a Debian package layout) or in the same
  directory as the vmlinuz (``usr/lib/modules/RELEASE/vmlinuz``, 7.x layout).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mfinject.errors import MfinjectError
from mfinject.kernel import missing_config, parse_config

log = logging.getLogger(__name__)

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class KernelResolveError(MfinjectError):
    pass


@dataclass(frozen=True)
class Kernel:
    spec: str
    release: str
    vmlinuz: Path
    modules: Path  # .../lib/modules/RELEASE

    def to_json(self) -> str:
        return json.dumps({"spec": self.spec, "release": self.release,
                           "vmlinuz": str(self.vmlinuz), "modules": str(self.modules)})


@dataclass(frozen=True)
class DebianKernel:
    name: str  # the release in the SPEC, e.g. "6.1"
    suite: str
    metapackage: str = "linux-image-amd64"
    security: bool = False  # stable suites get kernel updates through SUITE-security


DEBIAN_KERNELS = {
    k.name: k
    for k in (
        DebianKernel("6.1", "bookworm", security=True),
        DebianKernel("6.12", "trixie", security=True),
        DebianKernel("unstable", "sid"),
        DebianKernel("backports", "trixie-backports"),
    )
}
# Suites searched for a release that is not pinned above (e.g. debian:7.3):
# the first whose linux-image-amd64 ships that release wins.
MOVING_SUITES = ("trixie-backports", "sid")
DEFAULT_SPEC = "debian:6.1"


def cache_dir() -> Path:
    base = os.environ.get("MFINJECT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mfinject")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def host_mirrors() -> tuple[str, str | None]:
    """The Debian mirror (and security mirror) the host's apt already uses."""
    candidates: list[str] = []
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        candidates += re.findall(r"^URIs:\s*(\S+)", f.read_text(), re.MULTILINE)
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if f.exists():
            candidates += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", f.read_text(), re.MULTILINE)
    main = next((u.rstrip("/") for u in candidates if u.rstrip("/").endswith("/debian")), None)
    security = next((u.rstrip("/") for u in candidates
                     if u.rstrip("/").endswith("/debian-security")), None)
    if main:
        return main, security
    raise KernelResolveError(
        "no Debian mirror in /etc/apt: add one to /etc/apt/sources.list.d, "
        "or give --kernel PATH/TO/vmlinuz"
    )


def _apt(root: Path, *args: str) -> str:
    opts = [
        "-o", f"Dir::Etc::sourcelist={root / 'sources.list'}",
        "-o", "Dir::Etc::sourceparts=-",
        "-o", f"Dir::State::Lists={root / 'lists'}",
        "-o", f"Dir::Cache={root / 'cache'}",
        "-o", "APT::Get::List-Cleanup=0",
        "-o", "Debug::NoLocking=1",
    ]
    cmd = ["apt-get" if args[0] in ("update", "download") else "apt-cache", *opts, *args]
    log.info("+ %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=900, check=False)
    if proc.returncode != 0:
        raise KernelResolveError(f"{' '.join(cmd[:1] + list(args))} failed: {proc.stderr.strip()}")
    return proc.stdout


def _apt_root(suite: str, security: bool) -> Path:
    root = cache_dir() / "apt" / suite
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    main, security_mirror = host_mirrors()
    lines = [f"deb [signed-by={KEYRING}] {main} {suite} main"]
    if security and security_mirror:
        lines.append(f"deb [signed-by={KEYRING}] {security_mirror} {suite}-security main")
    (root / "sources.list").write_text("\n".join(lines) + "\n")
    return root


def _image_package(root: Path, metapackage: str) -> str:
    out = _apt(root, "depends", metapackage)
    deps = re.findall(r"Depends:\s*(linux-image-\S+)", out)
    if not deps:
        raise KernelResolveError(f"{metapackage} names no linux-image package: {out!r}")
    return deps[0]


def _extra_packages(root: Path, image: str) -> list[str]:
    """From 7.x the image package is split: vmlinuz and modules come separately."""
    out = _apt(root, "depends", image)
    return re.findall(r"Depends:\s*(linux-(?:binary|modules|base)-\d\S*)", out)


def _is_module_tree(d: Path) -> bool:
    return (d / "modules.dep").exists() or (d / "modules.order").exists() or \
        (d / "kernel").is_dir()


def find_modules(vmlinuz: Path, release: str) -> Path:
    """The modules tree of ``release`` beside a vmlinuz, in either package layout.

    The tree must be named after the release: a directory that merely holds
    modules (``/etc`` holds ``kernel/``) belongs to no particular kernel.
    """
    top = vmlinuz.parent.parent
    for cand in (vmlinuz.parent, top / "lib" / "modules" / release,
                 top / "usr" / "lib" / "modules" / release):
        if cand.name == release and _is_module_tree(cand):
            return cand
    others = sorted({d.name for d in (vmlinuz.parent, *(top / "lib" / "modules").glob("*"),
                                      *(top / "usr" / "lib" / "modules").glob("*"))
                     if d.is_dir() and _is_module_tree(d)})
    found = f" (only those of {', '.join(others[:4])}, another kernel)" if others else ""
    raise KernelResolveError(
        f"no modules of {release} found for {vmlinuz}{found}: put them in "
        f"../lib/modules/{release} beside the vmlinuz (the layout dpkg -x leaves), "
        "or use --kernel debian:VERSION"
    )


BOOT_MAGIC_AT = 0x202  # "HdrS": the x86 boot protocol header (Documentation/arch/x86/boot.rst)
KERNEL_VERSION_AT = 0x20E  # u16 pointer to the version string, minus 0x200
HEADER_READ = 0x10200 + 512  # the pointer is 16 bits: the string lies within this


def image_release(path: Path, spec: str) -> str:
    """The release an x86 bzImage announces in its boot header, e.g. ``6.1.0-56-amd64``."""
    fix = "give the vmlinuz of an x86 kernel, or --kernel debian:6.1"
    try:
        with path.open("rb") as f:
            head = f.read(HEADER_READ)
    except OSError as e:
        raise KernelResolveError(f"--kernel {spec}: cannot read it ({e.strerror}): "
                                 "check its permissions, or give --kernel debian:6.1") from e
    if head[BOOT_MAGIC_AT:BOOT_MAGIC_AT + 4] != b"HdrS":
        raise KernelResolveError(f"--kernel {spec} is not a bzImage (no 'HdrS' boot header): {fix}")
    pointer = int.from_bytes(head[KERNEL_VERSION_AT:KERNEL_VERSION_AT + 2], "little")
    text = head[pointer + 0x200:].split(b"\0", 1)[0] if pointer else b""
    release = text.decode("ascii", "replace").split(" ", 1)[0]
    if not re.fullmatch(r"\d+\.\d+[\w.+~-]*", release):
        raise KernelResolveError(
            f"--kernel {spec} has a boot header but no kernel release in it "
            f"(version string {text[:60]!r}): {fix}")
    return release


def _unpacked(spec: str, root: Path) -> Kernel:
    images = sorted(root.glob("boot/vmlinuz-*")) + sorted(root.glob("usr/lib/modules/*/vmlinuz"))
    if not images:
        raise KernelResolveError(f"no vmlinuz in {root}")
    vmlinuz = images[-1]
    release = vmlinuz.name.removeprefix("vmlinuz-") if vmlinuz.name != "vmlinuz" \
        else vmlinuz.parent.name
    modules = find_modules(vmlinuz, release)
    if not (modules / "modules.dep").exists():
        subprocess.run(["depmod", "-b", str(modules.parent.parent.parent), release], check=False)
    return Kernel(spec, release, vmlinuz, modules)


def _find_moving(name: str) -> tuple[DebianKernel, Path, str]:
    """debian:7.3 -> the suite whose current kernel is 7.3.x."""
    seen = []
    for suite in MOVING_SUITES:
        root = _apt_root(suite, False)
        _apt(root, "update")
        image = _image_package(root, "linux-image-amd64")
        seen.append(f"{suite}: {image}")
        if re.match(rf"linux-image-{re.escape(name)}[.-]", image):
            return DebianKernel(name, suite), root, image
    raise KernelResolveError(
        f"no Debian suite ships a {name} kernel now ({'; '.join(seen)}): choose one of "
        + ", ".join(f"debian:{k}" for k in DEBIAN_KERNELS) + ", a release listed here, "
        "or a path to a vmlinuz")


def resolve_debian(name: str, *, refresh: bool = False) -> Kernel:
    spec = f"debian:{name}"
    if name not in DEBIAN_KERNELS and not re.fullmatch(r"\d+\.\d+", name):
        raise KernelResolveError(
            f"unknown Debian kernel {name!r}: choose one of "
            + ", ".join(f"debian:{k}" for k in DEBIAN_KERNELS)
            + ", debian:X.Y for a release a moving suite ships, or a path to a vmlinuz")
    marker = cache_dir() / "kernels" / f"debian-{name}.json"
    if marker.exists() and not refresh:
        data = json.loads(marker.read_text())
        if Path(data["vmlinuz"]).exists():
            log.info("kernel %s: cached %s", spec, data["vmlinuz"])
            return Kernel(spec, data["release"], Path(data["vmlinuz"]), Path(data["modules"]))
    if name in DEBIAN_KERNELS:
        dk = DEBIAN_KERNELS[name]
        root = _apt_root(dk.suite, dk.security)
        _apt(root, "update")
        image = _image_package(root, dk.metapackage)
    else:
        dk, root, image = _find_moving(name)
    print(f"mfinject: fetching {image} from {dk.suite} for {spec}", flush=True)
    pkgs = [image, *_extra_packages(root, image)]
    dest = cache_dir() / "kernels" / image
    debs = root / "debs"
    debs.mkdir(exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in pkgs:
        if not list(debs.glob(f"{pkg}_*.deb")):
            _apt(root, "download", pkg)
            for deb in root.glob(f"{pkg}_*.deb"):
                deb.replace(debs / deb.name)
        for deb in debs.glob(f"{pkg}_*.deb"):
            log.info("unpacking %s into %s", deb.name, dest)
            subprocess.run(["dpkg", "-x", str(deb), str(dest)], check=True)
    kernel = _unpacked(spec, dest)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(kernel.to_json())
    return kernel


def config_path(kernel: Kernel) -> Path | None:
    for cand in (kernel.vmlinuz.parent / f"config-{kernel.release}", kernel.modules / "config",
                 kernel.modules.parent.parent.parent / "boot" / f"config-{kernel.release}"):
        if cand.exists():
            return cand
    return None


def check_config(kernel: Kernel) -> Kernel:
    """Refuse a kernel whose shipped config lacks what the suite needs."""
    path = config_path(kernel)
    if path is None:
        log.warning("no config beside %s: the guest will probe the kernel instead", kernel.vmlinuz)
        return kernel
    missing = missing_config(parse_config(path.read_text()))
    if missing:
        raise KernelResolveError(
            f"kernel {kernel.spec} lacks {', '.join(missing)} (per {path}): rebuild it with "
            + " ".join(f"{m}=y" for m in missing) + ", or use --kernel debian:6.1")
    return kernel


def resolve(spec: str) -> Kernel:
    return check_config(_resolve(spec))


def _resolve(spec: str) -> Kernel:
    if spec.startswith("debian-debug:"):
        from mfinject.vm import debugkernel  # it imports this module
        return debugkernel.resolve(spec)
    if spec.startswith("debian:"):
        return resolve_debian(spec.removeprefix("debian:"))
    path = Path(spec).expanduser()
    if path.is_dir():
        raise KernelResolveError(f"--kernel {spec} is a directory: give the vmlinuz in it "
                                 "(boot/vmlinuz-RELEASE), or --kernel debian:6.1")
    if not path.is_file():
        raise KernelResolveError(
            f"--kernel {spec}: no such file; give debian:VERSION or the path to a vmlinuz")
    release = image_release(path, spec)
    modules = find_modules(path, release)
    return Kernel(str(path), release, path.resolve(), modules)
