"""Result records: one per scenario and filesystem, saved as results.json.

Every field of the observation is kept, so a report can be rendered again,
merged or compared without rerunning anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfinject.errors import MfinjectError
from mfinject.expectations.model import FLAKY, KNOWN_DEVIATION, PASS, SKIPPED, UNSPECIFIED

SCHEMA = "mfinject-results/1"
# the verdicts that do not fail a run; of them only PASS is a pass
NOT_FAILING = (PASS, KNOWN_DEVIATION, UNSPECIFIED, SKIPPED)


class ResultsError(MfinjectError):
    pass


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    fs: str
    kernel: str
    verdict: str  # pass, fail, known-deviation, unspecified, error, crashed, skipped, flaky
    title: str = ""
    path: str = ""
    injector: str = ""
    checks: tuple[dict[str, Any], ...] = ()
    observation: dict[str, Any] | None = None
    message: str = ""
    nodeid: str = ""
    # False on a results.jsonl line streamed before the test's teardown ended
    # (mfinject.records): a later line of the same nodeid supersedes it
    final: bool = True
    # crashed the guest in an earlier boot: the console files of those boots,
    # and the catalogued crash they matched ("" when none: the run fails)
    crash_consoles: tuple[str, ...] = ()
    known_crash: str = ""
    # seconds each phase of the test took (setup, call, teardown): what
    # scripts/benchmark reads; no verdict depends on it
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def fails_run(self) -> bool:
        """Whether this row makes a run fail: the one rule the run's exit and the
        table's counts share. A flaky row fails it unless its crash is catalogued; an
        unspecified one (no source says what the kernel should do) does not, though
        it is no pass either."""
        if self.verdict == FLAKY:
            return not self.known_crash
        return self.verdict not in NOT_FAILING

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.scenario, self.kernel, self.fs)


@dataclass(frozen=True)
class ResultSet:
    results: tuple[ScenarioResult, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA, "meta": self.meta,
                           "results": [dataclasses.asdict(r) for r in self.results]}, indent=2)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)


def _plain(obj: Any) -> Any:
    """As JSON will give it back: tuples become lists."""
    return json.loads(json.dumps(obj))


def from_observation(obs: Any, verdict: Any, nodeid: str = "") -> ScenarioResult:
    return ScenarioResult(
        scenario=obs.scenario, fs=obs.fs, kernel=obs.kernel, verdict=verdict.verdict,
        title=obs.title, path=obs.path, injector=obs.injector,
        checks=tuple(_plain(dataclasses.asdict(c)) for c in verdict.checks),
        observation=_plain(dataclasses.asdict(obs)),
        message="\n".join(verdict.messages), nodeid=nodeid,
    )


def append_jsonl(path: Path, result: ScenarioResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(dataclasses.asdict(result)) + "\n")
        f.flush()
        os.fsync(f.fileno())


REQUIRED = ("scenario", "fs", "kernel", "verdict")
FIX = "give a results.json or the results directory `mfinject vm` printed (results/STAMP)"


def _from_dict(r: Any, where: str) -> ScenarioResult:
    if not isinstance(r, dict):
        raise ResultsError(f"{where} is a JSON {type(r).__name__}, not a result object")
    missing = [k for k in REQUIRED if not isinstance(r.get(k), str)]
    if missing:
        raise ResultsError(
            f"{where} lacks {', '.join(missing)}: every result needs {', '.join(REQUIRED)} "
            "as strings; repair or delete that row")
    checks = r.get("checks") or []
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks) or \
            not isinstance(r.get("observation"), (dict, type(None))):
        raise ResultsError(f"{where}: checks is not a list of objects or observation not an "
                           "object; repair or delete that row")
    fields = {f.name for f in dataclasses.fields(ScenarioResult)}
    return ScenarioResult(**{**{k: v for k, v in r.items() if k in fields},
                             "checks": tuple(checks),
                             "crash_consoles": tuple(r.get("crash_consoles") or ()),
                             "durations": dict(r.get("durations") or {})})


def read_jsonl(path: Path) -> tuple[list[ScenarioResult], int]:
    """Streamed records and how many lines could not be read.

    A later record of the same test replaces an earlier one; a line cut short
    by a crash is skipped.
    """
    if not path.exists():
        return [], 0
    by_id: dict[str, ScenarioResult] = {}
    skipped = 0
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = _from_dict(json.loads(line), f"{path} line {n}")
        except (json.JSONDecodeError, ResultsError):
            skipped += 1
            continue
        by_id[r.nodeid or f"{r.scenario}/{r.fs}/{r.kernel}"] = r
    return list(by_id.values()), skipped


def load_jsonl(path: Path) -> list[ScenarioResult]:
    """Streamed records; a later record of the same test replaces an earlier one."""
    return read_jsonl(path)[0]


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise ResultsError(f"{path}: no such file or directory: {FIX}")
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise ResultsError(f"cannot read results from {path} ({e.strerror}): {FIX}") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ResultsError(f"{path} is not JSON ({e}): {FIX}") from e


def load_file(path: Path) -> ResultSet:
    """A results.json, checked: a damaged or foreign file is refused with the fix."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ResultsError(f"{path} is a JSON {type(data).__name__}, not an mfinject results "
                           f"file (an object with schema {SCHEMA!r}): {FIX}")
    if data.get("schema") != SCHEMA:
        raise ResultsError(f"{path} is not an mfinject results file (schema "
                           f"{data.get('schema')!r}, not {SCHEMA!r}): {FIX}")
    rows, meta = data.get("results"), data.get("meta", {})
    if not isinstance(rows, list) or not isinstance(meta, dict):
        raise ResultsError(f"{path}: 'results' is not a list or 'meta' not an object: "
                           f"the file is damaged; {FIX}")
    return ResultSet(tuple(_from_dict(r, f"{path}: result #{i}") for i, r in enumerate(rows, 1)),
                     meta)


