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
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from mfinject import hosttools
from mfinject.errors import MfinjectError
from mfinject.vm import guest, outcomes, shares
from mfinject.vm.outcomes import CrashAttempt
from mfinject.hooks import FRESH_BOOT
from mfinject.vm.relay import Relay
from mfinject.vm.kernels import Kernel, cache_dir, config_path

log = logging.getLogger(__name__)

GUEST_MEMORY = "2G"
NVDIMM_SIZE = "1G"
# NVDIMMs beside the designated one. A machine check leaves a bad range that
# nothing in the guest clears: the next filesystem kind's tests move to a spare
# instead of a new VM (one per kind, and one for the test after the last kind).
SPARE_NVDIMMS = 6
KVM_PROBE_TIMEOUT_S = 60.0
KVM_FIRST_OUTPUT_S = 12.0  # no kernel output by then under KVM: hung (wait_for_boot)
# a ceiling on one kernel's whole run: hangs are caught per test (test_timeout_s);
# a full catalogue (six filesystems) takes about 35 min under TCG here
DEFAULT_TIMEOUT_S = 4 * 3600.0
VM_CPUS = 2
MAX_BOOT_FAILURES = 2  # guests that die before any test reports, per kernel
# A test during which the guest died is run once more in a fresh VM before it
# is recorded as crashed: under TCG a 7.3 guest was seen to die now and then
# in int3 text patching ("Oops: int3" in __schedule, also while booting), which
# is not the test's doing. A test that crashes twice is recorded as crashed;
# one that passes on the retry keeps the first console and says so.
CRASH_RETRIES = 1
# ... unless the same crash (first line of trouble, and the function it hit)
# already happened twice in one test of this run: then it is the kernel's, and
# a test meeting it again is recorded as crashed at once (a 6.12 Oops in
# dax_lock_folio() on every shared page would otherwise cost two boots a test)
RIP = re.compile(r"\bRIP: [0-9a-f]{4}:([A-Za-z0-9_.]+)\+")
POWEROFF_GRACE_S = 30.0
# guest RAM + the NVDIMM backing file in the page cache + what the spares' sparse
# files take (80 to 120 MiB each after their namespace's memmap, mkfs and a kind's
# machine-check tests, measured with du during a 6.1 run) + QEMU
VM_FOOTPRINT = (2 << 30) + (1 << 30) + SPARE_NVDIMMS * (128 << 20) + (512 << 20)


class VmError(MfinjectError):
    pass


class HostSetupError(VmError):
    """The host could not start the guest: a setup problem, never a guest crash."""


# Set by `mfinject vm` on SIGINT/SIGTERM: every runner stops its VM, at once.
STOP = threading.Event()


@dataclass(frozen=True)
class VmOptions:
    pmem: str = "nfit"  # "nfit": ACPI NFIT -device nvdimm; "memmap": legacy e820 memmap=
    accel: str = "auto"  # auto, kvm, tcg
    timeout_s: float = DEFAULT_TIMEOUT_S  # the whole run of one kernel
    test_timeout_s: float = 300.0  # one test, from its start line (TCG runs one in ~5 s)
    # a ceiling only: every boot either finishes tests, books a crash against one
    # test (two at most each) or counts as a boot failure (MAX_BOOT_FAILURES)
    max_boots: int = 100
    crash_test: bool = False
    pytest_args: tuple[str, ...] = ()
    # a pmem owner's command line (README.md), run in ``command_cwd`` in the
    # guest on a namespace prepared as on a real machine (mfinject.vm.guest)
    command: str | None = None
    command_cwd: str | None = None
    # crash the guest when the first test whose node id contains this starts,
    # in the first boot only (mfinject.vm.planted): shows a crash cannot hide
    plant_crash: str | None = None
    # the part of the kernel's tests this VM runs (--jobs, --shard): "K/N"
    part: str | None = None


@dataclass(frozen=True)
class GuestRun:
    kernel: Kernel
    accel: str
    accel_reason: str
    results_dir: Path
    exit_code: int | None  # the guest pytest's, None if it never reported
    timed_out: bool
    elapsed_s: float
    interrupted: bool = False  # SIGINT/SIGTERM stopped it
    attempts: tuple[CrashAttempt, ...] = ()  # the guest died during a test
    deaths: tuple[CrashAttempt, ...] = ()  # ... after it came up, during no test


