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

SCHEMA = "mfinject-results/1"


class ResultsError(MfinjectError):
    pass


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    fs: str
    kernel: str
    verdict: str  # pass, fail, known-deviation, error, crashed
    title: str = ""
    path: str = ""
    injector: str = ""
    checks: tuple[dict[str, Any], ...] = ()
    observation: dict[str, Any] | None = None
    message: str = ""
    nodeid: str = ""

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


def _from_dict(r: dict[str, Any]) -> ScenarioResult:
    fields = {f.name for f in dataclasses.fields(ScenarioResult)}
    return ScenarioResult(**{k: (tuple(v) if k == "checks" else v)
                             for k, v in r.items() if k in fields})


def load_jsonl(path: Path) -> list[ScenarioResult]:
    """Streamed records; a later record of the same test replaces an earlier one."""
    if not path.exists():
        return []
    by_id: dict[str, ScenarioResult] = {}
    for line in path.read_text().splitlines():
        try:
            r = _from_dict(json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut short by a crash
        by_id[r.nodeid or f"{r.scenario}/{r.fs}/{r.kernel}"] = r
    return list(by_id.values())


def load(path: Path) -> ResultSet:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"cannot read results from {path}: {e}") from e
    if data.get("schema") != SCHEMA:
        raise ResultsError(f"{path} is not an mfinject results file (schema {data.get('schema')!r})")
    return ResultSet(tuple(_from_dict(r) for r in data["results"]), data.get("meta", {}))
