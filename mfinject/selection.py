"""``mfinject vm --fs F --scenario S``: the pytest arguments that run exactly those.

The selection becomes one ``-k`` expression of whole item names, brackets
included (``test_scenario[xfs-corrupt-pfn] or ...``): ``-k`` matches
substrings, and the closing bracket keeps ``corrupt-pfn`` from matching
``corrupt-pfn-twice`` and ``xfs`` from matching ``xfs-rmapbt``. A ``-k`` among
the extra pytest arguments is folded in with ``and``, since pytest honours
only the last ``-k`` it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mfinject import listing
from mfinject.errors import MfinjectError
from mfinject.fs import FS_KINDS

_K_FLAGS = ("-k", "--keyword")


class SelectionError(MfinjectError):
    pass


@dataclass(frozen=True)
class Selection:
    items: tuple[str, ...]  # pytest item names, in report order
    notes: tuple[str, ...]  # pairs asked for by name that do not run, and why


def check_names(kind: str, given: Sequence[str], valid: Sequence[str]) -> None:
    unknown = [n for n in given if n not in valid]
    if unknown:
        raise SelectionError(f"unknown {kind} {', '.join(map(repr, unknown))}: "
                             f"choose from {', '.join(valid)}")


def select(fs_names: Sequence[str], scenario_names: Sequence[str]) -> Selection:
    """The item names of the scenarios ``scenario_names`` on the filesystems ``fs_names``.

    An empty sequence means all. A pair where the scenario is not meaningful
    (reflink on ext4) is left out, with a note when both were named.
    """
    every = listing.entries()
    check_names("filesystem", fs_names, list(FS_KINDS))
    check_names("scenario", scenario_names, [e.name for e in every])
    fss = [f for f in FS_KINDS if not fs_names or f in fs_names]
    chosen = [e for e in every if not scenario_names or e.name in scenario_names]
    items: list[str] = []
    notes: list[str] = []
    for e in chosen:
        for fs in fss:
            if fs in e.filesystems:
                items.append(e.item_name(fs))
            elif fs_names and scenario_names:
                notes.append(f"{e.name} does not run on {fs}: {e.limit} "
                             f"(it runs on {', '.join(e.filesystems)})")
    if not items:
        raise SelectionError("nothing selected: " + "; ".join(notes))
    return Selection(tuple(items), tuple(notes))


def _split_keyword(args: Sequence[str]) -> tuple[list[str], str | None]:
    """``args`` without their -k/--keyword options, and the last expression given."""
    rest: list[str] = []
    expr = None
    i = 0
    while i < len(args):
        a = args[i]
        if a in _K_FLAGS and i + 1 < len(args):
            expr, i = args[i + 1], i + 2
            continue
        if a.startswith("--keyword="):
            expr = a.split("=", 1)[1]
        elif a.startswith("-k") and a not in _K_FLAGS:
            expr = a[2:]
        else:
            rest.append(a)
        i += 1
    return rest, expr


def pytest_args(fs_names: Sequence[str], scenario_names: Sequence[str],
                extra: Sequence[str] = (), keep: Sequence[str] = ()
                ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``extra`` with the selection's ``-k`` added (unchanged when nothing is
    named), and the selection's notes.

    ``keep`` names tests that stay selected whatever the selection (the
    deliberate crash test of ``--crash-test``).
    """
    if not fs_names and not scenario_names:
        return tuple(extra), ()
    chosen = select(fs_names, scenario_names)
    expr = " or ".join([*chosen.items, *keep])
    rest, user = _split_keyword(extra)
    if user:
        expr = f"({expr}) and ({user})"
    return (*rest, "-k", expr), chosen.notes