TCG_CPU = "max,vendor=GenuineIntel"


def vng_path() -> str:
    exe = shutil.which("vng", path=os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
    if exe is None:
        raise HostSetupError("vng not found: install the vm extra (pip install 'mfinject[vm]'; "
                             "scripts/setup does it)")
    return exe


def preflight() -> list[str]:
    """Check every host tool before anything boots; raise with all that is missing.

    Returns the notes on optional tools (virtiofsd), for the log.
    """
    errors, notes = hosttools.preflight()
    if errors:
        raise HostSetupError("\n".join(errors))
    return notes


# What vng runs on the host for a guest (virtme-ng 1.x): QEMU
# (virtme/qemu_helpers.py), busybox for the initramfs (virtme/mkinitramfs.py
# find_busybox()), modprobe and depmod for the kernel's modules
# (virtme/modfinder.py, virtme/commands/run.py). All on hosttools.TOOLS.
VNG_NEEDS = ("qemu-system-x86_64", "busybox", "modprobe", "depmod")


# The kernel printed something: the guest started, whatever happened later.
KERNEL_STARTED = re.compile(r"Linux version \d|^\[\s*\d+\.\d+\] ", re.MULTILINE)


def host_failure(console_text: str, vng_exit: int | None) -> str | None:
    """Why vng failed on the host, or None when the guest kernel did start.

    A guest kernel that never printed a line, with vng gone with a non-zero
    status, means the host could not start it (no busybox for the
    initramfs, QEMU refusing its options, ...): virtme-ng's own words, last.
    """
    if KERNEL_STARTED.search(console_text) or vng_exit in (None, 0):
        return None
    lines = [ln.strip() for ln in console_text.replace("\r", "").splitlines()
             if ln.strip() and "waiting for virtiofsd" not in ln]
    said = "\n".join(lines[-6:]) or "(no output)"
    return f"virtme-ng could not start the guest (exit {vng_exit}):\n{said}"


def vng_env() -> dict[str, str]:
    env = dict(os.environ)
    # vng runs virtme-run from PATH: make the venv's scripts visible
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def vng_command(kernel: Kernel, rwdir: Path, exec_cmd: str, *, accel: str, pmem: str,
                images: tuple[Path, ...], shares_args: tuple[str, ...] = (),
                qmp: Path | None = None) -> list[str]:
    cmd = [vng_path()]
    if accel == "tcg":
        cmd.append("--disable-kvm")
    # --verbose puts the guest kernel's console into console.log (crash evidence)
    cmd += ["--verbose", "--run", str(kernel.vmlinuz), "--memory", GUEST_MEMORY, "--cpus",
            str(VM_CPUS), f"--rwdir={rwdir}", *shares_args]
    extra = qemu_machine_check_opts(accel, qmp)
    if pmem == "nfit":
        cmd.append(f"--qemu-opts={nvdimm_opts(images)} -no-reboot{extra}")
    elif pmem == "memmap":
        # 512 MiB of guest RAM starting at 1 GiB becomes a legacy e820 pmem region
        cmd += ["--append", "memmap=512M!1G", f"--qemu-opts=-no-reboot{extra}"]
    else:
        raise VmError(f"unknown pmem kind {pmem!r}: use nfit or memmap")
    # an Intel CPU (TCG_CPU) makes the guest isolate its page tables against
    # Meltdown, which the AMD default did not: a CR3 switch per system call,
    # each flushing QEMU's software TLB. Off, as before the vendor was set.
    cmd += ["--append", "panic=-1 oops=panic" + (" pti=off" if accel == "tcg" else "")
            + f" modprobe.blacklist={','.join(UNUSED_MODULES)}", "--exec", exec_cmd]
    return cmd


# Modules udev's coldplug loads for QEMU's q35 machine and CPU, none of which a
# test uses, and which the boot waits for (virtme-ng-init waits for udev to
# settle): KVM (TCG's "max" CPU advertises VMX and SVM), watchdogs, the AHCI
# controller and its CD-ROM, SMBus and LPC, the PC speaker, input devices, and
# CPU-accelerated ciphers and hashes nothing in the guest asks for. Measured
# on Debian 6.1 under TCG: the script starts at 7.5 s of uptime instead of
# 11.5 s. The kernel's modprobe.blacklist= stops only loads by alias (udev's);
# a module named outright (modprobe xfs) still loads. Kept: nfit, libnvdimm,
# nd_pmem, dax_pmem and crc32c_intel (XFS's and ext4's checksums).
UNUSED_MODULES = (
    "kvm", "kvm_intel", "kvm_amd", "irqbypass", "intel_powerclamp", "ccp",
    "iTCO_wdt", "iTCO_vendor_support", "i6300esb", "intel_pmc_bxt",
    "ahci", "sr_mod", "cdrom", "i2c_i801", "lpc_ich",
    "pcspkr", "psmouse", "serio_raw", "evdev", "qemu_fw_cfg",
    "crct10dif_pclmul", "crc32_pclmul", "ghash_clmulni_intel", "aesni_intel",
    "sha1_ssse3", "sha256_ssse3", "sha512_ssse3",
)


def nvdimm_opts(images: tuple[Path, ...]) -> str:
    """QEMU's options for one NVDIMM per image, each a label-less region whose one
    namespace the guest sees as namespaceN.0 (the first is the designated device,
    the others its spares: mfinject.fspool.FsPool.move_to_spare)."""
    devices = " ".join(
        f"-object memory-backend-file,id=nv{i},share=on,mem-path={img},size={NVDIMM_SIZE} "
        f"-device nvdimm,id=nvdimm{i},memdev=nv{i}" for i, img in enumerate(images))
    gib = int(NVDIMM_SIZE.removesuffix("G"))
    return (f"-machine nvdimm=on -m {GUEST_MEMORY},slots={len(images) + 1},"
            f"maxmem={int(GUEST_MEMORY.removesuffix('G')) + gib * len(images) + 4}G {devices}")


def nvdimm_images(results_dir: Path) -> tuple[Path, ...]:
    """The NVDIMMs' backing files: the designated one's, then the spares'."""
    return (results_dir / "nvdimm.img",
            *(results_dir / f"nvdimm-spare{i}.img" for i in range(1, SPARE_NVDIMMS + 1)))


def qemu_machine_check_opts(accel: str, qmp: Path | None) -> str:
    """The monitor socket the machine-check relay talks to, and an Intel CPU under TCG.

    QEMU's TCG CPU is AuthenticAMD unless told otherwise; the kernel grades
    machine checks by vendor (mfinject.mce). Under KVM the CPU is the host's.
    A -cpu given here comes after virtme-ng's own ``-cpu max``: QEMU takes the last.
    """
    opts = f" -qmp unix:{qmp},server=on,wait=off" if qmp else ""
    if accel == "tcg":
        opts += f" -cpu {TCG_CPU}"
    return opts


def accel_marker(kernel: Kernel) -> Path:
    return cache_dir() / "accel" / f"{os.uname().release}--{kernel.release}.json"


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # kvm or tcg
    reason: str
    # KVM failed to boot the kernel: cache that once TCG has booted it, so a
    # host-side failure (that breaks both) is never cached as "no KVM"
    remember_on_tcg_boot: bool = False


def _probe_kvm(kernel: Kernel) -> AccelChoice:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelChoice("tcg", "no usable /dev/kvm: using TCG")
    marker = accel_marker(kernel)
    if marker.exists():
        data = json.loads(marker.read_text())
        why = f"{data['reason']} (cached in {marker})"
        return AccelChoice("kvm", why) if data["kvm"] else AccelChoice("tcg", why + ": using TCG")
    probe_dir = cache_dir() / "accel" / "probe"
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe_dir.mkdir(parents=True)
    cmd = [vng_path(), "--verbose", "--run", str(kernel.vmlinuz), "--memory", "1G",
           f"--rwdir={probe_dir}", "--exec", f"echo ok > {probe_dir}/ok"]
    print(f"mfinject: probing KVM with {kernel.release} (up to {KVM_PROBE_TIMEOUT_S:.0f} s; "
          f"{KVM_FIRST_OUTPUT_S:.0f} s without kernel output is a hang)",
          flush=True)
    t0 = time.monotonic()
    output = probe_dir / "console.log"
    with output.open("wb") as out, subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=vng_env(),
            start_new_session=True) as proc:
        rc, silent = wait_for_boot(proc, output, probe_dir / "ok")
    took = time.monotonic() - t0
    if silent:
        return AccelChoice("tcg", f"KVM did not boot {kernel.release}: no kernel output within "
                           f"{KVM_FIRST_OUTPUT_S:.0f} s (hung): using TCG",
                           remember_on_tcg_boot=True)
    if (probe_dir / "ok").exists():
        reason = f"KVM booted {kernel.release} in {took:.0f} s"
        marker.write_text(json.dumps({"kvm": True, "reason": reason}))
        return AccelChoice("kvm", reason)
    if STOP.is_set():
        raise HostSetupError("interrupted during the KVM probe")
    # Whatever failed, TCG is tried next; only a TCG boot that works makes
    # this a fact about KVM worth caching (a host-side failure breaks both).
    said = host_failure(output.read_bytes().decode("utf-8", "replace"), rc)
    why = (f"within {KVM_PROBE_TIMEOUT_S:.0f} s" if rc is None else
           f"(vng exit {rc}: {said.splitlines()[-1].strip()})" if said else f"(vng exit {rc})")
    return AccelChoice("tcg", f"KVM did not boot {kernel.release} {why}: using TCG",
                       remember_on_tcg_boot=True)


