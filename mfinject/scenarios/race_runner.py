"""Play a :class:`~mfinject.scenarios.races.Race` for a number of seeded iterations."""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from mfinject import fs, kernel, ledger, pmem
from mfinject.injectors import CORRUPT_PFN, INJECTORS, check_pfn
from mfinject.observers import ftrace, kmsg, pagemap
from mfinject.observers.mflog import HWPOISON_FAULT, SIGBUS_SENT, KernelMessage
from mfinject.observers.tracer import SignalEvent, Tracer
from mfinject.participant import Participant, Timed, cast, overlap_us, reply_text
from mfinject.scenarios import LATE
from mfinject.scenarios.races import (FAULT, MADVISE, MUNMAP, OWN_FAULT, PUNCH_HOLE, REFLINK,
                                      TRUNCATE, Race)
from mfinject.scenarios.runner import (
    FILL,
    SETTLE_LIMIT_S,
    NotMeaningful,
    Observation,
    ParticipantObs,
    ScenarioError,
)
from mfinject.syscalls import PAGE_SIZE

PAGE_SHIFT = PAGE_SIZE.bit_length() - 1

log = logging.getLogger(__name__)

RACE_FILE_PAGES = 16
# Both sides are given one start time, START_LEAD_S ahead (time enough to hand
# each process its request), and each starts after its own seeded delay in
# [0, MAX_DELAY_S) from it. The calls take 0.1 to 4 ms under TCG. Delays drawn
# from the moment each request arrived (4 ms windows) overlapped in 1 to 15
# iterations of 32, and in none for ext4 race-munmap once (6.1.0-56).
START_LEAD_S = 0.02
# after both halves returned, every signal they brought is queued or delivered
# (memory-failure and the fault path signal before the call returns), and
# Tracer.settle waits for what is queued: a short quiet is enough
RACE_QUIET_S = 0.02
MAX_DELAY_S = 0.001
# what corrupt-pfn may answer while the page is leaving its file: 0, or -EBUSY
# when dax_lock_page() finds the page no longer belongs to the file it read
ALLOWED_INJECTION = ("ok", "Device or resource busy")
# A race that never raced tests nothing: at least this share of iterations
# must have the injection and the racing call overlap in time (CLOCK_MONOTONIC
# on both sides), and at least this share must poison the page (not EBUSY:
# the racer won the lock), or the race is an error of the test, never a pass.
# Seen on 6.1.0-56 with one start time and 1 ms windows: 18 to 31 of 32
# overlapping, 7 to 32 poisoning (xfs race-punch-hole 7: the racer mostly won).
MIN_OVERLAPPING_SHARE = 0.125
MIN_INJECTED_SHARE = 0.125
# the racing fault of race-fault reads the page: before the poison, or with
# software injection after it (madvise-late-access: the fault path checks only
# the bad-block list), the old data; with the poison seen, SIGBUS
# BUS_MCEERR_AR (hwpoison.rst: "Send SIGBUS when the application runs into
# the corrupted page")
FAULT_OUTCOMES = ("old data", "SIGBUS BUS_MCEERR_AR")


@dataclass(frozen=True)
class Iteration:
    index: int
    page: int
    inject_delay_us: int
    race_delay_us: int
    injection: str
    racer: str
    mapper_signals: tuple[str, ...]
    path: str = "not traced"  # the memory-failure path this injection took
    # how long the two calls ran at the same time, in us (negative: the gap
    # between them); None when a side did not report when it ran
    overlap_us: float | None = None
    # the signals of the injecting thread: none for I (it maps nothing), the
    # caller's BUS_MCEERR_AR for madvise()
    injector_signals: tuple[str, ...] = ()
    racer_tid: int = 0  # the racing thread (race-madvise-fault: M's thread 1)
    injector_tid: int = 0  # the injecting thread (race-madvise-fault: M's thread 2)
    hw_kb: int | None = None  # HardwareCorrupted's change across the iteration

    def describe(self) -> str:
        both = ("?" if self.overlap_us is None else f"{self.overlap_us:.0f} us overlap"
                if self.overlap_us >= 0 else f"{-self.overlap_us:.0f} us apart")
        return (f"iteration {self.index} (page {self.page}, inject after {self.inject_delay_us} us,"
                f" race after {self.race_delay_us} us; {both}): injection {self.injection} via "
                f"{self.path}, injector signals {list(self.injector_signals) or 'none'}, racer "
                f"{self.racer}, mapper signals {list(self.mapper_signals) or 'none'}")


