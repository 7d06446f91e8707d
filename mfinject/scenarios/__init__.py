"""Scenarios: who takes part, and a timeline of steps ending in poison.

A scenario is data (:class:`Scenario`): its participants (:class:`Proc`) and
an ordered list of steps (:mod:`mfinject.scenarios.steps`). The player,
:mod:`mfinject.scenarios.runner`, carries the steps out on a mounted fsdax
filesystem and returns an :class:`~mfinject.scenarios.observation.Observation`.
What the kernel should do is not here but in :mod:`mfinject.expectations`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mfinject.observers.mflog import POISONING, KernelMessage
from mfinject.scenarios.steps import (Clone, FileIO, Inject, Map, MapAfter, MapAgain, Pin, Pread,
                                      Step, Touch, Unmap, Write)

PMD_SIZE = 2 << 20
DEFAULT = "default"  # follows vm.memory_failure_early_kill, which the suite sets to 0
EARLY = "early"      # prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY)
LATE = "late"        # prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_LATE)


@dataclass(frozen=True)
class Proc:
    """A participant process: its kill policy and threads, set before any step."""

    name: str
    policy: str = DEFAULT
    # more threads in the process (thread 1, 2, ...), and per-thread kill policies
    threads: int = 0
    thread_policies: tuple[tuple[int, str], ...] = ()
    # the policy is set by a parent that then forks this participant: inherited
    policy_before_fork: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    injector: str  # a key of mfinject.injectors.INJECTORS
    procs: tuple[Proc, ...]
    steps: tuple[Step, ...]
    # the window each mapper maps: one PTE-mapped run of pages, or (pmd) 2 MiB
    # mapped by one PMD (2 MiB-aligned extent and address, checked through
    # the fs_dax:dax_pmd_fault_done tracepoint)
    pmd: bool = False
    # vm.memory_failure_early_kill during the scenario (the suite's default is 0)
    early_kill_sysctl: int = 0
    # the scenario is meaningful only on this memory-failure path, from this release
    only_path: str | None = None
    since: tuple[int, int] | None = None
    why_limited: str = ""
    # the injection names no page (unbind: the whole device goes): the page
    # observed is the first of a window at file offset 0, whatever the seed
    whole_device: bool = False
    # what it may make mm/memory-failure.c log (mfinject.observers.mflog): any
    # other memory-failure line is a kernel-health finding
    kernel_messages: tuple[KernelMessage, ...] = POISONING
    # taint flags it raises by design (a machine check: M), which are no finding
    taint: int = 0

    @property
    def map_size(self) -> int:
        return PMD_SIZE if self.pmd else 4096

    @property
    def needs_reflink(self) -> bool:
        """Meaningful only where FICLONE shares blocks."""
        return any(isinstance(s, Clone) for s in self.steps)

    @property
    def injection(self) -> Inject:
        return next(s for s in self.steps if isinstance(s, Inject))

    def _before_injection(self) -> tuple[Step, ...]:
        steps = list(self.steps)
        return tuple(steps[:steps.index(self.injection)])

    def mappers(self) -> tuple[str, ...]:
        """Who has the page mapped when the poison arrives (mapped, and not unmapped)."""
        before = self._before_injection()
        unmapped = {s.who for s in before if isinstance(s, Unmap)}
        return tuple(dict.fromkeys(s.who for s in before
                                   if isinstance(s, Map) and s.who not in unmapped))

    def maps(self, who: str) -> bool:
        """``who`` maps the window at some point (before or after the injection)."""
        return any(isinstance(s, (Map, MapAfter)) and s.who == who for s in self.steps)

    def maps_twice(self, who: str) -> bool:
        return any(isinstance(s, MapAgain) and s.who == who for s in self.steps)

    def describe(self, who: str) -> str:
        """What ``who`` does, in a few words: for reports and listings."""
        proc = next(p for p in self.procs if p.name == who)
        before = self._before_injection()
        did = []
        for s in self.steps:
            if getattr(s, "who", None) != who:
                continue
            text = s.describe().removeprefix(who + " ")
            if isinstance(s, Map) and s in before and who not in self.mappers():
                text += ", unmaps it before the injection"
            if not isinstance(s, Unmap):
                did.append(text)
        window = "a 2 MiB PMD of " if self.pmd else ""
        text = ", ".join(did).replace("maps and faults the window of ", "maps " + window)
        parts = [text or "takes no step",
                 f"{proc.policy_before_fork or proc.policy} kill"]
        if proc.threads:
            parts.append(f"{proc.threads} more threads")
        return f"{who} ({'; '.join(parts)})"


__all__ = ["Clone", "DEFAULT", "EARLY", "FileIO", "Inject", "LATE", "Map", "MapAfter", "MapAgain",
           "PMD_SIZE", "Pin", "Pread", "Proc", "Scenario", "Touch", "Unmap", "Write"]