def wait_for_boot(proc: subprocess.Popen[bytes], console: Path, done: Path
                  ) -> tuple[int | None, bool]:
    """Wait for the probe: its exit status (None: killed), and whether it was killed
    because the kernel had printed nothing within KVM_FIRST_OUTPUT_S.

    Under KVM a kernel prints its banner within a second or two of QEMU
    starting (virtme-ng builds its initramfs in about 2 s before that); a
    guest that hangs under KVM prints nothing, so waiting the whole
    KVM_PROBE_TIMEOUT_S for it would only cost time.
    """
    t0 = time.monotonic()
    while not STOP.is_set():
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=0.25), False
        waited = time.monotonic() - t0
        if done.exists() or waited > KVM_PROBE_TIMEOUT_S:
            break
        if waited > KVM_FIRST_OUTPUT_S and not KERNEL_STARTED.search(
                console.read_bytes().decode("utf-8", "replace") if console.exists() else ""):
            _kill_group(proc)
            return None, True
    return _wait(proc, 5.0), False


def remember_kvm_failure(kernel: Kernel, choice: AccelChoice) -> None:
    """TCG booted what KVM did not: now the KVM answer is worth caching."""
    if choice.remember_on_tcg_boot:
        reason = choice.reason.removesuffix(": using TCG")
        accel_marker(kernel).write_text(json.dumps({"kvm": False, "reason": reason}))


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """The exit status, or None after killing it at the timeout or on STOP."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not STOP.is_set():
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=0.5)
    _kill_group(proc)
    return None


def choose_accel(kernel: Kernel, requested: str) -> AccelChoice:
    if requested in ("kvm", "tcg"):
        return AccelChoice(requested, f"--accel {requested} given")
    return _probe_kvm(kernel)


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


def crash_signature(first: str | None, excerpt: str) -> str:
    """A crash, told apart from others of its run: its first line of trouble without
    addresses, numbers or timestamps, and the function the RIP line names."""
    line = re.sub(r"\[[ 0-9.]+\]|0x[0-9a-f]+|\b[0-9a-f]{8,}\b|\d+", "#", first or "")
    rip = RIP.search(excerpt)
    return f"{line.strip()} @ {rip[1] if rip else '?'}"


def console_tail(path: Path, lines: int = 25) -> str:
    return console_excerpt(path, lines)[1]


def run_kernel(kernel: Kernel, results_dir: Path, suite: Path, opts: VmOptions) -> GuestRun:
    """Boot ``kernel`` and run the in-guest suite, surviving crashes and hangs.

    One boot runs every scenario. If the guest panics, hangs in one test for
    longer than ``opts.test_timeout_s`` or runs past ``opts.timeout_s``, the
    crash is kept as a CrashAttempt (its console stays in its own file), the
    test runs once more in a fresh VM, and the remaining tests after it;
    mfinject.vm.outcomes folds the attempts into the rows. ``suite`` is the
    directory of the in-guest tests (tests/kernel, or mfinject.suite when
    installed). A guest that vng could not start is a HostSetupError.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    choice = choose_accel(kernel, opts.accel)
    t0 = time.monotonic()
    progress = Progress(kernel.spec + (f" part {opts.part}" if opts.part else ""),
                        results_dir / "progress.log", t0)
    state = _Boots()
    exit_code = None
    timed_out = False
    for attempt in range(opts.max_boots):
        if time.monotonic() - t0 > opts.timeout_s:
            timed_out = True
            break
        outcome = _boot(kernel, results_dir, suite, opts, choice.accel, choice.reason, attempt,
                        sorted(state.skip), progress, t0)
        if outcome.host_failure:
            raise HostSetupError(f"{kernel.spec}: {outcome.host_failure}\n(console: "
                                 f"{results_dir / outcome.console})")
        with contextlib.suppress(FileNotFoundError):  # each boot's collection, kept
            (results_dir / "collected.json").replace(results_dir / f"collected-{attempt}.json")
        if outcome.kernel_started and choice.accel == "tcg":
            remember_kvm_failure(kernel, choice)
        exit_code = outcome.exit_code
        if exit_code is not None and not STOP.is_set() and _fresh_boot_wanted(
                results_dir, state, progress):
            continue
        if exit_code is not None or STOP.is_set():
            break
        if not _after_crash(outcome, attempt, state, results_dir, opts, progress,
                            choice.accel, kernel.release):
            break
        timed_out = timed_out or outcome.why.startswith("watchdog")
    for img in nvdimm_images(results_dir):
        with contextlib.suppress(FileNotFoundError):
            img.unlink()
    if exit_code in (0, 5) and state.planned_failed:
        exit_code = 1  # an earlier boot's failures (the last one's status alone hid them)
    elapsed = time.monotonic() - t0
    progress.say(f"done in {elapsed:.0f} s, guest pytest exit {exit_code}"
                 + (" (interrupted)" if STOP.is_set() else ""))
    return GuestRun(kernel, choice.accel, choice.reason, results_dir, exit_code, timed_out,
                    elapsed, interrupted=STOP.is_set(), attempts=tuple(state.attempts),
                    deaths=tuple(state.deaths))


