"""What the suite runs and expects, read from its own catalogues: ``mfinject list``.

Every scenario and race becomes an :class:`Entry`: its participants, its
injector, the filesystems it is meaningful on (the same tests the runners
make before they raise ``NotMeaningful``), its kernel range, and the pytest
test in ``tests/kernel`` that plays it, so that ``mfinject vm --scenario``
can select exactly that test (see :mod:`mfinject.selection`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from tabulate import tabulate

from mfinject.expectations.catalogue import EXPECTATIONS, KNOWN_DEVIATIONS
from mfinject.expectations.model import ALL_PATHS, KernelRange, Source
from mfinject.fs import FS_KINDS, FsKind
from mfinject.injectors import CorruptPfnInjector
from mfinject.kernel import Version
from mfinject.scenarios import LATE, Scenario, catalogue, races

# How tests/kernel plays the catalogues (tests/unit/test_listing.py checks these
# names against its collection): test_scenario and test_race are parametrized by
# filesystem and entry (ids FS-NAME); each of catalogue.SEPARATE has its own
# test, test_<name>, parametrized by filesystem alone (ids FS).
SCENARIO_TEST = "test_scenario"
RACE_TEST = "test_race"
REFLINK_LIMIT = "needs reflink (FICLONE): only a filesystem made with reflink=1"


@dataclass(frozen=True)
class Entry:
    name: str
    title: str
    kind: str  # "scenario" or "race"
    participants: tuple[str, ...]
    injector: str
    filesystems: tuple[str, ...]  # the FS_KINDS it is meaningful on
    limit: str  # why not on the others, or on older kernels; "" when it runs everywhere
    kernels: KernelRange
    test: str  # the test function in tests/kernel
    ids_name: bool  # parametrize ids are FS-NAME (True) or FS (False)

    def item_name(self, fs: str) -> str:
        """The pytest item name of this entry on filesystem ``fs``."""
        return f"{self.test}[{fs}-{self.name}]" if self.ids_name else f"{self.test}[{fs}]"


def runs_on(kind: FsKind, needs_reflink: bool, only_path: str | None) -> bool:
    """As runner._check_meaningful/_files and race_runner.run decide it."""
    return (kind.reflink or not needs_reflink) and (only_path is None or kind.path == only_path)


def describe_role(s: Scenario, who: str) -> str:
    """``who`` and what it does in the scenario's timeline."""
    return s.describe(who).replace(" (", ": ", 1).removesuffix(")")


def _kernels(since: tuple[int, int] | None) -> KernelRange:
    return KernelRange(since=Version(*since)) if since else KernelRange()


def _scenario_entry(s: Scenario, test: str, ids_name: bool) -> Entry:
    fss = tuple(k.name for k in FS_KINDS.values() if runs_on(k, s.needs_reflink, s.only_path))
    limit = s.why_limited or (REFLINK_LIMIT if s.needs_reflink else "")
    return Entry(s.name, s.title, "scenario", tuple(describe_role(s, p.name) for p in s.procs),
                 s.injector, fss, limit, _kernels(s.since), test, ids_name)


def _race_entry(r: races.Race) -> Entry:
    racer = (f"M thread 1: the racer, {r.racer}" if r.racer == races.MUNMAP
             else f"R: the racer, {r.racer}")
    people = (f"M: maps a page of a fresh file, {LATE} kill", "I: injects", racer)
    fss = tuple(k.name for k in FS_KINDS.values() if runs_on(k, r.needs_reflink, None))
    return Entry(r.name, r.title, "race", people, CorruptPfnInjector.name, fss,
                 REFLINK_LIMIT if r.needs_reflink else "", KernelRange(), RACE_TEST, True)


def entries() -> tuple[Entry, ...]:
    """Every scenario and race, in report order."""
    return (*(_scenario_entry(s, SCENARIO_TEST, True) for s in catalogue.SCENARIOS),
            *(_scenario_entry(s, "test_" + s.name.replace("-", "_"), False)
              for s in catalogue.SEPARATE),
            *(_race_entry(r) for r in races.RACES))


def _wanted(name: str, names: Iterable[str] | None) -> bool:
    return names is None or name in set(names)


