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
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mfinject.errors import MfinjectError
from mfinject.vm.kernels import Kernel, cache_dir

log = logging.getLogger(__name__)

GUEST_MEMORY = "2G"
NVDIMM_SIZE = "1G"
KVM_PROBE_TIMEOUT_S = 60.0
DEFAULT_TIMEOUT_S = 1800.0


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
    cmd += ["--run", str(kernel.vmlinuz), "--memory", GUEST_MEMORY, "--cpus", "2",
            f"--rwdir={rwdir}"]
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
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def _tail(path: Path, pos: int, prefix: str) -> int:
    if not path.exists():
        return pos
    with path.open("rb") as f:
        f.seek(pos)
        data = f.read()
    if not data:
        return pos
    complete = data.rfind(b"\n") + 1
    for line in data[:complete].decode("utf-8", "replace").splitlines():
        print(f"{prefix}{line}", flush=True)
    return pos + complete


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
    guest_cmd = " ".join([
        f"cd {repo} &&", "PYTHONDONTWRITEBYTECODE=1", "MFINJECT_REQUIRE_PMEM=1",
        *([f"MFINJECT_KERNEL_CONFIG={config}"] if config.exists() else []),
        sys.executable, "-m", "mfinject.vm.guest", "--results", str(results_dir),
        "--tests", str(repo / "tests" / "kernel"), *opts.pytest_args,
    ])
    cmd = vng_command(kernel, results_dir, guest_cmd, accel=accel, pmem=opts.pmem, image=image)
    (results_dir / "vng-command.txt").write_text(" ".join(cmd) + "\n")
    print(f"mfinject: booting {kernel.spec} ({kernel.release}) with {accel.upper()}: {reason}",
          flush=True)
    print(f"mfinject: pmem: {opts.pmem}; console log: {results_dir / 'console.log'}", flush=True)
    t0 = time.monotonic()
    timed_out = False
    pos = 0
    guest_log = results_dir / "guest.log"
    with (results_dir / "console.log").open("wb") as console, \
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                             env=_env(), start_new_session=True) as proc:
        try:
            while proc.poll() is None:
                pos = _tail(guest_log, pos, f"[{kernel.release}] ")
                if time.monotonic() - t0 > opts.timeout_s:
                    timed_out = True
                    print(f"mfinject: watchdog: {kernel.release} still running after "
                          f"{opts.timeout_s:.0f} s; killing the VM", flush=True)
                    _kill_group(proc)
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
    _tail(guest_log, pos, f"[{kernel.release}] ")
    with contextlib.suppress(FileNotFoundError):
        image.unlink()
    exit_file = results_dir / "guest-exit"
    exit_code = int(exit_file.read_text()) if exit_file.exists() else None
    elapsed = time.monotonic() - t0
    print(f"mfinject: {kernel.release} finished in {elapsed:.0f} s, guest exit {exit_code}",
          flush=True)
    return GuestRun(kernel, accel, reason, results_dir, exit_code, timed_out, elapsed)