def _fresh(people: dict[str, Participant], tracer: Tracer, name: str, policy: str | None,
           threads: int = 1) -> Participant:
    p = people.get(name)
    if p is not None and p.alive:
        return p
    p = Participant(name, tracer)
    if policy:
        p.call("mce_kill", policy=policy)
    p.start_threads(threads)
    people[name] = p
    return p


@dataclass(frozen=True)
class KernelSaid:
    """Which threads the kernel's own log names (mfinject.observers.mflog)."""

    announced: frozenset[int] = frozenset()  # "MCE: Killing comm:TID": a fault's SIGBUS
    sent: frozenset[int] = frozenset()  # "Sending SIGBUS to comm:TID": memory-failure's

    @classmethod
    def of(cls, records: Iterable[object]) -> KernelSaid:
        return cls(_tids(records, HWPOISON_FAULT), _tids(records, SIGBUS_SENT))


def _tids(records: Iterable[object], message: KernelMessage) -> frozenset[int]:
    return frozenset(int(m.group(1)) for r in records
                     if isinstance(r, kmsg.KmsgRecord) and message.matches(r.text)
                     and (m := re.search(r":(\d+) due to", r.text)))


def violations(race: Race, it: Iteration, expected_path: str,
               said: KernelSaid = KernelSaid()) -> list[str]:
    """What in one iteration falls outside the documented outcomes.

    ``said``: the threads the kernel's log names, which tell a fault that met
    the poison (the x86 fault handler's SIGBUS) from a signal memory-failure
    sent, and to whom.
    """
    bad = []
    # madvise: a racing fault that met the poison ends the process (its SIGBUS
    # is a fault's, delivered), which may take the caller's reply with it
    allowed = ALLOWED_INJECTION + (("process died",) if race.injector == MADVISE
                                   and it.racer == FAULT_OUTCOMES[1] else ())
    if it.injection not in allowed:
        bad.append(f"injection returned {it.injection!r} (allowed: {', '.join(allowed)})")
    bad += _injector_signal_violations(race, it)
    if race.injector == MADVISE:
        bad += _own_threads(it, said)
    allowed_racer = FAULT_OUTCOMES if race.racer in (FAULT, OWN_FAULT) else ("ok",)
    if it.racer not in allowed_racer:
        bad.append(f"the {race.racer} gave {it.racer!r} (allowed: {', '.join(allowed_racer)})")
    if it.mapper_signals:
        bad.append(f"the late-kill mapper got {', '.join(it.mapper_signals)}")
    if it.path != expected_path:
        bad.append(f"the injection took the {it.path} path, not {expected_path}")
    if it.hw_kb is not None and it.hw_kb != 4:
        # every injection counts its page, EBUSY included (seen on 6.1.0-56,
        # 6.12.118 and 7.3.4), once (proc.rst)
        bad.append(f"HardwareCorrupted {it.hw_kb:+d} kB for one injection of a fresh page "
                   "(expected +4 kB)")
    return bad


def _injector_signal_violations(race: Race, it: Iteration) -> list[str]:
    """I maps nothing and gets no signal; madvise()'s caller gets BUS_MCEERR_AR for the
    page when it poisoned it (commit 03151c6e0b66), none when it refused (-EBUSY).

    When thread 1's SIGBUS ended the process before madvise() replied, the
    caller's own signal may be lost to the group exit (_own_threads() then
    checks that memory-failure sent it to the caller).
    """
    if race.injector != MADVISE:
        return [f"I, which maps nothing, got {', '.join(it.injector_signals)}"
                ] if it.injector_signals else []
    want = {"ok": [("BUS_MCEERR_AR",)], "process died": [(), ("BUS_MCEERR_AR",)]}.get(
        it.injection, [()])
    if it.injector_signals in want:
        return []
    return [f"madvise()'s caller (thread 2) got {list(it.injector_signals) or 'no signal'} "
            f"after {it.injection!r} (expected {' or '.join(str(list(w)) for w in want)})"]


