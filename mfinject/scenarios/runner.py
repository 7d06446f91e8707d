"""Play a scenario on a mounted fsdax filesystem and record what happened."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass

from mfinject import fs, kernel, pin, pmem, syscalls
from mfinject.errors import MfinjectError
from mfinject.injectors import INJECTORS, UNPOISON_PFN, Injection
from mfinject.observers import ftrace, kmsg, pagemap
from mfinject.observers.tracer import Tracer
from mfinject.participant import (Participant, ParticipantError, Reply, Timed, cast,
                                  reply_text)
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


class NotMeaningful(ScenarioError):
    """The scenario does not apply to this filesystem (say, reflink on ext4)."""


PIN_DELAY_MS = 3000  # how long the O_DIRECT read that pins the page stays in flight
PIN_SETTLE_S = 0.5   # after starting it, before the injection


class _OnThread:
    """A participant seen through one of its threads: what an injector calls."""

    def __init__(self, p: Participant, thread: int) -> None:
        self.p = p
        self.thread = thread
        self.name = f"{p.name} thread {thread}"

    def request(self, op: str, **args: object) -> Reply | None:
        # the worker's reply is passed through as the reply to "on_thread"
        return self.p.request("on_thread", thread=self.thread, do=op, args=args)


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
    # which of its threads took the first SIGBUS: "main thread", "thread 2"
    signal_thread: str | None = None
    # PR_MCE_KILL_GET of its main thread before the injection
    kill_policy: str | None = None
    # file I/O on the poisoned page after the injection: (operation, result)
    io: tuple[tuple[str, str], ...] = ()
    # the pin held over the injection, and how it ended
    pin: str | None = None
    # the second injection's outcome (inject_twice)
    injection2: str | None = None


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
    # facts about the whole run, by name: node memory_failure counters, seeds, ...
    facts: tuple[tuple[str, str], ...] = ()

    def fact(self, name: str) -> str | None:
        return dict(self.facts).get(name)

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


def _confirm_extent_pfn(tracer: Tracer, namespace: pmem.Namespace, path: str) -> None:
    """The extent map's PFN is the page's own: checked on the file's page 1.

    FIEMAP gives where a block lies in the filesystem; the namespace's data
    start turns that into a PFN. A wrong sum would poison another page, and
    on the generic path could still pass (EBUSY either way). Page 0, the one
    poisoned, must stay never mapped, so a fresh process maps and faults page
    1 instead and pagemap must give the PFN the same sum gives for it.
    """
    want = (pmem.data_start(namespace) + fs.physical_offset(path, PAGE_SIZE)) // PAGE_SIZE
    # its own process, closed alone (a nested cast() would kill every traced
    # participant of the scenario on its way out)
    x = Participant("X", tracer)
    try:
        addr = x.call("mmap", path=path, offset=PAGE_SIZE, length=PAGE_SIZE)
        x.call("touch", addr=addr)
        got = pagemap.read_entry(x.pid, addr).pfn
    finally:
        x.close()
    if got != want:
        raise ScenarioError(f"{path}: the extent map gives pfn {want:#x} for page 1, but the "
                            f"page mapped there is pfn {got if got is None else hex(got)}: the "
                            "extent-map pfn of page 0 cannot be trusted either")


def _pin_outcome(p: Participant, injection: Timed) -> str:
    """The pinning O_DIRECT read's outcome, once it is shown to have spanned the injection.

    A read that completed before the injection began (or began after it)
    pinned nothing at the moment that matters: the scenario could not set up
    what it is about, an error of the test rather than a claim on the kernel.
    """
    read = Timed.of(p.request("wait_thread", thread=1, timeout=PIN_DELAY_MS / 1000 + 10))
    done = reply_text(read.reply, f"completed, {read.reply.value if read.reply else 0} bytes")
    if None in (read.start_ns, read.end_ns, injection.start_ns, injection.end_ns):
        raise ScenarioError(f"the O_DIRECT read that pins the page did not say when it ran "
                            f"({done})")
    before = (injection.start_ns - read.start_ns) / 1e6  # type: ignore[operator]
    after = (read.end_ns - injection.end_ns) / 1e6  # type: ignore[operator]
    log.info("O_DIRECT read began %.0f ms before the injection, ended %.0f ms after it",
             before, after)
    if before <= 0 or after <= 0:
        raise ScenarioError(f"the O_DIRECT read was not in flight across the injection (it "
                            f"began {before:.0f} ms before it and ended {after:.0f} ms after "
                            f"it): the pin this scenario is about was not there ({done})")
    return f"O_DIRECT read in flight at the injection: {done}"


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


POLICY_NAMES = {syscalls.PR_MCE_KILL_EARLY: "early", syscalls.PR_MCE_KILL_LATE: "late",
                syscalls.PR_MCE_KILL_DEFAULT: "default"}


def _check_meaningful(scenario: Scenario, mount: fs.Mount) -> None:
    if scenario.only_path and mount.kind.path != scenario.only_path:
        raise NotMeaningful(f"{scenario.name} on {mount.kind.name} ({mount.kind.path} path): "
                            + scenario.why_limited)
    if scenario.since:
        v = kernel.Version.parse(kernel.release())
        if (v.major, v.minor) < scenario.since:
            raise NotMeaningful(f"{scenario.name} on {kernel.release()}: "
                                + scenario.why_limited)


def _files(scenario: Scenario, mount: fs.Mount) -> dict[str, str]:
    path = fs.create_file(mount, f"{scenario.name}.dat", FILE_SIZE, fill=FILL,
                          align=scenario.map_size >= PMD_SIZE)
    files = {"main": path}
    if scenario.needs_reflink:
        if not mount.kind.reflink:
            raise NotMeaningful(f"{scenario.name} needs shared extents: {mount.kind.name} has "
                                "no reflink (only xfs-rmapbt is made with reflink=1)")
        files["clone"] = mount.path(f"{scenario.name}.clone")
        fs.reflink_copy(path, files["clone"])
        fs.verify_dax(files["clone"])
    return files


def _hung_observation(scenario: Scenario, mount: fs.Mount, namespace: pmem.Namespace,
                      people: dict[str, Participant], vaddrs: dict[str, int],
                      pfns: dict[str, int], pfn: int, injection: Injection,
                      records: list[object], started: float, path: str) -> Observation:
    """What a scenario saw up to an injection that never returned."""
    people[scenario.injecting_role.name].tracer.pump()
    observed = []
    for r in scenario.roles:
        p = people[r.name]
        mapped, pfn_after, present = _mapping_state(p, vaddrs.get(r.name), scenario.map_size)
        observed.append(ParticipantObs(
            name=r.name, role=r.describe(), pid=p.pid, maps=r.maps, policy=r.policy,
            vaddr=vaddrs.get(r.name), pfn_before=pfns.get(r.name),
            sigbus=tuple(SigbusObs(ev.code_name, ev.addr, ev.addr_lsb, 0.0)
                         for ev in p.log.signals if ev.signo == signal.SIGBUS),
            other_signals=tuple(ev.signal_name for ev in p.log.signals
                                if ev.signo != signal.SIGBUS),
            exit=_exit_text(p.log.exit_status),
            mapped_after=mapped, pfn_after=pfn_after,
            injection=injection.outcome() if r.injects else None,
            range_present=present, range_pages=scenario.map_size // PAGE_SIZE if r.maps else None,
        ))
    return Observation(
        scenario=scenario.name, title=scenario.title, injector=scenario.injector,
        fs=mount.kind.name, path=mount.kind.path, kernel=kernel.release(), pfn=pfn,
        participants=tuple(observed), dmesg=tuple(str(r) for r in records),
        hardware_corrupted_delta_kb=0, badblocks=(),
        duration_s=round(time.monotonic() - started, 3), path_observed=path,
        facts=(("kernel_hung", injection.hung or ""),),
    )


def run(scenario: Scenario, mount: fs.Mount, namespace: pmem.Namespace,
        trace_session: ftrace.FunctionTrace | None = None) -> Observation:
    started = time.monotonic()
    _check_meaningful(scenario, mount)
    files = _files(scenario, mount)
    path = files["main"]
    injector = INJECTORS[scenario.injector](namespace)
    tracer = Tracer()
    pin_device = None
    with UndoStack() as undo, cast(tracer) as people, contextlib.ExitStack() as stack:
        if any(r.pin == "odirect" for r in scenario.roles):
            try:
                pin_device = stack.enter_context(pin.delayed_device(PIN_DELAY_MS))
            except pin.PinError as e:
                raise ScenarioError(f"cannot pin a page with O_DIRECT: {e}") from e
        if scenario.early_kill_sysctl:
            undo.sysctl("vm.memory_failure_early_kill", str(scenario.early_kill_sysctl))
        vaddrs: dict[str, int] = {}
        pfns: dict[str, int] = {}
        policies: dict[str, str] = {}
        for role in scenario.roles:
            p = Participant(role.name, tracer, policy_before_fork=role.policy_before_fork)
            people[role.name] = p
            if role.policy != DEFAULT:
                p.call("mce_kill", policy=role.policy)
            if role.threads:
                p.start_threads(role.threads)
            for thread, pol in role.thread_policies:
                p.call("on_thread", thread=thread, do="mce_kill", args={"policy": pol})
            policies[role.name] = POLICY_NAMES.get(p.call("mce_kill_get"), "?")
            if role.maps and not role.maps_after:
                addr = p.call("mmap", path=files[role.maps_file], offset=0,
                              length=scenario.map_size)
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
        if scenario.pfn_from_extent_map:
            pfns["(extent map)"] = pmem.data_start(namespace) // PAGE_SIZE + \
                fs.physical_offset(path, 0) // PAGE_SIZE
            if not namespace.contains_pfn(pfns["(extent map)"]):
                raise ScenarioError(f"{path}: its first block maps to pfn "
                                    f"{pfns['(extent map)']:#x}, outside {namespace.name}")
            _confirm_extent_pfn(tracer, namespace, path)
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
        if scenario.unlink_before:
            os.unlink(path)
            os.sync()

        pins: dict[str, str] = {}
        for role in scenario.roles:
            p = people[role.name]
            if role.pin == "io_uring":
                pins[role.name] = reply_text(p.request("io_uring_register", addr=vaddrs[role.name],
                                                        length=PAGE_SIZE), "registered")
            elif role.pin == "odirect":
                # through op_after: the read reports when it ran, to prove it
                # was in flight across the injection
                p.call("start_on_thread", thread=1, do="after", args={
                    "seconds": 0, "do": "odirect_into",
                    "args": {"device": pin_device, "addr": vaddrs[role.name],
                             "length": PAGE_SIZE}})
                time.sleep(PIN_SETTLE_S)

        inj_role = scenario.injecting_role
        inj_by = people[inj_role.name]
        injecting = _OnThread(inj_by, inj_role.inject_thread) if inj_role.inject_thread else inj_by
        hw_before = kernel.hardware_corrupted_kb()
        mf_before = kernel.memory_failure_stats()
        injection2 = None
        with kmsg.capture() as log_capture:
            t0 = time.monotonic_ns()
            inj_window = Timed(None)
            with ftrace.trace_injection(trace_session) as trace:
                try:
                    injection = injector.inject(injecting, vaddrs.get(inj_role.name), pfn)
                    inj_window = Timed(injection.reply, t0, time.monotonic_ns())
                except ParticipantError as e:
                    # the call never returned: the kernel is stuck in it
                    hung = f"no return within {inj_by.timeout_s:.0f} s: " + kernel.stuck_stack(
                        inj_by.pid)
                    log.error("%s: %s (%s)", scenario.name, hung, e)
                    injection = Injection(injector.name, inj_by.name, pfn,
                                          vaddrs.get(inj_role.name), None, hung=hung)
                tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
            records = log_capture.read()
            if injection.hung:
                # nothing more can be asked of this kernel: record what was seen
                return _hung_observation(scenario, mount, namespace, people, vaddrs, pfns, pfn,
                                         injection, records, started, trace.path)
            if scenario.inject_twice:
                injection2 = injector.inject(injecting, vaddrs.get(inj_role.name), pfn).outcome()
                tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
            for role in scenario.roles:
                if role.pin == "odirect":
                    pins[role.name] = _pin_outcome(people[role.name], inj_window)
            snapshot = {role.name: _mapping_state(people[role.name], vaddrs.get(role.name),
                                                  scenario.map_size)
                        for role in scenario.roles if role.maps and not role.unmaps_before}
            access = {}
            reads = {}
            ios: dict[str, dict[str, str]] = {}
            unpoison = None
            if scenario.unpoison_after:
                reply = people[inj_role.name].request("write_file", path=UNPOISON_PFN,
                                                      data=f"{pfn:#x}\n")
                unpoison = reply_text(reply)
                tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
            for role in scenario.roles:
                p = people[role.name]
                if role.maps_after:
                    addr = p.call("mmap", path=path, offset=0, length=scenario.map_size)
                    vaddrs[role.name] = addr
                    access[role.name] = _probe_access(p, addr, t0)
                if role.reads_after:
                    reply = p.request("pread", path=path, offset=0, length=PAGE_SIZE)
                    data = reply.value if reply is not None else None
                    reads[role.name] = reply_text(
                        reply, "old data" if data == [FILL] else f"data {data}", died="died")
                if role.io_after:
                    reply = p.request("file_io", path=path, offset=0, fill=FILL)
                    ios[role.name] = (reply.value if reply is not None and reply.ok else
                                      {"file_io": reply_text(reply)})
            if scenario.probe_access:
                for role in scenario.roles:
                    if role.maps and not role.unmaps_before and not role.maps_after \
                            and people[role.name].alive:
                        access[role.name] = _probe_access(people[role.name], vaddrs[role.name], t0)
                tracer.settle(SETTLE_QUIET_S, SETTLE_LIMIT_S)
            records += log_capture.read()
        hw_delta = kernel.hardware_corrupted_kb() - hw_before
        mf_delta = kernel.stats_delta(mf_before, kernel.memory_failure_stats())

        observed = []
        for role in scenario.roles:
            p = people[role.name]
            probe = access.get(role.name)
            n_inject = len(p.log.signals) - (1 if probe and probe[1] is not None else 0)
            bus = [ev for ev in p.log.signals[:n_inject] if ev.signo == signal.SIGBUS]
            sigbus = tuple(SigbusObs(ev.code_name, ev.addr, ev.addr_lsb, (ev.at_ns - t0) / 1e6)
                           for ev in bus)
            others = tuple(ev.signal_name for ev in p.log.signals if ev.signo != signal.SIGBUS)
            mapped_after, pfn_after, range_present = snapshot.get(role.name, (None, None, None))
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
                signal_thread=p.thread_name(bus[0].tid) if bus and sigbus else None,
                kill_policy=policies.get(role.name),
                io=tuple(ios.get(role.name, {}).items()),
                pin=pins.get(role.name),
                injection2=injection2 if role.injects else None,
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
        facts=(("memory_failure_stats", mf_delta),
               ("nd_bus_commands", pmem.bus_commands(namespace))),
    )
