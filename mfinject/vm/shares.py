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

Bytecode: the guest's root is read-only, so the guest compiled every module
of the suite on every boot that the host had not compiled: the host
compiles them before it boots the guest (``precompile``). pytest also
rewrote the asserts of every module of mfinject, because an entry-point
plugin's whole distribution is marked for rewriting (60 modules, 100 ms on
the host, about 3 s under TCG): the guest loads the plugin with
``-p mfinject.plugin`` and plugin autoloading off, which marks only that
module. (A PYTHONPYCACHEPREFIX on a read-write share was tried and was
slower: Python then ignores every __pycache__, the interpreter's included,
and reads and writes all bytecode through an uncached share.)
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
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


def suite_dirs(suite: Path) -> list[Path]:
    """The suite's own modules: this package, the fixtures, the in-guest tests."""
    package = Path(__file__).resolve().parent.parent
    fixtures = package.parent / "fixtures"
    return [package, suite, *([fixtures] if fixtures.is_dir() else [])]


def import_dirs(suite: Path) -> list[Path]:
    """Where the guest's Python imports from: the interpreter, the venv, the suite's own."""
    return [Path(sys.base_prefix), Path(sys.prefix), *suite_dirs(suite)]


def precompile(dirs: list[Path]) -> None:
    """Compile the suite's own modules on the host, where __pycache__ is writable."""
    for d in dirs:
        compileall.compile_dir(d, quiet=2, workers=1)


VIRTIOFSD_PATHS = ("/usr/libexec/virtiofsd", "/usr/lib/virtiofsd/virtiofsd", "/usr/lib/virtiofsd",
                   "/usr/lib/qemu/virtiofsd")


def rust_virtiofsd() -> str | None:
    """A virtiofsd that virtme-ng can start: the Rust one (its --help has --shared-dir)."""
    for path in (shutil.which("virtiofsd"), *VIRTIOFSD_PATHS):
        if path and os.access(path, os.X_OK):
            try:
                out = subprocess.run([path, "--help"], capture_output=True, text=True,
                                     timeout=10, check=False).stdout
            except OSError:
                continue
            if "--shared-dir" in out:
                return path
    return None


def vng_args() -> list[str]:
    """The second share, and 9p for every share unless a Rust virtiofsd is there.

    QEMU 7.2's C virtiofsd (Debian 12's /usr/lib/qemu/virtiofsd) answers
    ``--version``, so virtme-ng picks it, starts it with the Rust daemon's
    options, waits 3.1 s for a pid file that never comes and falls back to
    9p: for the root and again for each --rwdir and --rodir (measured: a bare
    boot with one extra share took 28 s instead of 21 s).
    """
    return [f"--rodir={STAGING}=/", *([] if rust_virtiofsd() else ["--force-9p"])]


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
