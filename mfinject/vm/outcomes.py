"""One row per test over every boot of a VM run: crashes are never washed out by a retry.

A test during which the guest died is run once more in a fresh VM (the
runner's choice: a TCG guest can die of the emulator, not of the test). The
rows the guest streamed say only how the last attempt went; this folds in the
crashes the host saw:

- crashed, then passed (or a known deviation, an unspecified case, a skip) in
  another boot: ``flaky``, with every console kept. A flaky row fails the run
  unless each of its crashes matches a catalogued known crash (kernel range
  with both ends, console signature), which the row then names;
- crashed, then failed or errored: that verdict stands, the crash is added;
- crashed in every attempt: ``crashed``, with every console.

It also checks the run against what the guest collected: a test collected in
some boot that has no row at the end is an error of the run, never silence.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from mfinject.expectations.model import CRASHED, ERROR, FLAKY, KNOWN_DEVIATION, KernelRange, Source
from mfinject.fs import kind_names
from mfinject.kernel import Version
from mfinject.results import NOT_FAILING, ScenarioResult


@dataclass(frozen=True)
class CrashAttempt:
    """The guest died while ``nodeid`` ran, in boot ``boot`` (console file ``console``)."""
    nodeid: str
    scenario: str
    fs: str
    boot: int
    console: str
    first_line: str  # the first line of trouble on the console, or ""
    why: str
    accel: str = "tcg"  # what ran the guest: kvm or tcg
    rip: str = ""  # the function the oops's RIP line names, or "" (none seen)

    def describe(self) -> str:
        return (f"boot {self.boot + 1}: {self.why} ({self.first_line or 'no panic line'}; "
                f"console {self.console})")


@dataclass(frozen=True)
class KnownCrash:
    """A guest crash that is understood, and not the scenario's doing."""
    name: str
    signature: str  # regular expression searched in the crash's first console line
    kernels: KernelRange  # both ends: where it was seen
    explanation: str
    source: Source
    accel: str = "tcg"  # an emulator's crash is no excuse for one under KVM; "any": the kernel's
    # a crash of the kernel under test, caught by a scenario: only in these
    # scenarios on these filesystems, and then the row is a known deviation (the
    # kernel's own words kept), not a crash of the run
    kernel_defect: bool = False
    scenarios: frozenset[str] | None = None
    filesystems: frozenset[str] | None = None
    rip: str | None = None  # the function the oops must be in (CrashAttempt.rip)

    def matches(self, attempt: CrashAttempt, release: str) -> bool:
        return bool(re.search(self.signature, attempt.first_line)) and \
            (self.rip is None or attempt.rip == self.rip) and \
            self.kernels.holds(Version.parse(release)) and self.accel in (attempt.accel, "any") \
            and (self.scenarios is None or attempt.scenario in self.scenarios) \
            and (self.filesystems is None or attempt.fs in self.filesystems)


_SHARED = frozenset({"corrupt-pfn-reflink", "corrupt-pfn-shared", "madvise-shared",
                     "corrupt-pfn-shared-fault", "corrupt-pfn-shared-unshare",
                     "corrupt-pfn-shared-pmd", "race-reflink", "mce-shared"})