def _own_threads(it: Iteration, said: KernelSaid) -> list[str]:
    """race-madvise-fault: memory-failure signals the caller and no other thread; a
    SIGBUS of thread 1 is its fault's own, on a page that was poisoned."""
    bad = []
    poisoned = it.injection in ("ok", "process died")
    if poisoned and it.injector_tid not in said.sent:
        bad.append(f"memory-failure logged no SIGBUS to madvise()'s caller (tid "
                   f"{it.injector_tid}) after {it.injection!r}")
    if it.racer_tid in said.sent:
        bad.append(f"memory-failure sent SIGBUS to thread 1 (tid {it.racer_tid}), which only "
                   "faulted (commit 03151c6e0b66: BUS_MCEERR_AR only to current)")
    if it.racer.startswith("SIGBUS"):
        if it.racer_tid not in said.announced:
            bad.append(f"thread 1 got {it.racer} that the fault handler did not announce as its "
                       "own (no 'MCE: Killing ...:TID'): a signal sent to the wrong thread?")
        if not poisoned:
            bad.append(f"thread 1 got {it.racer} after madvise() returned {it.injection!r}: the "
                       "page was not poisoned")
    return bad


def raced(done: list[Iteration]) -> str | None:
    """Why these iterations do not show a race (None: they do)."""
    if not done:
        return "no iteration ran"
    both = [it for it in done if it.overlap_us is not None and it.overlap_us >= 0]
    injected = sum(it.injection == "ok" for it in done)
    if not both:
        gaps = sorted(-it.overlap_us for it in done if it.overlap_us is not None)
        return (f"the race never raced: in no iteration did the injection and the racing call "
                f"overlap (closest {gaps[0]:.0f} us apart)" if gaps else
                "the race never raced: no iteration reported when its two calls ran")
    if len(both) < MIN_OVERLAPPING_SHARE * len(done):
        return (f"the race hardly raced: the injection and the racing call overlapped in only "
                f"{len(both)} of {len(done)} iterations (at least {MIN_OVERLAPPING_SHARE:.1%} "
                "needed)")
    if injected < MIN_INJECTED_SHARE * len(done):
        return (f"the injection poisoned the page in only {injected} of {len(done)} iterations "
                f"(at least {MIN_INJECTED_SHARE:.1%} needed): the race mostly tested EBUSY")
    return None


RACER_OPS = {
    TRUNCATE: lambda path, addr, page: ("truncate", {"path": path, "length": 0}),
    PUNCH_HOLE: lambda path, addr, page: ("punch_hole", {"path": path, "offset": page * PAGE_SIZE,
                                                         "length": PAGE_SIZE}),
    MUNMAP: lambda path, addr, page: ("munmap", {"addr": addr}),
    FAULT: lambda path, addr, page: ("map_touch", {"path": path, "offset": page * PAGE_SIZE,
                                                   "length": RACE_FILE_PAGES * PAGE_SIZE}),
    REFLINK: lambda path, addr, page: ("ficlone", {"src": path, "dst": path + ".clone"}),
}


@dataclass(frozen=True)
class _Cast:
    tracer: Tracer
    people: dict[str, Participant]
    trace_session: ftrace.FunctionTrace | None


@dataclass(frozen=True)
class _Half:
    """One half of an iteration: which thread of whom does what."""

    p: Participant
    thread: int
    op: str
    args: dict

    @property
    def tid(self) -> int:
        return self.p.thread_ids[self.thread - 1]


def _halves(race: Race, cast_: _Cast, namespace: pmem.Namespace, path: str, addr: int,
            page: int) -> tuple[_Half, _Half]:
    """The injection and the racing call, once the page (or its neighbour) is faulted
    and its PFN shown to lie in the namespace."""
    people, tracer = cast_.people, cast_.tracer
    m = people["M"]
    target = addr + page * PAGE_SIZE
    if race.injector == MADVISE:
        # the page itself stays unfaulted (thread 1's fault is the race): its
        # neighbour shows the mapping is DAX on this namespace
        near = addr + (page + 1) % RACE_FILE_PAGES * PAGE_SIZE
        m.call("touch", addr=near)
        check_pfn(namespace, _present_pfn(m, near))
        pfn = _extent_pfn(path, namespace, page)
        check_pfn(namespace, pfn)
        ledger.check_fresh((pfn,), f"page {page} of {path}")
        ledger.note(pfn)
        return (_Half(m, 2, "madvise_hwpoison", {"addr": target, "length": PAGE_SIZE}),
                _Half(m, 1, "touch", {"addr": target}))
    m.call("touch", addr=target)
    pfn = _present_pfn(m, target)
    check_pfn(namespace, pfn)
    ledger.check_fresh((pfn,), f"page {page} of {path}")
    ledger.note(pfn)
    injecting = _fresh(people, tracer, "I", None)
    racer = _fresh(people, tracer, "R", None) if race.racer != MUNMAP else m
    op, args = RACER_OPS[race.racer](path, addr, page)
    return (_Half(injecting, 1, "write_file", {"path": CORRUPT_PFN, "data": f"{pfn:#x}\n"}),
            _Half(racer, 1, op, args))