@dataclass
class _Boots:
    """What one kernel's boots have seen so far."""
    attempts: list[CrashAttempt] = field(default_factory=list)
    # the crash_signature() of each crash, per test
    signatures: dict[str, list[str]] = field(default_factory=dict)
    deaths: list[CrashAttempt] = field(default_factory=list)
    skip: set[str] = field(default_factory=set)  # done, or crashed for good
    boot_failures: int = 0
    planned_failed: bool = False  # a test failed in a boot that ended so


def _fresh_boot_wanted(results_dir: Path, state: _Boots, progress: Progress) -> bool:
    """The guest ended its session for a new VM (mfinject.hooks.request_fresh_boot): book
    the tests it ran and say whether to boot again. Not a crash: nothing is retried."""
    marker = results_dir / FRESH_BOOT
    if not marker.exists():
        return False
    wanted = json.loads(marker.read_text())
    marker.unlink()
    log = results_dir / "progress.log"
    done, _ = parse_progress(log.read_text() if log.exists() else "")
    state.skip |= done
    state.planned_failed |= bool(wanted.get("failed"))
    progress.say(f"a fresh VM, as the guest asked: {wanted.get('reason')}")
    return True


def _after_crash(outcome: BootOutcome, attempt: int, state: _Boots, results_dir: Path,
                 opts: VmOptions, progress: Progress, accel: str, release: str) -> bool:
    """Book the guest's death; whether to boot a fresh VM."""
    log = results_dir / "progress.log"
    done, running = parse_progress(log.read_text() if log.exists() else "")
    first, tail = console_excerpt(results_dir / outcome.console)
    state.skip |= done
    if running is None:
        # no test was running: the guest died booting or between tests. A
        # kernel that crashes while booting under TCG does so now and then
        # (7.3 was seen to); boot again, a bounded number of times.
        state.boot_failures += 1
        progress.say(f"guest ended without reporting ({first or 'no panic line'}); "
                     f"console:\n{tail}")
        if outcome.guest_up:  # it came up: not a boot failure of the emulator's
            state.deaths.append(CrashAttempt("", "(vm)", "-", attempt, outcome.console,
                                             first or "", outcome.why, accel))
            outcomes.save_crashes(results_dir, release, state.attempts, state.deaths)
        return state.boot_failures <= MAX_BOOT_FAILURES
    rip = RIP.search(tail)
    state.attempts.append(CrashAttempt(running.nodeid, running.scenario, running.fs, attempt,
                                       outcome.console, first or "", outcome.why, accel,
                                       rip[1] if rip else ""))
    outcomes.save_crashes(results_dir, release, state.attempts, state.deaths)
    tries = sum(a.nodeid == running.nodeid for a in state.attempts)
    sig = crash_signature(first, tail)
    state.signatures.setdefault(running.nodeid, []).append(sig)
    confirmed = any(sigs.count(sig) > CRASH_RETRIES for node, sigs in state.signatures.items()
                    if node != running.nodeid)
    if confirmed:
        progress.say(f"{outcome.why} during {running.nodeid}: the same crash ({sig}) already "
                     "happened twice in another test of this run: recording it as crashed "
                     "without a retry; continuing in a fresh VM")
        state.skip.add(running.nodeid)
        return True
    if tries <= CRASH_RETRIES and not opts.crash_test:
        progress.say(f"{outcome.why} during {running.nodeid} ({first or 'no panic line'}; "
                     f"console {outcome.console}): running it once more in a fresh VM; a "
                     "crash is never washed out by the retry (flaky at best)")
        return True
    progress.say(f"{outcome.why} during {running.nodeid}: recording it as crashed; "
                 "continuing in a fresh VM")
    state.skip.add(running.nodeid)
    return True


