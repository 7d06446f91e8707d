"""Boot a kernel with an emulated NVDIMM under virtme-ng and run the suite inside.

"Same userspace as the host, different kernel": virtme-ng shares the host's
root filesystem with the guest, so the guest runs this very checkout and its
virtualenv. One boot per kernel runs every scenario; results come back
through a ``--rwdir`` results directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from mfinject.errors import MfinjectError
from mfinject.expectations.model import CRASHED
from mfinject.results import ScenarioResult, append_jsonl
from mfinject.vm.kernels import Kernel, cache_dir, config_path

log = logging.getLogger(__name__)

GUEST_MEMORY = "2G"
NVDIMM_SIZE = "1G"
KVM_PROBE_TIMEOUT_S = 60.0
DEFAULT_TIMEOUT_S = 1800.0
VM_CPUS = 2
MAX_BOOT_FAILURES = 2  # guests that die before any test reports, per kernel
# A test during which the guest died is run once more in a fresh VM before it
# is recorded as crashed: under TCG a 7.3 guest was seen to die now and then
# in int3 text patching ("Oops: int3" in __schedule, also while booting), which
# is not the test's doing. A test that crashes twice is recorded as crashed;
# one that passes on the retry keeps the first console and says so.
CRASH_RETRIES = 1
POWEROFF_GRACE_S = 30.0
# guest RAM + the NVDIMM backing file in the page cache + QEMU itself
VM_FOOTPRINT = (2 << 30) + (1 << 30) + (512 << 20)


class VmError(MfinjectError):
    pass


@dataclass(frozen=True)
class VmOptions:
    pmem: str = "nfit"  # "nfit": ACPI NFIT -device nvdimm; "memmap": legacy e820 memmap=
    accel: str = "auto"  # auto, kvm, tcg
    timeout_s: float = DEFAULT_TIMEOUT_S  # the whole run of one kernel
    test_timeout_s: float = 300.0  # one test, from its start line (TCG runs one in ~5 s)
    max_boots: int = 6
    crash_test: bool = False
    pytest_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuestRun:
    kernel: Kernel
    accel: str
    accel_reason: str
    results_dir: Path
    exit_code: int | None  # the guest pytest's, None if it never reported
    timed_out: bool
    elapsed_s: float


def vng_path() -> str:
    exe = shutil.which("vng", path=os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
    if exe is None:
        raise VmError("vng not found: install virtme-ng (scripts/setup does it: pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64") is None:
        raise VmError("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    return exe


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # vng runs virtme-run from PATH: make the venv's scripts visible
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def vng_command(kernel: Kernel, rwdir: Path, exec_cmd: str, *, accel: str, pmem: str,
                image: Path) -> list[str]:
    cmd = [vng_path()]
    if accel == "tcg":
        cmd.append("--disable-kvm")
    # --verbose puts the guest kernel's console into console.log (crash evidence)
    cmd += ["--verbose", "--run", str(kernel.vmlinuz), "--memory", GUEST_MEMORY, "--cpus",
            str(VM_CPUS), f"--rwdir={rwdir}"]
    if pmem == "nfit":
        cmd.append(
            "--qemu-opts=-machine nvdimm=on -m 2G,slots=2,maxmem=6G "
            f"-object memory-backend-file,id=nv0,share=on,mem-path={image},size={NVDIMM_SIZE} "
            "-device nvdimm,id=nvdimm0,memdev=nv0 -no-reboot"
        )
    elif pmem == "memmap":
        # 512 MiB of guest RAM starting at 1 GiB becomes a legacy e820 pmem region
        cmd += ["--append", "memmap=512M!1G", "--qemu-opts=-no-reboot"]
    else:
        raise VmError(f"unknown pmem kind {pmem!r}: use nfit or memmap")
    cmd += ["--append", "panic=-1 oops=panic", "--exec", exec_cmd]
    return cmd


def _probe_kvm(kernel: Kernel) -> tuple[bool, str]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "no usable /dev/kvm"
    marker = cache_dir() / "accel" / f"{os.uname().release}--{kernel.release}.json"
    if marker.exists():
        data = json.loads(marker.read_text())
        return data["kvm"], data["reason"] + " (cached in " + str(marker) + ")"
    probe_dir = cache_dir() / "accel" / "probe"
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe_dir.mkdir(parents=True)
    cmd = [vng_path(), "--run", str(kernel.vmlinuz), "--memory", "1G", f"--rwdir={probe_dir}",
           "--exec", f"echo ok > {probe_dir}/ok"]
    print(f"mfinject: probing KVM with {kernel.release} (up to {KVM_PROBE_TIMEOUT_S:.0f} s)",
          flush=True)
    t0 = time.monotonic()
    ok = False
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=_env(), start_new_session=True) as proc:
        try:
            proc.wait(timeout=KVM_PROBE_TIMEOUT_S)
            ok = (probe_dir / "ok").exists()
        except subprocess.TimeoutExpired:
            _kill_group(proc)
    took = time.monotonic() - t0
    reason = (f"KVM booted {kernel.release} in {took:.0f} s" if ok else
              f"KVM did not boot {kernel.release} within {KVM_PROBE_TIMEOUT_S:.0f} s")
    marker.write_text(json.dumps({"kvm": ok, "reason": reason}))
    return ok, reason


def choose_accel(kernel: Kernel, requested: str) -> tuple[str, str]:
    if requested in ("kvm", "tcg"):
        return requested, f"--accel {requested} given"
    ok, reason = _probe_kvm(kernel)
    return ("kvm", reason) if ok else ("tcg", reason + ": using TCG")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill vng and everything under it (QEMU, virtiofsd), even outside its group."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


@dataclass(frozen=True)
class Parallelism:
    jobs: int
    reason: str


def plan_parallelism(n_kernels: int) -> Parallelism:
    """How many VMs at once: by cores (VM_CPUS each) and available memory."""
    cores = psutil.cpu_count() or 1
    avail = psutil.virtual_memory().available
    by_cpu = max(1, cores // VM_CPUS)
    by_mem = max(1, avail // VM_FOOTPRINT)
    jobs = max(1, min(n_kernels, by_cpu, by_mem))
    reason = (f"{cores} cores / {VM_CPUS} per VM = {by_cpu}; {avail / 2**30:.1f} GiB available / "
              f"{VM_FOOTPRINT / 2**30:.1f} GiB per VM = {by_mem}; {n_kernels} kernel(s)")
    return Parallelism(jobs, reason)


class Progress:
    """Prints the guest's progress file as lines that read well in a CI log."""

    def __init__(self, label: str, path: Path, t0: float) -> None:
        self.label, self.path, self.t0, self.pos = label, path, t0, 0

    def _stamp(self) -> str:
        el = int(time.monotonic() - self.t0)
        return f"[{self.label} +{el // 60:02d}:{el % 60:02d}]"

    def say(self, text: str) -> None:
        print(f"{self._stamp()} {text}", flush=True)

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.pos)
            data = f.read()
        complete = data.rfind(b"\n") + 1
        self.pos += complete
        for line in data[:complete].decode("utf-8", "replace").splitlines():
            # "running tests/kernel/x.py::test[a-b] scenario=.. fs=.." -> "running test[a-b]"
            self.say(re.sub(r"\S+::| scenario=\S+ fs=\S+", "", line))


