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
it starts its first Python (cache-imports.sh: when Python did it, that
Python itself started uncached, 3 s from the script's start to pytest's).
The trees must not change during a run; they must not anyway (a guest
importing a tree being edited runs a mixture).

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
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

STAGING = "/run/mfinject/cached-root"


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


def precompile_rewritten(suite: Path, plugin_args: list[str]) -> str | None:
    """pytest's rewritten bytecode of the modules the guest's pytest rewrites
    (the plugin, its hooks and fixtures, the tests), made on the host.

    pytest reads that bytecode from __pycache__ even where it may not write
    it, and checks it against the source: without it the guest rewrote the
    asserts of nine modules at every boot (0.66 s under TCG, profiled). A host
    that sets PYTHONDONTWRITEBYTECODE (as this project's machines do) never
    writes it by itself, so the host collects the tests once, with the
    guest's plugins and that variable unset. Returns why it could not, for
    the log; the guest then rewrites them, as before.
    """
    # nothing of the user's: no device designated, no options added
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFINJECT_")
           and k not in ("PYTHONDONTWRITEBYTECODE", "PYTEST_ADDOPTS", "PYTHONPYCACHEPREFIX")}
    cmd = [sys.executable, "-m", "pytest", str(suite), "--collect-only", "-q", *plugin_args]
    try:
        r = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(cmd)}: {e}"
    return None if r.returncode == 0 else f"{' '.join(cmd)} exited {r.returncode}"


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
    """The plan as cache-imports.sh reads it: a directory a line."""
    path.write_text("".join(f"{d}\n" for d in dirs))


# run by the guest before its first Python (see the script's own comment)
SCRIPT = Path(__file__).resolve().parent / "cache-imports.sh"


def guest_prelude(plan_file: Path, said_file: Path) -> str:
    """The guest's shell command that caches the plan's directories, saying what it did
    in ``said_file`` (mfinject.vm.guest copies it into guest.log)."""
    return (f"bash {shlex.quote(str(SCRIPT))} {shlex.quote(STAGING)} "
            f"{shlex.quote(str(plan_file))} > {shlex.quote(str(said_file))} 2>&1")