@dataclass(frozen=True)
class BootOutcome:
    exit_code: int | None
    why: str
    console: str
    kernel_started: bool = True
    host_failure: str | None = None  # vng could not start the guest: why
    guest_up: bool = False  # the guest's pytest started in this boot


def _boot_command(kernel: Kernel, results_dir: Path, suite: Path, opts: VmOptions, accel: str,
                  attempt: int, skip: list[str], images: tuple[Path, ...],
                  qmp: Path) -> list[str]:
    """vng's command line for one boot, and the files it hands the guest."""
    suffix = "" if attempt == 0 else f"-{attempt}"
    # the guest's pytest arguments travel in a file of the shared results
    # directory, not on the command line: virtme-ng hands --exec to the guest
    # through the kernel command line, and a long -k (--scenario) or many
    # --deselect after crashes overflowed its 2048 bytes (a 6.1 guest panicked
    # in start_kernel: "detected buffer overflow in __fortify_strlen")
    args_file = results_dir / f"pytest-args{suffix}.json"
    args_file.write_text(json.dumps([*opts.pytest_args, *[f"--deselect={n}" for n in skip]]))
    if attempt == 0:  # the sources do not change between a run's boots
        shares.precompile(shares.suite_dirs(suite))
        failed = shares.precompile_rewritten(
            suite, guest.plugin_args(str(suite), planted=bool(opts.plant_crash)))
        if failed:
            log.warning("the guest will rewrite pytest's asserts itself: %s", failed)
    script = results_dir / f"guest{suffix}.sh"
    script.write_text(_guest_script(kernel, results_dir, suite, opts, attempt, suffix))
    # only the script's name on the kernel's command line (2048 bytes, the
    # environment and mounts virtme-ng passes there too): the command itself
    # grew past what a deep results directory would leave room for
    guest_cmd = f"bash {shlex.quote(str(script))}"
    cmd = vng_command(kernel, results_dir, guest_cmd, accel=accel, pmem=opts.pmem, images=images,
                      shares_args=tuple(shares.vng_args()), qmp=qmp)
    return cmd


