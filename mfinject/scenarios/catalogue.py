"""Every scenario the suite runs, in report order."""

from __future__ import annotations

from mfinject.observers.mflog import KernelMessage
from mfinject.scenarios import (
    access,
    badblocks,
    fileio,
    first,
    locking,
    machine_check,
    pinned,
    pmd,
    policy,
    races,
    self_inject,
    shared,
    threads,
    twice_mapped,
    unbind,
)
from mfinject.scenarios import Scenario

SCENARIOS = (first.SCENARIOS + access.SCENARIOS + policy.SCENARIOS + locking.SCENARIOS
             + pmd.SCENARIOS + badblocks.SCENARIOS + threads.SCENARIOS + fileio.SCENARIOS
             + self_inject.SCENARIOS + twice_mapped.SCENARIOS + shared.SCENARIOS
             + pinned.SCENARIOS + machine_check.SCENARIOS)

# played by their own tests (they provoke filesystem shutdown messages on purpose)
SEPARATE = unbind.SCENARIOS
ALL = SCENARIOS + SEPARATE


def kernel_messages(subject: str) -> tuple[KernelMessage, ...]:
    """What the test playing ``subject`` may make mm/memory-failure.c log.

    ``subject`` is a scenario's or race's name, or the name of a test: each of
    SEPARATE is played by test_<name> (mfinject.listing). A test that plays
    none of them poisons nothing, and may log nothing of memory-failure.
    """
    played = _played(subject)
    return played.kernel_messages if played is not None else ()


def _played(subject: str) -> Scenario | races.Race | None:
    """The scenario or race the test named ``subject`` (or test_<name>) plays."""
    return next((p for p in (*ALL, *races.RACES)
                 if subject in (p.name, "test_" + p.name.replace("-", "_"))), None)


def taint(subject: str) -> int:
    """The taint flags the test playing ``subject`` raises by design (Scenario.taint)."""
    return getattr(_played(subject), "taint", 0)  # a race taints nothing by design
