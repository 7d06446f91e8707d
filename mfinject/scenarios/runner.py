"""Play a scenario on a mounted fsdax filesystem and record what happened."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass

from mfinject import fs, kernel, pmem
from mfinject.errors import MfinjectError
from mfinject.injectors import INJECTORS, UNPOISON_PFN
from mfinject.observers import ftrace, kmsg, pagemap
from mfinject.observers.tracer import Tracer
from mfinject.participant import Participant, cast
from mfinject.scenarios import DEFAULT, PMD_SIZE, Scenario
from mfinject.syscalls import PAGE_SIZE
from mfinject.undo import UndoStack

log = logging.getLogger(__name__)

FILE_SIZE = 2 << 20
FILL = 0x5A  # every byte of the scenario file
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
    # pages of the mapped range still present after the injection, of how many
    range_present: int | None = None
    range_pages: int | None = None
    # a later load from the mapping: "SIGBUS <code>", "old data", "data 0x..", or None
    access: str | None = None
    access_sigbus: SigbusObs | None = None
    # a pread() of the poisoned page after the injection: "old data", an error
    read: str | None = None
    # the injecting process's write of the PFN to unpoison-pfn afterwards
    unpoison: str | None = None


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
    # the memory-failure path the injection took, from the function tracer
    path_observed: str = "not traced"
    trace_calls: tuple[str, ...] = ()
    memory_failure_events: tuple[str, ...] = ()

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


def _mapping_state(p: Participant, addr: int | None, length: int
                   ) -> tuple[bool | None, int | None, int | None]:
    """Present bit and PFN of the first page, and how many pages of the range are
    present: now, or when a fatal signal stopped the process."""
    if addr is None:
        return None, None, None
    if p.alive:
        entries = pagemap.read_range(p.pid, addr, length)
        return entries[0].present, entries[0].pfn, sum(e.present for e in entries)
    raws = [raw for ev in p.log.signals for a, raw in ev.pagemap if a == addr]
    counts = [n for ev in p.log.signals for a, n in ev.present if a == addr]
    if not raws:
        return None, None, None
    entry = pagemap.PagemapEntry(raws[-1])
    return entry.present, entry.pfn, counts[-1] if counts else None


def _probe_access(p: Participant, addr: int, t0: int) -> tuple[str, SigbusObs | None]:
    """Load one byte again; a SIGBUS ends the participant and is the answer."""
    before = len(p.log.signals)
    reply = p.request("touch", addr=addr)
    new = [ev for ev in p.log.signals[before:] if ev.signo == signal.SIGBUS]
    if new:
        ev = new[0]
        return f"SIGBUS {ev.code_name}", SigbusObs(ev.code_name, ev.addr, ev.addr_lsb,
                                                    (ev.at_ns - t0) / 1e6)
    if reply is None:
        return f"died ({p.log.exit_status})", None
    if not reply.ok:
        return f"error {reply.error}", None
    return ("old data" if reply.value == FILL else f"data {reply.value:#x}"), None


def run(scenario: Scenario, mount: fs.Mount, namespace: pmem.Namespace,
        trace_session: ftrace.FunctionTrace | None = None) -> Observation:
    started = time.monotonic()
    path = fs.create_file(mount, f"{scenario.name}.dat", FILE_SIZE, fill=FILL,
                          align=scenario.map_size >= PMD_SIZE)
    injector = INJECTORS[scenario.injector](namespace)
    tracer = Tracer()
    with UndoStack() as undo, cast(tracer) as people:
        if scenario.early_kill_sysctl:
            undo.sysctl("vm.memory_failure_early_kill", str(scenario.early_kill_sysctl))
        vaddrs: dict[str, int] = {}
        pfns: dict[str, int] = {}
        for role in scenario.roles:
            p = Participant(role.name, tracer)
            people[role.name] = p
            if role.policy != DEFAULT:
                p.call("mce_kill", policy=role.policy)
            if role.maps and not role.maps_after:
                addr = p.call("mmap", path=path, offset=0, length=scenario.map_size)
                with ftrace.trace_injection(trace_session) as fault_trace:
                    p.call("touch", addr=addr)
                if scenario.map_size >= PMD_SIZE:
                    got = [res for a, res in fault_trace.pmd_faults if a == addr]
                    if "NOPAGE" not in got:
                        raise ScenarioError(
                            f"{role.name}: no PMD mapping at {addr:#x} (fs_dax:dax_pmd_fault_done:"
                            f" {got or 'no event'}): the file's extent is not 2 MiB-aligned "
                            f"on {mount.kind.name}")
                entry = pagemap.read_entry(p.pid, addr)
                if entry.pfn is None:
                    raise ScenarioError(f"{role.name}: page at {addr:#x} not present after a touch")
                if not namespace.contains_pfn(entry.pfn):
                    raise ScenarioError(
                        f"{role.name}: {path} maps pfn {entry.pfn:#x}, outside {namespace.name} "
                        f"{namespace.describe_range()}: the mapping is not DAX"
                    )
                tracer.watch(p.pid, addr, scenario.map_size)
                vaddrs[role.name] = addr
                pfns[role.name] = entry.pfn
        if len(set(pfns.values())) != 1:
            raise ScenarioError(f"mappers see different pfns: {pfns}")
        (pfn,) = set(pfns.values())
        for role in scenario.roles:
            if role.unmaps_before:
                people[role.name].call("munmap", addr=vaddrs[role.name])
                tracer.tracees[people[role.name].pid].watch.clear()
        if scenario.truncate_before:
            os.truncate(path, 0)
            os.sync()

        inj_role = scenario.injecting_role
        hw_before = kernel.hardware_corrupted_kb()
        with kmsg.capture() as log_capture:
            t0 = time.monotonic_ns()
            with ftrace.trace_injection(trace_session) as trace:
                injection = injector.inject(people[inj_role.name], vaddrs.get(inj_role.name),
                                            pfn)
                tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
            records = log_capture.read()
            snapshot = {role.name: _mapping_state(people[role.name], vaddrs.get(role.name),
                                                  scenario.map_size)
                        for role in scenario.roles if role.maps and not role.unmaps_before}
            access = {}
            reads = {}
            unpoison = None
            if scenario.unpoison_after:
                reply = people[inj_role.name].request("write_file", path=UNPOISON_PFN,
                                                      data=f"{pfn:#x}\n")
                unpoison = ("caller killed" if reply is None else "ok" if reply.ok else
                            os.strerror(reply.errno) if reply.errno else str(reply.error))
                tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
            for role in scenario.roles:
                p = people[role.name]
                if role.maps_after:
                    addr = p.call("mmap", path=path, offset=0, length=scenario.map_size)
                    vaddrs[role.name] = addr
                    access[role.name] = _probe_access(p, addr, t0)
                if role.reads_after:
                    reply = p.request("pread", path=path, offset=0, length=PAGE_SIZE)
                    reads[role.name] = ("died" if reply is None else
                                        ("old data" if reply.value == [FILL] else
                                         f"data {reply.value}") if reply.ok else
                                        os.strerror(reply.errno) if reply.errno else
                                        str(reply.error))
            if scenario.probe_access:
                for role in scenario.roles:
                    if role.maps and not role.unmaps_before and not role.maps_after \
                            and people[role.name].alive:
                        access[role.name] = _probe_access(people[role.name], vaddrs[role.name], t0)
                tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
            records += log_capture.read()
        hw_delta = kernel.hardware_corrupted_kb() - hw_before

        observed = []
        for role in scenario.roles:
            p = people[role.name]
            probe = access.get(role.name)
            n_inject = len(p.log.signals) - (1 if probe and probe[1] is not None else 0)
            sigbus = tuple(
                SigbusObs(ev.code_name, ev.addr, ev.addr_lsb, (ev.at_ns - t0) / 1e6)
                for ev in p.log.signals[:n_inject] if ev.signo == signal.SIGBUS
            )
            others = tuple(ev.signal_name for ev in p.log.signals if ev.signo != signal.SIGBUS)
            mapped_after, pfn_after, range_present = snapshot.get(role.name, (None, None, None))
            if role.maps_after:
                sigbus = ()  # its only signal is the one its access got
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
                range_present=range_present,
                range_pages=scenario.map_size // PAGE_SIZE if role.maps else None,
                access=probe[0] if probe else None,
                access_sigbus=probe[1] if probe else None,
                read=reads.get(role.name),
                unpoison=unpoison if role.injects else None,
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
        path_observed=trace.path,
        trace_calls=tuple(trace.calls),
        memory_failure_events=tuple(trace.events),
    )
