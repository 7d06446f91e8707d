"""What a scenario saw: the data the player records and the expectations judge.

Kept apart from the player (mfinject.scenarios.runner) so that judging an
observation, reporting it or feeding one to a unit test needs no kernel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SigbusObs:
    code: str
    addr: int
    addr_lsb: int
    after_ms: float  # since the injection call was issued


@dataclass(frozen=True)
class StepObs:
    """One step of the scenario's timeline and what it came to."""

    step: str     # the step as the catalogue describes it: "B maps 8 pages of main at page 3"
    outcome: str  # "ok", "SIGBUS BUS_MCEERR_AR", "Device or resource busy", ...


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
    mapped_after: bool | None  # the poisoned page's entry after the injection
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
    # the second injection's outcome (inject twice)
    injection2: str | None = None
    # a pwrite() into the poisoned page after the injection: "16 bytes written", an error
    wrote: str | None = None
    # where the poisoned page is in this participant's mapping (vaddr + index * 4 KiB)
    poison_addr: int | None = None
    # the file page its mapping starts at, and the poisoned page's index in it
    map_offset_page: int | None = None
    poison_index: int | None = None
    # the present bit of every page of the mapped range: before the injection,
    # and after it ("1" present, "0" not), first page first
    range_before: str | None = None
    range_after: str | None = None
    # a second mapping of the same file in the same process (MapAgain): where the
    # poisoned page is in it, and its pages' state before and after
    poison_addr2: int | None = None
    poison_index2: int | None = None
    range_before2: str | None = None
    range_after2: str | None = None


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
    # facts about the whole run, by name: node memory_failure counters, seeds,
    # the filesystem's features as read back, ...
    facts: tuple[tuple[str, str], ...] = ()
    # the timeline as played, one entry per step
    steps: tuple[StepObs, ...] = ()

    def fact(self, name: str) -> str | None:
        return dict(self.facts).get(name)

    def participant(self, name: str) -> ParticipantObs:
        for p in self.participants:
            if p.name == name:
                return p
        raise KeyError(name)
