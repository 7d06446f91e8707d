"""Which pages of the namespace carry poison since its last reset.

Software injection sets PG_hwpoison on the page; for an fsdax page nothing
clears it but re-enabling the namespace (:func:`mfinject.pmem.reset`
re-initialises its memmap), and no interface reads it back (/proc/kpageflags
answers only for online pages). So the suite keeps its own ledger: every
injection notes its PFN here, a reset forgets them all, and a scenario
refuses to start on a page the ledger holds. That is what lets a filesystem
be kept from one test to the next (:mod:`mfinject.fspool`): a poisoned page
may stay behind only inside a file nobody touches again, never in free
space that a later test's file could be given.
"""

from __future__ import annotations

from collections.abc import Iterable

from mfinject.errors import MfinjectError


class PoisonedPageError(MfinjectError):
    """A scenario was about to use a page an earlier test poisoned."""


_poisoned: set[int] = set()


def note(pfn: int) -> None:
    """An injection was made on ``pfn`` (whatever it answered: EBUSY may still set the flag)."""
    _poisoned.add(pfn)


def poisoned() -> frozenset[int]:
    return frozenset(_poisoned)


def forget() -> None:
    """The namespace was reset: every page is fresh."""
    _poisoned.clear()


def check_fresh(pfns: Iterable[int | None], what: str) -> None:
    """Refuse pages poisoned since the last reset: the scenario would start on poison."""
    stale = sorted(p for p in pfns if p is not None and p in _poisoned)
    if stale:
        raise PoisonedPageError(
            f"{what}: pfn {', '.join(hex(p) for p in stale)} was poisoned by an earlier test "
            "on this filesystem and the namespace was not reset since: the filesystem should "
            "not have been kept (a bug of mfinject.fspool)")


def check_fresh_ranges(ranges: list[range], what: str) -> None:
    """:func:`check_fresh` over every page of ``ranges`` (a file's, say)."""
    check_fresh((p for p in _poisoned if any(p in r for r in ranges)), what)