def _extent_pfn(path: str, namespace: pmem.Namespace, page: int) -> int:
    """A page's pfn from the extent map (the formula the FindPfn step confirms)."""
    return (pmem.data_start(namespace) + fs.physical_offset(path, page * PAGE_SIZE)) // PAGE_SIZE


FENCES = 4  # files an iteration may leave holding poisoned blocks before it gives up


def _fresh_file(race: Race, mount: fs.Mount, namespace: pmem.Namespace, i: int,
                first: int) -> tuple[str, int]:
    """A new file for iteration ``i`` and its page to poison (:func:`_fresh_page`).

    XFS and ext4 give a new file the blocks the last truncate or hole punch
    freed, so one region's pages may all be poisoned after as many iterations
    as it has pages. A file that got only poisoned pages is kept as it is (it
    fences them off: they are never freed again) and another one is made."""
    for fence in range(FENCES + 1):
        name = f"{race.name}-{i}.dat" if not fence else f"{race.name}-{i}-fence{fence}.dat"
        path = fs.create_file(mount, name, RACE_FILE_PAGES * PAGE_SIZE, fill=FILL)
        page = _fresh_page(race, path, namespace, first)
        if page is not None:
            return path, page
        log.info("%s: every page of it was poisoned by an earlier iteration (blocks freed "
                 "by truncate or hole punch): kept to fence them off", path)
    raise ScenarioError(f"{race.name} iteration {i}: {FENCES + 1} new files in a row were given "
                        "only pages an earlier iteration poisoned (blocks freed by truncate or "
                        "hole punch)")


def _fresh_page(race: Race, path: str, namespace: pmem.Namespace, first: int) -> int | None:
    """The page to poison: ``first``, or the next one (wrapping) that no earlier
    iteration poisoned (None: none is left). An earlier iteration's truncate or hole punch may have
    freed a poisoned block that this file was given (the race's filesystem is
    not kept for another test: mfinject.fspool). The madvise race also touches
    the next page, which must be fresh too."""
    poisoned = ledger.poisoned()
    touched = (0, 1) if race.injector == MADVISE else (0,)
    for j in range(RACE_FILE_PAGES):
        page = (first + j) % RACE_FILE_PAGES
        if all(_extent_pfn(path, namespace, (page + k) % RACE_FILE_PAGES) not in poisoned
               for k in touched):
            return page
    return None


def _present_pfn(p: Participant, addr: int) -> int:
    pfn = pagemap.read_entry(p.pid, addr).pfn
    if pfn is None:
        raise ScenarioError(f"{p.name}: the page at {addr:#x} is not present after a touch")
    return pfn


def _signal_texts(events: list[SignalEvent], page_addr: int | None) -> tuple[str, ...]:
    """SIGBUS si_codes; where the page's address is known, an si_addr that is not it and
    an si_addr_lsb that is not a page's (sigaction(2))."""
    def text(ev: SignalEvent) -> str:
        if page_addr is None:
            return ev.code_name
        return (ev.code_name
                + ("" if ev.addr == page_addr else f" at {ev.addr:#x}, not the page "
                   f"{page_addr:#x}")
                + ("" if ev.addr_lsb == PAGE_SHIFT else f" lsb {ev.addr_lsb}"))
    return tuple(text(ev) for ev in events if ev.signo == signal.SIGBUS)


