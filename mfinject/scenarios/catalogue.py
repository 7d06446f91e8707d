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


def spoils_filesystem(subject: str) -> bool:
    """Whether the test playing ``subject`` leaves its filesystem unfit to serve the
    next test (mfinject.fspool): it frees blocks it may have poisoned (truncate,
    unlink, hole punch), shares blocks (FICLONE), or poisons XFS's own metadata.
    Run last among a kind's tests, they let the others share one filesystem: each
    of them costs a namespace reset and a mkfs for whatever comes after it."""
    from mfinject.scenarios.steps import Clone, FindMetadata, Truncate, Unlink

    played = _played(subject)
    if isinstance(played, races.Race):
        return played.racer in (races.TRUNCATE, races.PUNCH_HOLE) or played.needs_reflink
    return played is not None and any(isinstance(s, (Clone, FindMetadata, Truncate, Unlink))
                                      for s in played.steps)