KNOWN_CRASHES: tuple[KnownCrash, ...] = (
    KnownCrash(
        "dax-lock-folio-shared-null", r"BUG: kernel NULL pointer dereference, address: "
        # ... and under KASAN (debian-debug:6.12), whose inline check of the shadow of
        # address 0x1 faults first: "KASAN: null-ptr-deref in range [0x0-0x7]" follows
        r"0+1\b|Oops: general protection fault, probably for non-canonical address "
        r"0xdffffc0000000000\b", KernelRange(Version.parse("6.12"), Version.parse("6.13")),
        "memory-failure on a reflinked (shared) fsdax page on the generic path (XFS as plain "
        "mkfs.xfs makes it: reflink=1, rmapbt=0) oopses: from v6.2 a shared page's "
        "page->mapping is PAGE_MAPPING_DAX_SHARED ((void *)0x1), and dax_lock_folio() "
        "passes it to dax_mapping(), which reads mapping->host at address 0x1 (RIP "
        "dax_lock_folio, under memory_failure() from hwpoison_inject or madvise, and, as "
        "for a real media error, from a machine check: kworker mce_gen_pool_process -> "
        "uc_decode_notifier -> memory_failure, mce-shared). The task dies with mf_mutex "
        "held. Seen on 6.12.118 (on its KASAN build as a general protection fault at the "
        "shadow of address 0x1, 'KASAN: null-ptr-deref'); 7.3 (after 'fs/dax: "
        "Remove PAGE_MAPPING_DAX_SHARED mapping flag', v6.15) does not oops",
        Source("commit 16900426586d", "fsdax: introduce page->share for fsdax in reflink mode",
               "v6.2"),
        accel="any", kernel_defect=True, scenarios=_SHARED,
        filesystems=frozenset({"xfs", "xfs-daxinode"}), rip="dax_lock_folio"),
    KnownCrash(
        "tcg-int3-text-patching", r"Oops: int3",
        KernelRange(Version.parse("7.3"), Version.parse("7.4")),
        "under QEMU TCG a 7.3 guest dies now and then with 'Oops: int3' in __schedule, also "
        "while booting, before any test runs: text patching (text_poke_bp) racing the "
        "emulator's translation of the patched code, not memory-failure",
        Source("README.md, Robustness", "under TCG a 7.3 guest was seen to die now and then in "
               "int3 text patching, also while booting")),
)


def known_crash(attempts: list[CrashAttempt], release: str) -> KnownCrash | None:
    """The catalogued crash every attempt matches, if there is one."""
    for known in KNOWN_CRASHES:
        if attempts and all(known.matches(a, release) for a in attempts):
            return known
    return None


def fold(rows: list[ScenarioResult], attempts: list[CrashAttempt],
         release: str) -> list[ScenarioResult]:
    """The guest's rows with the host's crash attempts folded in: one row per test."""
    by_test: dict[str, list[CrashAttempt]] = {}
    for a in attempts:
        by_test.setdefault(a.nodeid, []).append(a)
    out = []
    for row in rows:
        if not row.final and row.nodeid in by_test:
            continue  # a row cut short by the crash: the crash is its outcome (below)
        crashed = by_test.pop(row.nodeid, [])
        row = row if row.final else unfinished(row)
        out.append(_after_crashes(row, crashed, release) if crashed else row)
    for nodeid, crashed in by_test.items():  # crashed in every attempt: no guest row
        last = crashed[-1]
        out.append(_crashed_row(ScenarioResult(last.scenario, last.fs, release, CRASHED,
                                               nodeid=nodeid), crashed, release))
    return out


def unfinished(row: ScenarioResult) -> ScenarioResult:
    """A row the guest streamed before teardown and never made final: an error.

    The guest died (or the session ended) during the test's teardown, so
    unmount, namespace reset and the kernel-health check never judged it.
    """
    return replace(row, verdict=ERROR if row.verdict in NOT_FAILING else row.verdict,
                   final=True, message=(f"{row.message}\n" if row.message else "")
                   + f"teardown did not finish (the row was {row.verdict} before it): the "
                   "guest died or the session ended during it, unjudged by the health check")


def _crash_text(attempts: list[CrashAttempt]) -> str:
    return "; ".join(a.describe() for a in attempts)


def _after_crashes(row: ScenarioResult, crashed: list[CrashAttempt],
                   release: str) -> ScenarioResult:
    if row.verdict not in NOT_FAILING:  # fail, error: they stand
        return replace(row, message=f"{row.message}\nthe guest also crashed during this test "
                       f"in another boot: {_crash_text(crashed)}".strip(),
                       crash_consoles=tuple(a.console for a in crashed))
    retry = crashed[-1].boot + 1  # the boot after the last crash ran it to the end
    return _crashed_row(replace(row, verdict=FLAKY, message=(
        f"flaky: the guest crashed during this test ({_crash_text(crashed)}), and in a fresh "
        f"VM (boot {retry + 1}, console console-{retry}.log) it came out {row.verdict}"
        + (f"\n{row.message}" if row.message else ""))), crashed, release)


