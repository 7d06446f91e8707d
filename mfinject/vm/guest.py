"""The guest side of a VM run: find the emulated namespace and run pytest.

Run as ``python -m mfinject.vm.guest --results DIR --tests PATH``. The console
of a virtme-ng guest is garbled, so everything goes to files in DIR, which the
host shares with the guest read-write: guest.log (pytest's output),
results.json, junit.xml, and guest-exit (pytest's exit code).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import TextIO

from mfinject import mce, pmem


# The filesystems' modules, loaded while pytest starts (7 s under TCG) rather than
# at the first mount: the function tracer then finds xfs_dax_notify_failure when
# it starts, instead of re-patching the kernel's text once xfs.ko appears
# (mfinject.observers.ftrace.MODULE_OF), and the load overlaps pytest's imports.
PRELOAD = ("xfs", "ext4")


def preload_modules() -> subprocess.Popen[bytes] | None:
    try:
        return subprocess.Popen(["modprobe", "-a", *PRELOAD], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None  # no modprobe: the first mount loads them


def pytest_forked(argv: list[str], env: dict[str, str], logf: TextIO) -> int:
    """pytest.main(argv) in a child forked from this process; its exit status.

    Not a new interpreter: starting one costs about 1 s under TCG, on every
    boot. A child, not this process, because the session may end with
    os._exit() (a task hung in the kernel: mfinject.hooks.kernel_hung), and
    guest-exit must still say how it ended.
    """
    logf.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(logf.fileno(), 1)
            os.dup2(logf.fileno(), 2)
            # whatever stood for them before (pytest's capture, in a unit test)
            sys.stdout = open(1, "w", buffering=1, closefd=False,  # noqa: SIM115
                              errors="backslashreplace")
            sys.stderr = open(2, "w", buffering=1, closefd=False,  # noqa: SIM115
                              errors="backslashreplace")
            os.environ.clear()
            os.environ.update(env)
            import pytest
            code = int(pytest.main(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the child never returns into main()
            import traceback
            traceback.print_exc()
        finally:
            # what an interpreter does before it exits, as multiprocessing's forked
            # children do: wait for the threads that are not daemons (a planted
            # crash's timer, mfinject.vm.planted), flush
            threading._shutdown()  # type: ignore[attr-defined]
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _lines_of(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError as e:
        return [f"the import cache said nothing ({e})"]


def _reap(proc: subprocess.Popen[bytes] | None, logf: TextIO) -> None:
    if proc is None:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        logf.write(f"guest: modprobe -a {' '.join(PRELOAD)} still runs after pytest ended\n")


def plugin_args(tests: str, planted: bool = False) -> list[str]:
    """The plugins of the guest's pytest, the same for the host's precompile
    (mfinject.vm.shares.precompile_rewritten): which modules pytest rewrites.

    Only mfinject's plugin, named: pytest then rewrites the asserts of
    mfinject.plugin alone, not of every module of the distribution (the flag,
    not PYTEST_DISABLE_PLUGIN_AUTOLOAD: a test's own pytest subprocess would
    inherit that, and lose the plugin). No conftest above the tests (the unit
    tests' pytester), no unittest or pdb: nothing in the guest uses them, and
    their imports cost about 0.3 s under TCG.
    """
    return ["--disable-plugin-autoload", "-p", "mfinject.plugin", "-p", "no:cacheprovider",
            "-p", "no:unittest", "-p", "no:debugging", f"--confcutdir={tests}",
            *(["-p", "mfinject.vm.planted"] if planted else [])]


# The device a pmem owner's command names (README.md); the VM's namespace plays it.
README_DEVICE = "/dev/pmem1"


def like_a_real_machine(ns: str) -> str:
    """The namespace as a pmem owner has it: fsdax mode, holding a filesystem.

    Returns its device path. On a real machine the namespace was set up long
    before the suite runs; the README's command must work on that.
    """
    from mfinject import fs
    found = pmem.ensure_fsdax(pmem.lookup(ns), may_reconfigure=True)
    devpath = f"/dev/{found.blockdev}"
    fs.mkfs(fs.FS_KINDS["ext4"], devpath)
    return devpath


def _command(args: argparse.Namespace, ns: str | None, logf: object) -> list[str]:
    """The pmem owner's command line, as written, with the VM's device in it."""
    if ns is None:
        return ["bash", "-c", "echo 'guest: no namespace for the command' >&2; exit 2"]
    from mfinject.errors import MfinjectError
    try:
        devpath = like_a_real_machine(ns)
    except MfinjectError as e:
        return ["bash", "-c", f"echo {shlex.quote(f'guest: preparing {ns}: {e}')} >&2; exit 2"]
    cmd = args.command.removeprefix("sudo ").replace(README_DEVICE, devpath)
    logf.write(f"guest: {ns} in fsdax mode holding ext4 on {devpath}; running, in "
               f"{args.cwd}: {cmd}\n")
    return ["bash", "-c", cmd]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The guest's arguments; those of pytest from --args-file first, then after --."""
    ap = argparse.ArgumentParser(prog="mfinject.vm.guest")
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--tests", required=True)
    ap.add_argument("--log", default="guest.log", help="name of the log file in RESULTS")
    ap.add_argument("--command", help="run this pmem owner's command line (README.md) instead, "
                    f"{README_DEVICE} standing for the VM's namespace; pytest_args go to "
                    "PYTEST_ADDOPTS")
    ap.add_argument("--cwd", help="directory to run --command in")
    ap.add_argument("--args-file", type=Path,
                    help="a JSON list of pytest arguments, put before any given after --")
    ap.add_argument("--shares-said", type=Path,
                    help="what the guest's import cache did, a line each (mfinject.vm.shares)")
    ap.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.pytest_args[:1] == ["--"]:
        args.pytest_args = args.pytest_args[1:]
    if args.args_file is not None:
        args.pytest_args = [*json.loads(args.args_file.read_text()), *args.pytest_args]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    log_path = args.results / args.log
    with log_path.open("w", buffering=1) as logf:
        logf.write(f"guest: kernel {os.uname().release}, python {sys.version.split()[0]}\n")
        if args.shares_said is not None:
            for line in _lines_of(args.shares_said):
                logf.write(f"guest: {line}\n")
        preload = preload_modules()
        found = pmem.namespaces()
        ns, spares = (found[0], found[1:]) if found else (None, [])
        if ns is None:
            logf.write(f"guest: no pmem namespace in the VM (none with a size under "
                       f"{pmem.ND_DEVICES}): the emulated NVDIMM did not come up\n")
        planted = bool(os.environ.get("MFINJECT_PLANT_CRASH"))
        pytest_argv = [args.tests, "-v", *plugin_args(args.tests, planted), "--color=no",
                       f"--junitxml={args.results / 'junit.xml'}",
                       f"--mfinject-results={args.results}", "--mfinject-disposable",
                       *([f"--mfinject-device={ns}"] if ns else []),
                       *([f"--mfinject-spare-devices={','.join(spares)}"] if spares else []),
                       *args.pytest_args]
        if not args.command:
            logf.write("guest: " + " ".join([sys.executable, "-m", "pytest", *pytest_argv])
                       + " (forked)\n")
        progress = args.results / "progress.log"
        with progress.open("a") as f:
            f.write(f"guest up: kernel {os.uname().release}, namespace {ns} "
                    f"[up {Path('/proc/uptime').read_text().split()[0]} s]\n")
        env = dict(os.environ, MFINJECT_REQUIRE_PMEM="1", PYTHONDONTWRITEBYTECODE="1",
                   MFINJECT_PROGRESS=str(progress))
        if (args.results / "mce").is_dir():  # the host's machine-check relay (mfinject.mce)
            env[mce.ENV_DIR] = str(args.results / "mce")
        if args.command:
            env.update(MFINJECT_RESULTS=str(args.results), PYTEST_ADDOPTS=shlex.join(
                ["-v", "-p", "no:cacheprovider", "--color=no", *args.pytest_args]))
            rc = subprocess.run(_command(args, ns, logf), stdout=logf, stderr=subprocess.STDOUT,
                                env=env, cwd=args.cwd, check=False).returncode
        else:
            rc = pytest_forked(pytest_argv, env, logf)
        logf.write(f"guest: pytest exited {rc}\n")
        _reap(preload, logf)
    (args.results / "guest-exit").write_text(f"{rc}\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
