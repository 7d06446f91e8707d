"""Play a scenario on a mounted fsdax filesystem and record what happened."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass

from mfinject import fs, kernel, pmem
from mfinject.errors import MfinjectError
from mfinject.injectors import INJECTORS
from mfinject.observers import kmsg, pagemap
from mfinject.observers.tracer import Tracer
from mfinject.participant import Participant, cast
from mfinject.scenarios import DEFAULT, Scenario
from mfinject.syscalls import PAGE_SIZE

log = logging.getLogger(__name__)

FILE_SIZE = 2 << 20
SETTLE_QUIET_S = 0.5
SETTLE_LIMIT_S = 10.0


class ScenarioError(MfinjectError):
    """The scenario could not be set up; nothing about the kernel was learnt."""


@dataclass(frozen=True)
class SigbusObs:
    code: str
    addr: int
    addr_lsb: int
    after_ms: float  # since the injection call was issued


@dataclass(frozen=True)
class ParticipantObs:
    name: str
    role: str
    pid: int
    maps: bool
    policy: str
    vaddr: int | None
    pfn_before: int | None
    sigbus: tuple[SigbusObs, ...]
    other_signals: tuple[str, ...]
    exit: str  # "alive", "killed by SIGBUS", "exited 0", ...
    mapped_after: bool | None
    pfn_after: int | None
    injection: str | None  # the injector's own call: "ok", an error, "caller killed"


@dataclass(frozen=True)
class Observation:
    scenario: str
    title: str
    injector: str
    fs: str
    path: str
    kernel: str
    pfn: int
    participants: tuple[ParticipantObs, ...]
    dmesg: tuple[str, ...]
    hardware_corrupted_delta_kb: int
    badblocks: tuple[str, ...]
    duration_s: float

    def participant(self, name: str) -> ParticipantObs:
        for p in self.participants:
            if p.name == name:
                return p
        raise KeyError(name)


def _exit_text(status: int | None) -> str:
    if status is None:
        return "alive"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited {status}"


def run(scenario: Scenario, mount: fs.Mount, namespace: pmem.Namespace) -> Observation:
    started = time.monotonic()
    path = fs.create_file(mount, f"{scenario.name}.dat", FILE_SIZE)
    injector = INJECTORS[scenario.injector](namespace)
    tracer = Tracer()
    with cast(tracer) as people:
        vaddrs: dict[str, int] = {}
        pfns: dict[str, int] = {}
        for role in scenario.roles:
            p = Participant(role.name, tracer)
            people[role.name] = p
            if role.policy != DEFAULT:
                p.call("mce_kill", policy=role.policy)
            if role.maps:
                addr = p.call("mmap", path=path, offset=0, length=PAGE_SIZE)
                p.call("touch", addr=addr)
                entry = pagemap.read_entry(p.pid, addr)
                if entry.pfn is None:
                    raise ScenarioError(f"{role.name}: page at {addr:#x} not present after a touch")
                if not namespace.contains_pfn(entry.pfn):
                    raise ScenarioError(
                        f"{role.name}: {path} maps pfn {entry.pfn:#x}, outside {namespace.name} "
                        f"{namespace.describe_range()}: the mapping is not DAX"
                    )
                tracer.watch(p.pid, addr)
                vaddrs[role.name] = addr
                pfns[role.name] = entry.pfn
        if len(set(pfns.values())) != 1:
            raise ScenarioError(f"mappers see different pfns: {pfns}")
        (pfn,) = set(pfns.values())

        inj_role = scenario.injecting_role
        hw_before = kernel.hardware_corrupted_kb()
        with kmsg.capture() as log_capture:
            t0 = time.monotonic_ns()
            injection = injector.inject(people[inj_role.name], vaddrs.get(inj_role.name), pfn)
            tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
            records = log_capture.read()
        hw_delta = kernel.hardware_corrupted_kb() - hw_before

        observed = []
        for role in scenario.roles:
            p = people[role.name]
            sigbus = tuple(
                SigbusObs(ev.code_name, ev.addr, ev.addr_lsb, (ev.at_ns - t0) / 1e6)
                for ev in p.log.signals if ev.signo == signal.SIGBUS
            )
            others = tuple(ev.signal_name for ev in p.log.signals if ev.signo != signal.SIGBUS)
            mapped_after = pfn_after = None
            if role.maps:
                addr = vaddrs[role.name]
                if p.alive:
                    entry = pagemap.read_entry(p.pid, addr)
                else:
                    # the tracer read the pagemap when the fatal signal arrived
                    raws = [raw for ev in p.log.signals for a, raw in ev.pagemap if a == addr]
                    entry = pagemap.PagemapEntry(raws[-1]) if raws else None
                if entry is not None:
                    mapped_after, pfn_after = entry.present, entry.pfn
            observed.append(ParticipantObs(
                name=role.name,
                role=role.describe(),
                pid=p.pid,
                maps=role.maps,
                policy=role.policy,
                vaddr=vaddrs.get(role.name),
                pfn_before=pfns.get(role.name),
                sigbus=sigbus,
                other_signals=others,
                exit=_exit_text(p.log.exit_status),
                mapped_after=mapped_after,
                pfn_after=pfn_after,
                injection=injection.outcome() if role.injects else None,
            ))
    return Observation(
        scenario=scenario.name,
        title=scenario.title,
        injector=scenario.injector,
        fs=mount.kind.name,
        path=mount.kind.path,
        kernel=kernel.release(),
        pfn=pfn,
        participants=tuple(observed),
        dmesg=tuple(str(r) for r in records),
        hardware_corrupted_delta_kb=hw_delta,
        badblocks=tuple(pmem.badblocks(namespace)),
        duration_s=round(time.monotonic() - started, 3),
    )