def _iteration(race: Race, mount: fs.Mount, namespace: pmem.Namespace, cast_: _Cast,
               i: int, rng: random.Random) -> Iteration:
    """One iteration: M maps a page of a fresh file; it is poisoned while it is changed."""
    tracer = cast_.tracer
    page = rng.randrange(RACE_FILE_PAGES)
    # the injection tends to start first, so that it wins the lock in enough
    # iterations; the windows overlap, so either can start first
    d_inj, d_race = rng.uniform(0, MAX_DELAY_S / 2), rng.uniform(0, MAX_DELAY_S * 1.5)
    path, page = _fresh_file(race, mount, namespace, i, page)
    m = _fresh(cast_.people, tracer, "M", LATE, threads=2 if race.injector == MADVISE else 1)
    if race.injector == MADVISE:
        tracer.keep_alive(m.pid, m.thread_ids[1])
    addr = m.call("mmap", path=path, offset=0, length=RACE_FILE_PAGES * PAGE_SIZE)
    inj_half, race_half = _halves(race, cast_, namespace, path, addr, page)
    seen = {p.pid: len(p.log.signals) for p in (m, inj_half.p, race_half.p)}
    hw_before = kernel.hardware_corrupted_kb()
    with ftrace.trace_injection(cast_.trace_session) as trace:
        inj, rac = _play_halves(tracer, (inj_half, d_inj), (race_half, d_race))
    new = {pid: tracer.tracees[pid].signals[n:] for pid, n in seen.items()}
    own = race.injector == MADVISE  # both halves are threads of M: signals told apart by thread

    def of(p: Participant, tids: tuple[int, ...], keep: bool = True) -> list[SignalEvent]:
        return [ev for ev in new[p.pid] if not own or (ev.tid in tids) == keep]
    page_addr = addr + page * PAGE_SIZE if own else None
    inj_signals = of(inj_half.p, (inj_half.tid,))
    if own and inj_signals:  # madvise() ended when its caller's signal stopped it
        inj = dataclasses.replace(inj, end_ns=min(inj.end_ns or inj_signals[0].at_ns,
                                                  inj_signals[0].at_ns))
    it = Iteration(
        i, page, round(d_inj * 1e6), round(d_race * 1e6),
        reply_text(inj.reply, died="process died"),
        _racer_outcome(race, rac, of(race_half.p, (race_half.tid,)), page_addr),
        _signal_texts(of(m, (inj_half.tid, race_half.tid), keep=False), None),
        trace.path, overlap_us(inj, rac), _signal_texts(inj_signals, page_addr),
        race_half.tid, inj_half.tid, kernel.hardware_corrupted_kb() - hw_before)
    if m.alive and race.racer != MUNMAP:
        m.request("munmap", addr=addr)
    return it


def _play_halves(tracer: Tracer, *halves: tuple[_Half, float]) -> tuple[Timed, Timed]:
    """Both halves start at one CLOCK_MONOTONIC time, each after its own delay."""
    start = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + int(START_LEAD_S * 1e9)
    for half, delay in halves:
        half.p.call("start_on_thread", thread=half.thread, do="after",
                    args={"at_ns": start + int(delay * 1e9), "do": half.op, "args": half.args})
    handed = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    if handed > start:  # a half that got its request late starts at once: the overlap says
        log.info("both halves had their requests %.1f ms after the start time",
                 (handed - start) / 1e6)
    inj, rac = (Timed.of(half.p.request("wait_thread", thread=half.thread,
                                        timeout=SETTLE_LIMIT_S)) for half, _ in halves)
    tracer.settle(RACE_QUIET_S, SETTLE_LIMIT_S)
    return inj, rac


def _racer_outcome(race: Race, rac: Timed, signals: list[SignalEvent],
                   page_addr: int | None = None) -> str:
    bus = _signal_texts(signals, page_addr)
    if race.racer in (FAULT, OWN_FAULT) and bus:
        return f"SIGBUS {bus[0]}"
    if race.racer in (FAULT, OWN_FAULT) and rac.reply is not None and rac.reply.ok:
        return "old data" if rac.reply.value == FILL else f"data {rac.reply.value:#x}"
    return reply_text(rac.reply, died="process died")


