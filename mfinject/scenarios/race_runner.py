"""Play a :class:`~mfinject.scenarios.races.Race` for a number of seeded iterations."""

from __future__ import annotations

import logging
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass

from mfinject import fs, kernel, pmem
from mfinject.injectors import CORRUPT_PFN, CorruptPfnInjector, check_pfn
from mfinject.observers import ftrace, kmsg, pagemap
from mfinject.observers.tracer import Tracer
from mfinject.participant import Participant, cast, reply_text
from mfinject.scenarios import LATE
from mfinject.scenarios.races import FAULT, MUNMAP, PUNCH_HOLE, REFLINK, TRUNCATE, Race
from mfinject.scenarios.runner import (
    FILL,
    SETTLE_LIMIT_S,
    NotMeaningful,
    Observation,
    ParticipantObs,
    ScenarioError,
)
from mfinject.syscalls import PAGE_SIZE

log = logging.getLogger(__name__)

RACE_FILE_PAGES = 16
MAX_DELAY_S = 0.004  # each side starts after a delay in [0, 4 ms)
# what corrupt-pfn may answer while the page is leaving its file: 0, or -EBUSY
# when dax_lock_page() finds the page no longer belongs to the file it read
ALLOWED_INJECTION = ("ok", "Device or resource busy")


@dataclass(frozen=True)
class Iteration:
    index: int
    page: int
    inject_delay_us: int
    race_delay_us: int
    injection: str
    racer: str
    mapper_signals: tuple[str, ...]

    def describe(self) -> str:
        return (f"iteration {self.index} (page {self.page}, inject after {self.inject_delay_us} us,"
                f" race after {self.race_delay_us} us): injection {self.injection}, "
                f"racer {self.racer}, mapper signals {list(self.mapper_signals) or 'none'}")


def _fresh(people: dict[str, Participant], tracer: Tracer, name: str, policy: str | None
           ) -> Participant:
    p = people.get(name)
    if p is not None and p.alive:
        return p
    p = Participant(name, tracer)
    if policy:
        p.call("mce_kill", policy=policy)
    p.start_threads(1)
    people[name] = p
    return p


def violations(race: Race, it: Iteration) -> list[str]:
    """What in one iteration falls outside the documented outcomes."""
    bad = []
    if it.injection not in ALLOWED_INJECTION:
        bad.append(f"injection returned {it.injection!r} (allowed: {', '.join(ALLOWED_INJECTION)})")
    if it.racer not in ("ok", "old data"):
        bad.append(f"the {race.racer} failed: {it.racer}")
    if it.mapper_signals:
        bad.append(f"the late-kill mapper got {', '.join(it.mapper_signals)}")
    return bad