def _stream(jsonl: Path) -> tuple[list[ScenarioResult], dict[str, Any] | None, int]:
    """A results.jsonl: its records, the meta of the results.json beside it (written
    when its pytest session ended; None while there is none), and its unreadable lines."""
    rows, skipped = read_jsonl(jsonl)
    crashes = jsonl.with_name("crashes.json")
    if crashes.is_file():  # what the host saw die, folded in as `mfinject vm` does
        from mfinject.vm.outcomes import fold_saved
        rows = fold_saved(rows, crashes)
    final = jsonl.with_name("results.json")
    return rows, (load_file(final).meta if final.is_file() else None), skipped


def load(path: Path) -> ResultSet:
    """A results.json, a results.jsonl, or a results directory of either layout.

    A directory holding results.jsonl is read from it: the stream carries every
    boot of a VM run (the crashes the runner saw, in crashes.json beside it,
    are folded in: a crash is never washed out by a clean retry), while results.json
    beside it holds the last pytest session only, and marks that it ended.
    A run directory of ``mfinject vm`` holds results.json once every kernel is
    done, and before that only KERNEL/results.jsonl: such a run is partial.
    """
    if path.suffix == ".jsonl" and path.is_file():
        streams = [path]
    elif not path.is_dir():
        return load_file(path)
    elif (path / "results.jsonl").is_file():
        streams = [path / "results.jsonl"]
    elif (path / "results.json").is_file():
        return load_file(path / "results.json")
    else:
        streams = sorted(path.glob("*/results.jsonl"))
    if not streams:
        raise ResultsError(f"{path} holds no results.json or results.jsonl, nor do its "
                           f"subdirectories (a run just started has none yet): {FIX}")
    return _merge_streams(path, streams)


def _merge_streams(path: Path, streams: list[Path]) -> ResultSet:
    rows: list[ScenarioResult] = []
    meta: dict[str, Any] = {}
    unfinished, skipped = [], 0
    for jsonl in streams:
        got, final_meta, bad = _stream(jsonl)
        rows += got
        skipped += bad
        if final_meta is None:
            unfinished.append(jsonl.parent.name)
        for k, v in (final_meta or {}).items():
            meta.setdefault(k, v)
    so_far = f"{len(rows)} result(s) so far" + \
        (f", {skipped} unreadable line(s) skipped" if skipped else "")
    if path.is_dir() and streams[0].parent != path:  # RUN/KERNEL/results.jsonl, no RUN/results.json
        unfinished += [f.parent.name for f in sorted(path.glob("*/progress.log"))
                       if not (f.parent / "results.jsonl").exists()]  # booted, nothing yet
        meta["partial"] = (f"partial run: {path} has no results.json yet, the run was interrupted "
                           "or is still going (kernels unfinished: "
                           f"{', '.join(unfinished) or 'none'}); {so_far}")
    elif unfinished:
        meta["partial"] = (f"partial run: no results.json beside {streams[0]}, its pytest session "
                           f"was interrupted or is still going; {so_far}")
    return ResultSet(tuple(rows), meta)