@dataclass(frozen=True)
class Running:
    nodeid: str
    scenario: str
    fs: str
    since: float  # monotonic time the host saw it start


def parse_progress(text: str) -> tuple[set[str], Running | None]:
    """Finished nodeids, and the test that started but did not finish (if any)."""
    done: set[str] = set()
    running = None
    for line in text.splitlines():
        m = re.match(r"running (\S+) scenario=(\S+) fs=(\S+)", line)
        if m:
            running = Running(m[1], m[2], m[3], 0.0)
            continue
        m = re.match(r"(passed|failed|skipped|xfail) (\S+) \(", line)
        if m:
            done.add(m[2])
            if running is not None and running.nodeid == m[2]:
                running = None
    return done, running


CONSOLE_TROUBLE = re.compile(r"Kernel panic|sysrq: Trigger a crash|BUG: |Oops: |"
                             r"general protection fault|WARNING: CPU: \d+|blocked for more than")


def console_excerpt(path: Path, lines: int = 25) -> tuple[str | None, str]:
    """The first line of trouble in the console (if any) and the lines from just before it."""
    if not path.exists():
        return None, "(no console log)"
    text = path.read_bytes().decode("utf-8", "replace").replace("\r", "")
    keep = [ln for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(keep):
        if CONSOLE_TROUBLE.search(ln):
            return ln.strip(), "\n".join(keep[max(0, i - 2): i + lines])
    return None, "\n".join(keep[-lines:])


def crashed_result(kernel: Kernel, running: Running, why: str, console: Path) -> ScenarioResult:
    first, tail = console_excerpt(console)
    if first and why.startswith("guest crashed"):
        why = f"guest crashed: {first}"
    return ScenarioResult(
        scenario=running.scenario, fs=running.fs, kernel=kernel.release, verdict=CRASHED,
        message=f"{why}, while this scenario ran; console:\n{tail}", nodeid=running.nodeid)


def console_tail(path: Path, lines: int = 25) -> str:
    return console_excerpt(path, lines)[1]


def run_kernel(kernel: Kernel, results_dir: Path, repo: Path, opts: VmOptions) -> GuestRun:
    """Boot ``kernel`` and run the in-guest suite, surviving crashes and hangs.

    One boot runs every scenario. If the guest panics, hangs in one test for
    longer than ``opts.test_timeout_s`` or runs past ``opts.timeout_s``, the
    test that was running is recorded as crashed with the console tail, and a
    fresh VM runs the tests that have not run yet.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    accel, reason = choose_accel(kernel, opts.accel)
    t0 = time.monotonic()
    progress = Progress(kernel.spec, results_dir / "progress.log", t0)
    crashed: list[ScenarioResult] = []
    skip: list[str] = []
    crashes: dict[str, int] = {}
    exit_code = None
    timed_out = False
    boot_failures = 0
    for attempt in range(opts.max_boots):
        if time.monotonic() - t0 > opts.timeout_s:
            timed_out = True
            break
        outcome = _boot(kernel, results_dir, repo, opts, accel, reason, attempt, skip, progress, t0)
        exit_code = outcome.exit_code
        if outcome.exit_code is not None:
            break
        done, running = parse_progress((results_dir / "progress.log").read_text()
                                       if (results_dir / "progress.log").exists() else "")
        console = results_dir / outcome.console
        if running is None:
            # no test was running: the guest died booting or between tests. A
            # kernel that crashes while booting under TCG does so now and then
            # (7.3 was seen to); boot again, a bounded number of times.
            first, tail = console_excerpt(console)
            boot_failures += 1
            progress.say(f"guest ended without reporting ({first or 'no panic line'}); "
                         f"console:\n{tail}")
            if boot_failures > MAX_BOOT_FAILURES:
                break
            progress.say("booting a fresh VM")
            continue
        why = outcome.why
        crashes[running.nodeid] = crashes.get(running.nodeid, 0) + 1
        first, _ = console_excerpt(console)
        if crashes[running.nodeid] <= CRASH_RETRIES and not opts.crash_test:
            progress.say(f"{why} during {running.nodeid} ({first or 'no panic line'}; console "
                         f"{outcome.console}): running it once more in a fresh VM")
            skip = sorted(done | set(skip))
            continue
        progress.say(f"{why} during {running.nodeid}: recording it as crashed; "
                     "continuing in a fresh VM")
        crashed.append(crashed_result(kernel, running, why, console))
        skip = sorted(done | {running.nodeid} | set(skip))
        timed_out = timed_out or outcome.why.startswith("watchdog")
    for r in crashed:
        append_jsonl(results_dir / "results.jsonl", r)
    with contextlib.suppress(FileNotFoundError):
        (results_dir / "nvdimm.img").unlink()
    elapsed = time.monotonic() - t0
    progress.say(f"done in {elapsed:.0f} s, guest pytest exit {exit_code}")
    return GuestRun(kernel, accel, reason, results_dir, exit_code, timed_out, elapsed)


@dataclass(frozen=True)
class BootOutcome:
    exit_code: int | None
    why: str
    console: str


def _boot(kernel: Kernel, results_dir: Path, repo: Path, opts: VmOptions, accel: str,
          reason: str, attempt: int, skip: list[str], progress: Progress,
          t0: float) -> BootOutcome:
    image = results_dir / "nvdimm.img"
    if opts.pmem == "nfit":
        with image.open("wb") as f:
            f.truncate(1 << 30)
    exit_file = results_dir / "guest-exit"
    with contextlib.suppress(FileNotFoundError):
        exit_file.unlink()
    config = config_path(kernel)
    suffix = "" if attempt == 0 else f"-{attempt}"
    pytest_args = [*opts.pytest_args, *[f"--deselect={n}" for n in skip]]
    guest_cmd = f"cd {shlex.quote(str(repo))} && " + shlex.join([
        "env", "PYTHONDONTWRITEBYTECODE=1", "MFINJECT_REQUIRE_PMEM=1", "MFINJECT_IN_VM=1",
        f"MFINJECT_CRASH_TEST={int(opts.crash_test)}",
        *([f"MFINJECT_KERNEL_CONFIG={config}"] if config else []),
        sys.executable, "-m", "mfinject.vm.guest", "--results", str(results_dir),
        "--log", f"guest{suffix}.log", "--tests", str(repo / "tests" / "kernel"), "--",
        *pytest_args,
    ])
    cmd = vng_command(kernel, results_dir, guest_cmd, accel=accel, pmem=opts.pmem, image=image)
    (results_dir / f"vng-command{suffix}.txt").write_text(shlex.join(cmd) + "\n")
    what = "booting" if attempt == 0 else f"booting a fresh VM (boot {attempt + 1})"
    progress.say(f"{what} {kernel.release} with {accel.upper()} ({reason}); pmem: {opts.pmem}; "
                 f"logs in {results_dir}")
    console_name = f"console{suffix}.log"
    why = "guest crashed (VM exited without a result)"
    with (results_dir / console_name).open("wb") as console, \
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                             env=_env(), start_new_session=True) as proc:
        try:
            running_since: tuple[str, float] | None = None
            exited_at: float | None = None
            while proc.poll() is None:
                progress.poll()
                now = time.monotonic()
                if exit_file.exists():
                    # pytest is done; a guest whose kernel has a stuck task may
                    # never finish powering off (its final sync blocks)
                    exited_at = exited_at or now
                    if now - exited_at > POWEROFF_GRACE_S:
                        progress.say(f"the guest did not power off within {POWEROFF_GRACE_S:.0f} "
                                     "s of pytest's end; stopping the VM")
                        _kill_group(proc)
                        break
                _, running = parse_progress((results_dir / "progress.log").read_text()
                                            if (results_dir / "progress.log").exists() else "")
                if running is None:
                    running_since = None
                elif running_since is None or running_since[0] != running.nodeid:
                    running_since = (running.nodeid, now)
                if running_since and now - running_since[1] > opts.test_timeout_s:
                    why = f"watchdog: no progress for {opts.test_timeout_s:.0f} s (hung)"
                    progress.say(f"{why}; killing the VM")
                    _kill_group(proc)
                    break
                if now - t0 > opts.timeout_s:
                    why = f"watchdog: run longer than {opts.timeout_s:.0f} s"
                    progress.say(f"{why}; killing the VM")
                    _kill_group(proc)
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
    progress.poll()
    exit_code = int(exit_file.read_text()) if exit_file.exists() else None
    return BootOutcome(exit_code, why, console_name)
