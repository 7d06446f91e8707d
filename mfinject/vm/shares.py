"""The guest imports Python through a page cache, and keeps its bytecode.

virtme-ng shares the host's root with the guest over 9p without caching:
every stat() and open() of an import is a round trip to the host, which
under TCG made the guest's pytest start take 12 s (0.4 s on the host).
Measured in a Debian 6.1 guest, 2 vCPUs, TCG:

    python -c pass                     1.8 s   ->  0.8 s with cache=loose
    pytest --collect-only tests/kernel 12.2 s  ->  7.9 s with cache=loose

So the host shares its root a second time, read-only (``vng --rodir``,
one 9p device: each share costs virtme-ng three of the kernel's 32 boot
environment variables, and a share per directory panicked the 6.1 guest
with "Too many boot env vars"); the guest remounts it with ``cache=loose``
and binds the directories Python imports from over their own paths, before
it starts pytest. The trees must not change during a run; they must not
anyway (a guest importing a tree being edited runs a mixture).

Bytecode: the guest's root is read-only, so Python compiled every module of
the suite on every boot, and pytest rewrote the asserts of every plugin
module (60 modules, 100 ms on the host, about 3 s under TCG). The guest
writes bytecode under ``PYTHONPYCACHEPREFIX``, a directory of the host's
cache shared read-write, so the next boot reuses it (Python checks each
file's source mtime and size, as in __pycache__).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

STAGING = "/run/mfinject/cached-root"
NINEP_OPTS = "ro,version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose"


def plan(paths: list[Path]) -> tuple[str, ...]:
    """The directories to cache, none inside another, in a stable order."""
    resolved = sorted({str(p.resolve()) for p in paths if p.is_dir()})
    return tuple(p for p in resolved
                 if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in resolved))


def import_dirs(suite: Path) -> list[Path]:
    """Where the guest's Python imports from: the interpreter, the venv, this package, the suite."""
    package = Path(__file__).resolve().parent.parent
    dirs = [Path(sys.base_prefix), Path(sys.prefix), package, suite]
    fixtures = package.parent / "fixtures"
    return dirs + ([fixtures] if fixtures.is_dir() else [])


def pycache_dir() -> Path:
    """Where the guest's bytecode is kept between boots (in the host's cache)."""
    from mfinject.vm.kernels import cache_dir
    path = cache_dir() / "pycache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def vng_args(pycache: Path) -> list[str]:
    return [f"--rodir={STAGING}=/", f"--rwdir={pycache}"]


def write_plan(dirs: tuple[str, ...], path: Path) -> None:
    path.write_text(json.dumps(list(dirs)))


def read_plan(path: Path) -> tuple[str, ...]:
    return tuple(json.loads(path.read_text()))


def mounts(text: str) -> list[tuple[str, str]]:
    """(source, mount point) of each line of /proc/self/mounts."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            out.append((fields[0], fields[1].replace("\\040", " ")))
    return out


def remount_cached(dirs: tuple[str, ...], mounts_text: str) -> list[str]:
    """Cache each planned directory in the guest; returns what was done, a line each.

    A directory that is a mount point already (virtme-ng's writable overlay of
    /usr, where Python is the system's) or has one below it is left uncached:
    a bind over it would hide that mount.
    Any failure leaves that directory as it was: speed is not worth a wrong run.
    """
    table = mounts(mounts_text)
    source = next((src for src, at in table if at == STAGING), None)
    if source is None:
        return [f"nothing cached: no share at {STAGING}"]
    failed = (_run(["umount", STAGING])
              or _run(["mount", "-t", "9p", "-o", NINEP_OPTS, source, STAGING]))
    if failed:
        return [f"nothing cached: {failed}"]
    said = []
    for d in dirs:
        below = [at for _, at in table if at == d or at.startswith(d.rstrip("/") + "/")]
        failed = (f"a mount at {below[0]} would be hidden" if below
                  else _run(["mount", "--bind", STAGING + d, d]))
        said.append(f"{d}: not cached ({failed})" if failed
                    else f"{d}: cached (9p cache=loose, {source})")
    return said


def _run(cmd: list[str]) -> str | None:
    """Run one mount step; None if it worked, else what failed."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    return None if r.returncode == 0 else f"{' '.join(cmd)}: {r.stderr.strip()}"


def guest_setup(plan_file: Path) -> list[str]:
    """In the guest, before pytest starts: cache what the host planned."""
    said = remount_cached(read_plan(plan_file), Path("/proc/self/mounts").read_text())
    os.chdir(os.getcwd())  # the current directory, through the binds just made
    return said
