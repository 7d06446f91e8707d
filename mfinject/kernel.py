"""Facts about the running kernel: release, config, taint, counters."""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mfinject.errors import MfinjectError

REQUIRED_CONFIG = ("CONFIG_MEMORY_FAILURE", "CONFIG_FS_DAX", "CONFIG_HWPOISON_INJECT")


class KernelError(MfinjectError):
    pass


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, release: str) -> Version:
        m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
        if not m:
            raise KernelError(f"cannot parse kernel release {release!r}")
        return cls(int(m[1]), int(m[2]), int(m[3] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def release() -> str:
    return os.uname().release


def config() -> dict[str, str] | None:
    """The running kernel's config, or None when nowhere to be found.

    Looks at $MFINJECT_KERNEL_CONFIG (the VM runner points it at the config
    shipped beside the vmlinuz), /proc/config.gz and /boot/config-RELEASE.
    """
    rel = release()
    env = os.environ.get("MFINJECT_KERNEL_CONFIG")
    candidates = [Path(env)] if env else []
    candidates += [Path("/proc/config.gz"), Path(f"/boot/config-{rel}"),
                  Path(f"/lib/modules/{rel}/config"), Path(f"/lib/modules/{rel}/build/.config")]
    for path in candidates:
        if path.exists():
            data = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" \
                else path.read_text()
            return parse_config(data)
    return None


def parse_config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_"):
            key, eq, value = line.partition("=")
            if eq:
                out[key] = value
    return out


def missing_config(cfg: dict[str, str] | None) -> list[str]:
    """Required options the config lacks; with no config, probe the running kernel."""
    if cfg is None:
        probes = {
            "CONFIG_MEMORY_FAILURE": Path("/proc/sys/vm/memory_failure_early_kill").exists(),
            "CONFIG_FS_DAX": True,  # no runtime probe; a non-DAX mount is caught by statx
            "CONFIG_HWPOISON_INJECT": Path("/sys/kernel/debug/hwpoison").exists()
            or Path("/sys/module/hwpoison_inject").exists() or _module_exists("hwpoison_inject"),
        }
        return [opt for opt, ok in probes.items() if not ok]
    return [opt for opt in REQUIRED_CONFIG if cfg.get(opt) not in ("y", "m")]


DEBUG_OPTIONS = ("CONFIG_PROVE_RCU", "CONFIG_KASAN_GENERIC", "CONFIG_DEBUG_VM",
                 "CONFIG_DEBUG_ATOMIC_SLEEP", "CONFIG_DEBUG_LIST")


def debug_state(cfg: dict[str, str] | None = None,
                lockdep_stats: str | None = None, tainted: int | None = None) -> str | None:
    """What of a debug kernel is live now, in one line; None on a kernel without lockdep.

    Lockdep turns itself off after its first report, and when the kernel is
    tainted with LOCKDEP_NOW_UNRELIABLE, as the #MC handler does (taint M):
    debug_locks goes 0 in /proc/lockdep_stats, the tests after that are not
    checked for lock order, and this line says so and why.
    """
    if lockdep_stats is None:
        try:
            lockdep_stats = Path("/proc/lockdep_stats").read_text()
        except OSError:
            return None
    cfg = config() if cfg is None else cfg
    m = re.search(r"debug_locks:\s*(\d+)", lockdep_stats)
    locks = m is not None and m[1] == "1"
    tainted = taint() if tainted is None else tainted
    why = ("a machine check's taint (M, LOCKDEP_NOW_UNRELIABLE)" if tainted & (1 << 4)
           else "an earlier report, or a limit")
    state = "lockdep live" if locks else f"lockdep OFF (debug_locks 0: {why} turned it off)"
    on = [o.removeprefix("CONFIG_") for o in DEBUG_OPTIONS if (cfg or {}).get(o) == "y"]
    return f"debug kernel: {state}; " + (", ".join(on) if on else "no other debug option")


def _module_exists(name: str) -> bool:
    base = Path(f"/lib/modules/{release()}")
    return any(base.rglob(f"{name}.ko*")) if base.exists() else False


def taint() -> int:
    return int(Path("/proc/sys/kernel/tainted").read_text())


def hardware_corrupted_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("HardwareCorrupted:"):
            return int(line.split()[1])
    return 0


NODE_SYSFS = Path("/sys/devices/system/node")


def memory_failure_stats() -> dict[str, int] | None:
    """The per-node memory_failure counters summed over nodes, or None where the
    kernel has none (they came with commit 44b8f8bf2438, Linux 6.4)."""
    totals: dict[str, int] = {}
    found = False
    for node in sorted(NODE_SYSFS.glob("node[0-9]*")):
        d = node / "memory_failure"
        if not d.is_dir():
            continue
        found = True
        for f in d.iterdir():
            totals[f.name] = totals.get(f.name, 0) + int(f.read_text().strip())
    return totals if found else None


def stats_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> str:
    """"total +1, recovered +1": the counters that moved; "absent" without counters."""
    if before is None or after is None:
        return "absent"
    moved = [f"{k} +{after[k] - before.get(k, 0)}" for k in
             ("total", "recovered", "delayed", "failed", "ignored")
             if k in after and after[k] != before.get(k, 0)]
    return ", ".join(moved) or "unchanged"


def stuck_stack(pid: int, settle_s: float = 1.0) -> str:
    """Where a task is stuck: its kernel stack, or the CPUs' backtraces.

    A task spinning in the kernel has no readable /proc/PID/stack; then
    sysrq 'l' (backtrace of all active CPUs) writes the stacks to the log and
    the frames are taken from there.
    """
    import time as _time

    try:
        frames = [line.split()[-1] for line in Path(f"/proc/{pid}/stack").read_text().splitlines()]
    except OSError:
        frames = []
    if frames:
        return " <- ".join(f.split("+")[0] for f in frames[:12])
    from mfinject.observers import kmsg

    with kmsg.capture() as cap:
        try:
            Path("/proc/sysrq-trigger").write_text("l")
        except OSError as e:
            return f"no stack ({e})"
        _time.sleep(settle_s)
        lines = [str(r) for r in cap.read()]
    return stack_from_backtraces(lines, pid)


def stack_from_backtraces(lines: list[str], pid: int) -> str:
    """The frames of ``pid``'s CPU in sysrq-l output, innermost first."""
    # one block per CPU: "NMI backtrace for cpu N", then "CPU: N ... PID: P Comm: ..."
    blocks: list[list[str]] = []
    for line in lines:
        if "NMI backtrace for cpu" in line or not blocks:
            blocks.append([])
        blocks[-1].append(line)
    mine = [b for b in blocks if any(f"PID: {pid} " in line for line in b)]
    block = mine[0] if mine else next((b for b in blocks if not any("sysrq" in x for x in b)),
                                      lines)
    seen: list[str] = []
    for line in block:
        m = re.search(r"\s(?:\? )?([a-zA-Z_][\w.]*)\+0x", line)
        if m and m[1] not in seen and not m[1].startswith(("asm_", "sysvec_", "nmi_", "irq",
                                                           "__pfx_")):
            seen.append(m[1])
    return " <- ".join(seen[:14]) or "no stack in the CPU backtraces"