def run(race: Race, mount: fs.Mount, namespace: pmem.Namespace, seed: int, iterations: int,
        trace_session: ftrace.FunctionTrace | None = None) -> Observation:
    if race.needs_reflink and not mount.kind.reflink:
        raise NotMeaningful(f"{race.name} needs reflink: {mount.kind.name} has none "
                            "(only xfs-rmapbt is made with reflink=1)")
    CorruptPfnInjector(namespace)  # the same prerequisites
    rng = random.Random(f"{seed}/{race.name}/{mount.kind.name}")
    started = time.monotonic()
    tracer = Tracer()
    done: list[Iteration] = []
    hw_before = kernel.hardware_corrupted_kb()
    paths_seen: Counter[str] = Counter()
    with cast(tracer) as people, kmsg.capture() as log_capture:
        for i in range(iterations):
            page = rng.randrange(RACE_FILE_PAGES)
            d_inj, d_race = rng.uniform(0, MAX_DELAY_S), rng.uniform(0, MAX_DELAY_S)
            path = fs.create_file(mount, f"{race.name}-{i}.dat", RACE_FILE_PAGES * PAGE_SIZE,
                                  fill=FILL)
            m = _fresh(people, tracer, "M", LATE)
            i_p = _fresh(people, tracer, "I", None)
            r = _fresh(people, tracer, "R", None) if race.racer != MUNMAP else m
            addr = m.call("mmap", path=path, offset=0, length=RACE_FILE_PAGES * PAGE_SIZE)
            m.call("touch", addr=addr + page * PAGE_SIZE)
            entry = pagemap.read_entry(m.pid, addr + page * PAGE_SIZE)
            if entry.pfn is None:
                raise ScenarioError(f"iteration {i}: page {page} not present after a touch")
            check_pfn(namespace, entry.pfn)
            n_signals = len(m.log.signals)
            racer_op = {
                TRUNCATE: ("truncate", {"path": path, "length": 0}),
                PUNCH_HOLE: ("punch_hole", {"path": path, "offset": page * PAGE_SIZE,
                                            "length": PAGE_SIZE}),
                MUNMAP: ("munmap", {"addr": addr}),
                FAULT: ("map_touch", {"path": path, "offset": page * PAGE_SIZE,
                                      "length": RACE_FILE_PAGES * PAGE_SIZE}),
                REFLINK: ("ficlone", {"src": path, "dst": path + ".clone"}),
            }[race.racer]
            with ftrace.trace_injection(trace_session) as trace:
                i_p.call("start_on_thread", thread=1, do="after",
                         args={"seconds": d_inj, "do": "write_file",
                               "args": {"path": CORRUPT_PFN, "data": f"{entry.pfn:#x}\n"}})
                r.call("start_on_thread", thread=1, do="after",
                       args={"seconds": d_race, "do": racer_op[0], "args": racer_op[1]})
                inj = i_p.request("wait_thread", thread=1, timeout=SETTLE_LIMIT_S)
                rac = r.request("wait_thread", thread=1, timeout=SETTLE_LIMIT_S)
                tracer.settle(0.05, SETTLE_LIMIT_S)
            paths_seen[trace.path] += 1
            racer = reply_text(rac, died="process died")
            if race.racer == FAULT and rac is not None and rac.ok:
                racer = "old data" if rac.value == FILL else f"data {rac.value:#x}"
            it = Iteration(i, page, round(d_inj * 1e6), round(d_race * 1e6),
                           reply_text(inj, died="process died"), racer,
                           tuple(ev.code_name for ev in m.log.signals[n_signals:]
                                 if ev.signo == signal.SIGBUS))
            done.append(it)
            log.info("%s seed %d: %s", race.name, seed, it.describe())
            if m.alive and race.racer != MUNMAP:
                m.request("munmap", addr=addr)
        records = log_capture.read()
        observed = []
        for name in ("I", "M", "R"):
            p = people.get(name)
            if p is None:
                continue
            observed.append(ParticipantObs(
                name=name, role={"I": "I (injects, maps nothing)",
                                 "M": "M (maps the page, late kill)",
                                 "R": f"R ({race.racer})"}[name],
                pid=p.pid, maps=name == "M", policy=LATE if name == "M" else "default",
                vaddr=None, pfn_before=None,
                sigbus=(), other_signals=tuple(ev.signal_name for ev in p.log.signals),
                exit="alive" if p.alive else f"ended {p.log.exit_status}",
                mapped_after=None, pfn_after=None, injection=None,
            ))
    bad = [f"{it.describe()}: {'; '.join(v)}" for it in done if (v := violations(race, it))]
    outcomes = Counter(it.injection for it in done)
    racers = Counter(it.racer for it in done)
    facts = (
        ("seed", str(seed)),
        ("iterations", str(len(done))),
        ("injection_outcomes", ", ".join(f"{k} x{v}" for k, v in sorted(outcomes.items()))),
        ("racer_outcomes", ", ".join(f"{k} x{v}" for k, v in sorted(racers.items()))),
        ("paths", ", ".join(f"{k} x{v}" for k, v in sorted(paths_seen.items()))),
        ("violations", "none" if not bad else f"{len(bad)}: " + " | ".join(bad[:5])),
        ("reproduce", (f"--mfinject-seed {seed} --mfinject-race-iterations {iterations} "
                       f"-k '{race.name} and {mount.kind.name}'")),
    )
    return Observation(
        scenario=race.name, title=race.title, injector="corrupt-pfn", fs=mount.kind.name,
        path=mount.kind.path, kernel=kernel.release(), pfn=0, participants=tuple(observed),
        dmesg=tuple(str(r) for r in records[-200:]),
        hardware_corrupted_delta_kb=kernel.hardware_corrupted_kb() - hw_before,
        badblocks=tuple(pmem.badblocks(namespace)),
        duration_s=round(time.monotonic() - started, 3),
        path_observed=", ".join(sorted(k for k in paths_seen if k != "not traced")) or "not traced",
        facts=facts,
    )
