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
from mfinject.vm.kernels import Kernel, cache_dir

log = logging.getLogger(__name__)

GUEST_MEMORY = "2G"
NVDIMM_SIZE = "1G"
KVM_PROBE_TIMEOUT_S = 60.0
DEFAULT_TIMEOUT_S = 1800.0
VM_CPUS = 2
# guest RAM + the NVDIMM backing file in the page cache + QEMU itself
VM_FOOTPRINT = (2 << 30) + (1 << 30) + (512 << 20)


class VmError(MfinjectError):
    pass


@dataclass(frozen=True)
class VmOptions:
    pmem: str = "nfit"  # "nfit": ACPI NFIT -device nvdimm; "memmap": legacy e820 memmap=
    accel: str = "auto"  # auto, kvm, tcg
    timeout_s: float = DEFAULT_TIMEOUT_S
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

    @property
    def results_json(self) -> Path:
        return self.results_dir / "results.json"


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
            self.say(line)


def run_kernel(kernel: Kernel, results_dir: Path, repo: Path, opts: VmOptions) -> GuestRun:
    """Boot ``kernel`` once, run the in-guest suite, and wait with a watchdog."""
    results_dir.mkdir(parents=True, exist_ok=True)
    accel, reason = choose_accel(kernel, opts.accel)
    image = results_dir / "nvdimm.img"
    if opts.pmem == "nfit":
        with image.open("wb") as f:
            f.truncate(1 << 30)
    config = kernel.vmlinuz.parent / f"config-{kernel.release}"
    if not config.exists():
        config = kernel.modules / "config"
    guest_cmd = f"cd {shlex.quote(str(repo))} && " + shlex.join([
        "env", "PYTHONDONTWRITEBYTECODE=1", "MFINJECT_REQUIRE_PMEM=1",
        *([f"MFINJECT_KERNEL_CONFIG={config}"] if config.exists() else []),
        sys.executable, "-m", "mfinject.vm.guest", "--results", str(results_dir),
        "--tests", str(repo / "tests" / "kernel"), "--", *opts.pytest_args,
    ])
    cmd = vng_command(kernel, results_dir, guest_cmd, accel=accel, pmem=opts.pmem, image=image)
    (results_dir / "vng-command.txt").write_text(" ".join(cmd) + "\n")
    t0 = time.monotonic()
    progress = Progress(kernel.spec, results_dir / "progress.log", t0)
    progress.say(f"booting {kernel.release} with {accel.upper()} ({reason}); pmem: {opts.pmem}; "
                 f"logs in {results_dir}")
    timed_out = False
    with (results_dir / "console.log").open("wb") as console, \
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                             env=_env(), start_new_session=True) as proc:
        try:
            while proc.poll() is None:
                progress.poll()
                if time.monotonic() - t0 > opts.timeout_s:
                    timed_out = True
                    progress.say(f"watchdog: still running after {opts.timeout_s:.0f} s; "
                                 "killing the VM")
                    _kill_group(proc)
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
    progress.poll()
    with contextlib.suppress(FileNotFoundError):
        image.unlink()
    exit_file = results_dir / "guest-exit"
    exit_code = int(exit_file.read_text()) if exit_file.exists() else None
    elapsed = time.monotonic() - t0
    progress.say(f"VM finished in {elapsed:.0f} s, guest pytest exit {exit_code}")
    return GuestRun(kernel, accel, reason, results_dir, exit_code, timed_out, elapsed)
