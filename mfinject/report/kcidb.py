"""KernelCI KCIDB I/O data (schema v4): one test record per result.

Build ids name the kernel release; test paths are ``mfinject.SCENARIO.FS``.
"""

from __future__ import annotations

import json
import re

from mfinject.expectations.model import CRASHED, ERROR, FAIL, KNOWN_DEVIATION, PASS
from mfinject.results import ResultSet

ORIGIN = "mfinject"
STATUS = {PASS: "PASS", FAIL: "FAIL", ERROR: "ERROR", CRASHED: "ERROR", KNOWN_DEVIATION: "DONE"}


def _id(*parts: str) -> str:
    return f"{ORIGIN}:" + ":".join(re.sub(r"[^A-Za-z0-9_.+-]", "_", p) for p in parts)


def render(rs: ResultSet) -> str:
    run = str(rs.meta.get("created", "run"))
    kernels = sorted({r.kernel for r in rs.results})
    checkouts = [{"id": _id(run, k), "origin": ORIGIN, "comment": f"Linux {k}"} for k in kernels]
    builds = [{"id": _id(run, k, "build"), "checkout_id": _id(run, k), "origin": ORIGIN,
               "architecture": "x86_64", "comment": k, "valid": True} for k in kernels]
    tests = []
    for r in rs.results:
        obs = r.observation or {}
        tests.append({
            "id": _id(run, r.kernel, r.fs, r.scenario),
            "build_id": _id(run, r.kernel, "build"),
            "origin": ORIGIN,
            "path": f"mfinject.{r.scenario}.{r.fs}".replace("-", "_"),
            "status": STATUS.get(r.verdict, "ERROR"),
            "comment": r.title or r.scenario,
            "duration": obs.get("duration_s", 0),
            "misc": {"verdict": r.verdict, "filesystem": r.fs, "path": r.path,
                     "injector": r.injector, "checks": list(r.checks), "message": r.message,
                     "participants": obs.get("participants", []),
                     "dmesg": obs.get("dmesg", [])},
        })
    return json.dumps({"version": {"major": 4, "minor": 3}, "checkouts": checkouts,
                       "builds": builds, "tests": tests}, indent=2) + "\n"