def _guest_script(kernel: Kernel, results_dir: Path, suite: Path, opts: VmOptions, attempt: int,
                  suffix: str) -> str:
    """What the guest runs for one boot: cache the imports, then mfinject.vm.guest."""
    plan, said = results_dir / "shares.txt", results_dir / f"shares-said{suffix}.txt"
    shares.write_plan(shares.plan(shares.import_dirs(suite)), plan)
    config = config_path(kernel)
    command = shlex.join([
        "env", "PYTHONDONTWRITEBYTECODE=1", "MFINJECT_REQUIRE_PMEM=1", "MFINJECT_IN_VM=1",
        f"MFINJECT_CRASH_TEST={int(opts.crash_test)}",
        *([f"MFINJECT_PLANT_CRASH={opts.plant_crash}"] if opts.plant_crash and attempt == 0
          else []),
        *([f"MFINJECT_KERNEL_CONFIG={config}"] if config else []),
        sys.executable, "-m", "mfinject.vm.guest", "--results", str(results_dir),
        "--log", f"guest{suffix}.log", "--tests", str(suite),
        *(["--command", opts.command, "--cwd", opts.command_cwd or "/"] if opts.command else []),
        "--args-file", str(results_dir / f"pytest-args{suffix}.json"),
        "--shares-said", str(said),
    ])
    return ("#!/bin/bash\n# the guest's command for one boot, written by mfinject vm\n"
            f"{shares.guest_prelude(plan, said)}\n"
            f"cd {shlex.quote(str(suite))} && exec {command}\n")