def _participants(race: Race, people: dict[str, Participant]) -> tuple[ParticipantObs, ...]:
    roles = {"I": "I (injects, maps nothing)", "M": "M (maps the page, late kill)",
             "R": f"R ({race.racer})"}
    if race.injector == MADVISE:
        roles["M"] = ("M (maps the page, late kill; thread 2 poisons it with madvise(), "
                      "thread 1 takes the first fault on it)")
    return tuple(ParticipantObs(
        name=name, role=roles[name], pid=p.pid, maps=name == "M",
        policy=LATE if name == "M" else "default", vaddr=None, pfn_before=None, sigbus=(),
        other_signals=tuple(ev.signal_name for ev in p.log.signals),
        exit="alive" if p.alive else f"ended {p.log.exit_status}", mapped_after=None,
        pfn_after=None, injection=None) for name in ("I", "M", "R") if (p := people.get(name)))


def _facts(race: Race, mount: fs.Mount, seed: int, iterations: int, done: list[Iteration],
           bad: list[str]) -> tuple[tuple[str, str], ...]:
    def tally(values: list[str]) -> str:
        return ", ".join(f"{k} x{v}" for k, v in sorted(Counter(values).items()))
    both = [it.overlap_us for it in done if it.overlap_us is not None and it.overlap_us >= 0]
    return (
        ("seed", str(seed)),
        ("iterations", str(len(done))),
        ("injection_outcomes", tally([it.injection for it in done])),
        ("injector_signals", tally([", ".join(it.injector_signals) or "none" for it in done])),
        ("racer_outcomes", tally([it.racer for it in done])),
        ("paths", tally([it.path for it in done])),
        ("overlapping", f"{len(both)} of {len(done)} iterations"
                        + (f" (up to {max(both):.0f} us)" if both else "")),
        ("violations", "none" if not bad else f"{len(bad)}: " + " | ".join(bad[:5])),
        ("reproduce", (f"--mfinject-seed {seed} --mfinject-race-iterations {iterations} "
                       f"-k '{race.name} and {mount.kind.name}'")),
    )


def run(race: Race, mount: fs.Mount, namespace: pmem.Namespace, seed: int, iterations: int,
        trace_session: ftrace.FunctionTrace | None = None) -> Observation:
    """Every iteration judged against its rule; a race that never raced is an error."""
    if race.needs_reflink and not mount.reflink:
        raise NotMeaningful(f"{race.name} needs reflink: {mount.kind.name} has none "
                            "(mfinject list shows the kinds that have)")
    INJECTORS[race.injector](namespace)  # the same prerequisites
    rng = random.Random(f"{seed}/{race.name}/{mount.kind.name}")
    started = time.monotonic()
    tracer = Tracer()
    hw_before = kernel.hardware_corrupted_kb()
    with cast(tracer) as people, kmsg.capture() as log_capture:
        done = []
        for i in range(iterations):
            done.append(_iteration(race, mount, namespace, _Cast(tracer, people, trace_session),
                                   i, rng))
            log.info("%s seed %d: %s", race.name, seed, done[-1].describe())
        records = log_capture.read()
        observed = _participants(race, people)
    said = KernelSaid.of(records)
    bad = [f"{it.describe()}: {'; '.join(v)}" for it in done
           if (v := violations(race, it, mount.mf_path, said))]
    hw_delta = kernel.hardware_corrupted_kb() - hw_before
    if hw_delta != 4 * len(done):
        # every injection counts its page, EBUSY included (seen on 6.1.0-56,
        # 6.12.118 and 7.3.4: +128 kB for 32): a smaller count is poison
        # that did not land, a larger one a page counted twice
        bad.append(f"HardwareCorrupted +{hw_delta} kB after {len(done)} injections of a "
                   f"fresh page each (expected +{4 * len(done)} kB, proc.rst)")
    facts = _facts(race, mount, seed, iterations, done, bad)
    why_not = raced(done)
    if why_not:
        raise ScenarioError(f"{race.name} on {mount.kind.name}: {why_not}; "
                            + "; ".join(f"{k}: {v}" for k, v in facts))
    traced = sorted({it.path for it in done} - {"not traced"})
    return Observation(
        scenario=race.name, title=race.title, injector=race.injector, fs=mount.kind.name,
        path=mount.mf_path, kernel=kernel.release(), pfn=0, participants=observed,
        dmesg=tuple(str(r) for r in records[-200:]),
        hardware_corrupted_delta_kb=hw_delta,
        badblocks=tuple(pmem.badblocks(namespace)),
        duration_s=round(time.monotonic() - started, 3),
        path_observed=", ".join(traced) or "not traced", facts=facts,
    )