def _crashed_row(row: ScenarioResult, crashed: list[CrashAttempt],
                 release: str) -> ScenarioResult:
    known = known_crash(crashed, release)
    message = row.message or f"the guest crashed in every attempt: {_crash_text(crashed)}"
    if known is not None:
        message += f"\nknown crash {known.name}: {known.explanation} ({known.source.cite()})"
    verdict = row.verdict
    if known is not None and known.kernel_defect and row.verdict == CRASHED:
        # the kernel under test crashed, as catalogued: a known deviation, said plainly
        verdict = KNOWN_DEVIATION
        message = f"the kernel crashed (known deviation, kernel): {message}"
    return replace(row, verdict=verdict, message=message,
                   crash_consoles=tuple(a.console for a in crashed),
                   known_crash=known.name if known else "")


def between_tests(deaths: list[CrashAttempt], release: str) -> list[ScenarioResult]:
    """A row for each guest that died after it came up, while no test was running.

    In the teardown of a skipped test, between two tests or in the session's
    end, the death is still the kernel's (or the emulator's) doing: flaky,
    failing the run unless it is a catalogued known crash.
    """
    return [_crashed_row(ScenarioResult("(vm)", "-", release, FLAKY, message=(
        f"the guest died while no test was running ({d.describe()}); the run went on in a "
        "fresh VM")), [d], release) for d in deaths]


def missing_rows(rows: list[ScenarioResult], collected: set[str],
                 release: str) -> list[ScenarioResult]:
    """An error row for each collected test that has no row: the run lost its outcome."""
    have = {r.nodeid for r in rows}
    return [ScenarioResult(*_split(n), release, ERROR, nodeid=n,
                           message="no outcome recorded: the test was collected but no row came "
                           "back (the guest session ended early, or the result was lost)")
            for n in sorted(collected - have)]


def _split(nodeid: str) -> tuple[str, str]:
    """(scenario, fs) of ``.../test_scenarios.py::test_scenario[xfs-rmapbt-corrupt-pfn]``."""
    name, _, param = nodeid.rpartition("::")[2].partition("[")
    param = param.removesuffix("]")
    # every kind a session can have, custom-xfs included; xfs-rmapbt before xfs
    for fs in sorted(kind_names(), key=len, reverse=True):
        if param == fs:
            return name, fs
        if param.startswith(fs + "-"):
            return param[len(fs) + 1:], fs
    return name, "-"


CRASHES_FILE = "crashes.json"  # beside a kernel's results.jsonl: what the host saw die


def save_crashes(results_dir: Path, release: str, attempts: list[CrashAttempt],
                 deaths: list[CrashAttempt]) -> None:
    """Keep the crash attempts beside the stream, so `mfinject report` folds them too."""
    (results_dir / CRASHES_FILE).write_text(json.dumps({
        "release": release, "attempts": [dataclasses.asdict(a) for a in attempts],
        "deaths": [dataclasses.asdict(d) for d in deaths]}, indent=1))


def fold_saved(rows: list[ScenarioResult], crashes: Path) -> list[ScenarioResult]:
    """``rows`` with the crashes saved in ``crashes`` folded in, as `mfinject vm` does."""
    data = json.loads(crashes.read_text())
    release = data["release"]
    return fold(rows, [CrashAttempt(**a) for a in data["attempts"]], release) + \
        between_tests([CrashAttempt(**d) for d in data["deaths"]], release)


def read_collected(results_dir: Path) -> set[str]:
    """Every node id the guest collected, in any boot (collected*.json)."""
    found: set[str] = set()
    for f in sorted(results_dir.glob("collected*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        ids = data.get("nodeids", []) if isinstance(data, dict) else data
        found |= {n for n in ids if isinstance(n, str)}
    return found
