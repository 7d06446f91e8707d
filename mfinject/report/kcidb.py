"""KernelCI KCIDB I/O data (schema v5.3): one test record per result.

The output validates against the schema that the ``kcidb-io`` package ships
(``kcidb_io.schema.V5_3``, its latest as of kcidb-io 141; the unit tests check
it). Checkout and build ids name the run and the kernel release; test paths
are ``mfinject.SCENARIO.FS``, each part reduced to the characters a KCIDB path
node may hold. A row's message (the reason for a skip, the mismatches, a
crash's console tail) is the test's ``log_excerpt``; every field of the row
is kept under ``misc``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mfinject.expectations.model import (CRASHED, ERROR, FAIL, FLAKY, KNOWN_DEVIATION, PASS,
                                         SKIPPED, UNSPECIFIED)
from mfinject.results import ResultSet, ScenarioResult

ORIGIN = "mfinject"  # the schema's origin pattern: [a-z0-9_]+
VERSION = {"major": 5, "minor": 3}
LOG_EXCERPT_MAX = 16384  # the schema's maxLength for log_excerpt

# The schema's status meanings (kcidb_io.schema.V5_3, $defs/status), quoted:
STATUS = {
    # "the test completed and reported the tested code as correct"
    PASS: "PASS",
    # "the test completed and reported the tested code as faulty"
    FAIL: "FAIL",
    # "the test completed and had not reported the status of the tested code":
    # a known deviation ran to the end and observed what the catalogue
    # documents; by README it is neither a pass nor a failure, so neither PASS
    # nor FAIL. Not MISS: that is "the test didn't run due to a failure in the
    # test harness, and the status of both the test and the tested code is
    # unknown", and this test ran and its status is known.
    KNOWN_DEVIATION: "DONE",
    # the same words: an unspecified case ran to the end, and no documentation
    # sentence or commit says what the kernel should do there, so the test did
    # not report the tested code correct or faulty; misc's verdict says which
    UNSPECIFIED: "DONE",
    # "the test didn't complete due to a failure in its code, and the status
    # of the tested code is unknown": a scenario that could not be set up
    ERROR: "ERROR",
    # the guest died while the test ran: it did not complete; whether the
    # kernel under test is at fault is unknown (under TCG guests die now and
    # then with no test's doing), so ERROR, not FAIL
    CRASHED: "ERROR",
    # crashed in one boot and passed in another: not a pass, and not a report
    # that the tested code is faulty (one boot passed), so ERROR as for a crash
    FLAKY: "ERROR",
    # "the test did not run or complete, because it was not applicable"
    SKIPPED: "SKIP",
}


def _id(*parts: str) -> str:
    return f"{ORIGIN}:" + ":".join(re.sub(r"[^A-Za-z0-9_.+-]", "_", p) for p in parts)


def _path(*parts: str) -> str:
    """A KCIDB path: dot-separated nodes of [a-zA-Z0-9_-]+, none empty.

    "(vm)" becomes "vm" and a filesystem of "-" (not per filesystem) no node.
    """
    nodes = (re.sub(r"[^A-Za-z0-9_]+", "_", p).strip("_") for p in parts)
    return ".".join(n for n in nodes if n)


def _excerpt(text: str) -> str:
    text = text.replace("\0", "")
    if len(text) <= LOG_EXCERPT_MAX:
        return text
    cut = "\n[... cut to fit the log excerpt]"
    return text[:LOG_EXCERPT_MAX - len(cut)] + cut


def _test(r: ScenarioResult, run: str, test_id: str) -> dict[str, Any]:
    obs = r.observation or {}
    test: dict[str, Any] = {
        "id": test_id,
        "build_id": _id(run, r.kernel, "build"),
        "origin": ORIGIN,
        "path": _path(ORIGIN, r.scenario, r.fs),
        "status": STATUS.get(r.verdict, "ERROR"),
        "comment": (r.title or r.scenario).replace("\0", ""),
    }
    if "duration_s" in obs:
        test["duration"] = obs["duration_s"]
    if r.message:
        test["log_excerpt"] = _excerpt(r.message)
    test["misc"] = {"verdict": r.verdict, "scenario": r.scenario, "filesystem": r.fs,
                    "kernel": r.kernel, "nodeid": r.nodeid, "path": r.path,
                    "injector": r.injector, "checks": list(r.checks), "message": r.message,
                    "participants": obs.get("participants", []), "dmesg": obs.get("dmesg", [])}
    return test


def _unique(ids: list[str]) -> list[str]:
    """Two rows of one scenario, filesystem and kernel keep apart: :2, :3 ..."""
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        out.append(i if seen[i] == 1 else f"{i}:{seen[i]}")
    return out


def render(rs: ResultSet) -> str:
    run = str(rs.meta.get("created") or "run")
    kernels = sorted({r.kernel for r in rs.results})
    checkouts = [{"id": _id(run, k), "origin": ORIGIN, "comment": f"Linux {k}"} for k in kernels]
    # a prebuilt kernel that booted: the build is not what is tested here
    builds = [{"id": _id(run, k, "build"), "checkout_id": _id(run, k), "origin": ORIGIN,
               "architecture": "x86_64", "comment": k, "status": "PASS"} for k in kernels]
    ids = _unique([_id(run, r.kernel, r.fs, r.scenario) for r in rs.results])
    tests = [_test(r, run, i) for r, i in zip(rs.results, ids)]
    return json.dumps({"version": VERSION, "checkouts": checkouts,
                       "builds": builds, "tests": tests}, indent=2) + "\n"
