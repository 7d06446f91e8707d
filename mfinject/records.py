"""The session's result records: kept in the config's stash, streamed, saved.

One record per pmem test (a scenario's observation, or the outcome of a test
that produced none); results.jsonl gets each one at once, so a guest crash
cannot lose it, and results.json the whole set at the end.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from mfinject import results as results_mod
from mfinject.options import settings

RESULTS_KEY = pytest.StashKey[list[results_mod.ScenarioResult]]()
RECORDED_KEY = pytest.StashKey[bool]()
RESULT_KEY = pytest.StashKey[results_mod.ScenarioResult]()
# The filesystem fixture: its parameter ("xfs", "xfs-rmapbt", "ext4") is the
# record's fs and the first part of the test ids (test_scenario[xfs-madvise-self]).
FS_FIXTURE = "mf_dax_fs"


def params(item: pytest.Item) -> dict[str, Any]:
    callspec = getattr(item, "callspec", None)
    return dict(callspec.params) if callspec is not None else {}


def fs_of(item: pytest.Item) -> str:
    return str(params(item).get(FS_FIXTURE, "-"))


def recorded(config: pytest.Config) -> list[results_mod.ScenarioResult]:
    return config.stash.get(RESULTS_KEY, [])


def _stream(config: pytest.Config, result: results_mod.ScenarioResult) -> None:
    """Append the record to results.jsonl at once: a guest crash cannot lose it."""
    s = settings(config)
    if s.results_dir is not None:
        results_mod.append_jsonl(s.results_dir / "results.jsonl", result)


def save(config: pytest.Config) -> None:
    """results.json with every record so far (when --mfinject-results names a directory)."""
    s = settings(config)
    if s.results_dir is not None:
        results_mod.ResultSet(tuple(recorded(config)), {"kernel": os.uname().release}).save(
            s.results_dir / "results.json")


def record(config: pytest.Config, item: pytest.Item | None,
           result: results_mod.ScenarioResult) -> None:
    config.stash.setdefault(RESULTS_KEY, []).append(result)
    _stream(config, result)
    if item is not None:
        item.stash[RECORDED_KEY] = True
        item.stash[RESULT_KEY] = result
        item.user_properties.append(("verdict", result.verdict))
        item.user_properties.append(("kernel", result.kernel))
        if result.observation:
            for p in result.observation["participants"]:
                for s in p["sigbus"]:
                    item.user_properties.append(
                        (f"{p['name']}.sigbus", f"{s['code']} addr={s['addr']:#x} "
                                                f"lsb={s['addr_lsb']}"))


def replace_record(config: pytest.Config, item: pytest.Item,
                   result: results_mod.ScenarioResult) -> None:
    got = recorded(config)
    for i, r in enumerate(got):
        if r.nodeid == item.nodeid:
            got[i] = result
    item.stash[RESULT_KEY] = result
    _stream(config, result)