def _watch(proc: subprocess.Popen[bytes], results_dir: Path, exit_file: Path, opts: VmOptions,
           progress: Progress, t0: float) -> str:
    """Wait for the VM to end, or end it: why it ended (the watchdogs', or a crash's)."""
    why = "guest crashed (VM exited without a result)"
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
                return why
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
            return why
        if now - t0 > opts.timeout_s:
            why = f"watchdog: run longer than {opts.timeout_s:.0f} s"
            progress.say(f"{why}; killing the VM")
            _kill_group(proc)
            return why
        if STOP.is_set():
            why = "interrupted (SIGINT/SIGTERM)"
            progress.say(f"{why}; stopping the VM")
            _kill_group(proc)
            return why
        time.sleep(0.5)
    return why


def _boot(kernel: Kernel, results_dir: Path, suite: Path, opts: VmOptions, accel: str,
          reason: str, attempt: int, skip: list[str], progress: Progress,
          t0: float) -> BootOutcome:
    images = nvdimm_images(results_dir)
    if opts.pmem == "nfit":
        for img in images:  # sparse: only what the guest writes takes disk
            with img.open("wb") as f:
                f.truncate(1 << 30)
    exit_file = results_dir / "guest-exit"
    with contextlib.suppress(FileNotFoundError):
        exit_file.unlink()
    suffix = "" if attempt == 0 else f"-{attempt}"
    console_name = f"console{suffix}.log"
    # a unix socket's path must be short (108 bytes): not under a long TMPDIR
    qmp_dir = Path(tempfile.mkdtemp(prefix="mfinject-qmp-", dir="/tmp"))
    qmp = qmp_dir / "qmp"
    cmd = _boot_command(kernel, results_dir, suite, opts, accel, attempt, skip, images, qmp)
    (results_dir / f"vng-command{suffix}.txt").write_text(shlex.join(cmd) + "\n")
    what = "booting" if attempt == 0 else f"booting a fresh VM (boot {attempt + 1})"
    progress.say(f"{what} {kernel.release} with {accel.upper()} ({reason}); pmem: {opts.pmem}; "
                 f"logs in {results_dir}")
    relay = Relay(results_dir / "mce", qmp).start()
    try:
        with (results_dir / console_name).open("wb") as console, \
                subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console,
                                 stderr=subprocess.STDOUT, env=vng_env(),
                                 start_new_session=True) as proc:
            try:
                why = _watch(proc, results_dir, exit_file, opts, progress, t0)
            finally:
                if proc.poll() is None:
                    _kill_group(proc)
    finally:
        relay.stop()
        shutil.rmtree(qmp_dir, ignore_errors=True)
    progress.poll()
    exit_code = int(exit_file.read_text()) if exit_file.exists() else None
    text = (results_dir / console_name).read_bytes().decode("utf-8", "replace")
    stopped = STOP.is_set() or why.startswith("watchdog")  # we killed it: not vng's failure
    failure = None if exit_code is not None or stopped else host_failure(text, proc.returncode)
    return BootOutcome(exit_code, why, console_name, bool(KERNEL_STARTED.search(text)), failure,
                       guest_up=(results_dir / f"guest{suffix}.log").exists())