def scenarios_table(names: Iterable[str] | None = None) -> str:
    rows = [[e.name, e.title, "\n".join(e.participants), e.injector,
             "\n".join(e.filesystems), str(e.kernels)]
            for e in entries() if _wanted(e.name, names)]
    table = tabulate(rows, headers=["scenario", "what", "participants", "injector",
                                    "filesystems", "kernels"],
                     tablefmt="grid", maxcolwidths=[None, 30, 44, None, None, None])
    limits = [f"{e.name}: {e.limit}" for e in entries() if e.limit and _wanted(e.name, names)]
    return table + ("\n\nlimits:\n  " + "\n  ".join(limits) if limits else "")


def scenarios_json(names: Iterable[str] | None = None) -> str:
    data = [{"name": e.name, "kind": e.kind, "title": e.title,
             "participants": list(e.participants), "injector": e.injector,
             "filesystems": list(e.filesystems), "kernels": _range(e.kernels),
             "limit": e.limit,
             "pytest": [e.item_name(fs) for fs in e.filesystems]}
            for e in entries() if _wanted(e.name, names)]
    return json.dumps(data, indent=2)


def _range(k: KernelRange) -> dict[str, str | None]:
    return {"range": str(k), "since": str(k.since) if k.since else None,
            "until": str(k.until) if k.until else None}


def _source(s: Source) -> dict[str, str | None]:
    return {"ref": s.ref, "quote": s.quote, "release": s.release, "cite": s.cite()}


def _paths(paths: frozenset[str]) -> str:
    return "all" if paths == ALL_PATHS else ",".join(sorted(paths))


def _short(s: Source) -> str:
    return f"{s.ref} ({s.release})" if s.release else s.ref


def expectations_data(names: Iterable[str] | None = None) -> dict[str, list[dict[str, object]]]:
    exps = [{"scenario": scenario, "participant": x.participant, "field": x.field,
             "expected": x.value, "paths": _paths(x.paths), "kernels": _range(x.kernels),
             "when": x.describe_when() or None, "source": _source(x.source)}
            for scenario, expects in EXPECTATIONS.items() if _wanted(scenario, names)
            for x in expects]
    devs = [{"scenario": d.scenario, "participant": d.participant, "field": d.field,
             "observed": d.observed, "observed_regex": d.observed_regex, "kind": d.kind,
             "paths": _paths(d.paths), "kernels": _range(d.kernels),
             "only_where_fact_lacks": list(d.fact_lacks) if d.fact_lacks else None,
             "explanation": d.explanation, "source": _source(d.source)}
            for d in KNOWN_DEVIATIONS if _wanted(d.scenario, names)]
    return {"expectations": exps, "known_deviations": devs}


def expectations_json(names: Iterable[str] | None = None) -> str:
    return json.dumps(expectations_data(names), indent=2)


def expectations_table(names: Iterable[str] | None = None) -> str:
    exps = [[scenario, f"{x.participant}.{x.field}", x.value,
             _paths(x.paths) + (f" if {x.describe_when()}" if x.when else ""),
             str(x.kernels), _short(x.source)]
            for scenario, expects in EXPECTATIONS.items() if _wanted(scenario, names)
            for x in expects]
    devs = [[d.scenario, f"{d.participant}.{d.field}", d.observed, d.kind, _paths(d.paths),
             str(d.kernels), _short(d.source), d.explanation]
            for d in KNOWN_DEVIATIONS if _wanted(d.scenario, names)]
    parts = ["expectations:", tabulate(
        exps, headers=["scenario", "what", "expected", "paths", "kernels", "source"],
        tablefmt="grid", maxcolwidths=[None, None, 34, None, None, 44])]
    if devs:
        parts += ["", "known deviations:", tabulate(
            devs, headers=["scenario", "what", "observed", "kind", "paths", "kernels", "source",
                           "explanation"],
            tablefmt="grid", maxcolwidths=[None, None, 24, 10, None, None, 30, 50])]
    return "\n".join(parts)


FORMATS = ("table", "json")


def render(fmt: str, expectations: bool, names: Iterable[str] | None = None) -> str:
    if expectations:
        return expectations_json(names) if fmt == "json" else expectations_table(names)
    return scenarios_json(names) if fmt == "json" else scenarios_table(names)
