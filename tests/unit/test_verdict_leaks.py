"""Verdict leaks (issue #10): observations the judge once passed although the
kernel did not do what is expected. Each is reproduced by a hand-built
observation, and must now get the verdict its row asserts, never a pass.

The table, ``LEAKS``, has one row per leak (or per variant of one):

    Leak(id, what, build, verdict, message="", findings=())

- ``id``: the leak's number in issue #10 and a letter, "4a", "7c", ...
- ``what``: the defect in the observation, one line.
- ``build``: a function of no arguments that returns the observation with the
  defect. The builders below make the documented observation of a scenario
  (samples.py values; keyword arguments change one part of it), so a row is
  usually one builder call with the defect as its arguments.
- ``verdict``: what ``judge()`` must give it (FAIL for all so far; not PASS).
- ``message``: a fragment one of the verdict's messages must contain: the reason.
- ``findings``: kernel-health findings, for leaks in the health check; when
  given, the verdict is ``with_health(judge(obs), findings, obs)``.

A new leak is one more row. ``test_builders_give_the_documented_verdict``
checks that every builder, without a defect, gives the verdict of the
documented outcome (pass, or the known deviation), so that each row fails
for its defect and nothing else.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import NamedTuple

import pytest

from mfinject.expectations.evaluate import judge, with_health
from mfinject.expectations.model import ERROR, FAIL, FLAKY, KNOWN_DEVIATION, PASS
from mfinject.scenarios.runner import Observation, ParticipantObs

from mfinject.scenarios.observation import SigbusObs

from .samples import VA_A, VA_C, ao, ar, observation, participant


class Leak(NamedTuple):
    id: str
    what: str
    build: Callable[[], Observation]
    verdict: str
    message: str = ""
    findings: tuple[str, ...] = ()


K6_1, K6_12, K7_3 = "6.1.0-56-amd64", "6.12.118+deb13-amd64", "7.3.4+deb13-amd64"
KILLED = "killed by SIGBUS"


def _obs(scenario: str, people: list[ParticipantObs], kernel: str = K6_1,
         path: str = "generic", **changes: object) -> Observation:
    """``observation()`` with the facts every run records (counters per kernel)."""
    stats = "absent" if kernel.startswith("6.1.") else "total +1, recovered +1"
    obs = observation(scenario, people, kernel=kernel, path=path)
    obs = dataclasses.replace(obs, facts=(("memory_failure_stats", stats),
                                          ("nd_bus_commands", "cmd_call")))
    return dataclasses.replace(obs, **changes)


def _p(name: str, **changes: object) -> ParticipantObs:
    base = {k: changes.pop(k) for k in ("sigbus", "mapped_after", "vaddr", "injection", "maps")
            if k in changes}
    return dataclasses.replace(participant(name, **base), **changes)


def _injector(**changes: object) -> ParticipantObs:
    return _p("I", **{"maps": False, "injection": "ok", **changes})


# --- the documented observation of each scenario a row starts from -----------

def madvise_self(**a: object) -> Observation:
    return _obs("madvise-self", [_p("A", **{"sigbus": [ar()], "injection": "caller killed", **a})])


def mce_ar_self(**a: object) -> Observation:
    """A consumed the action-required check in its load loop (thread 1), as 6.12 does it."""
    a = {"sigbus": [ar()], "injection": "ok", "signal_thread": "thread 1", **a}
    return _obs("mce-ar-self", [_p("A", **a)], kernel=K6_12, badblocks=("4440 1",))


def mce_corrected(**c: object) -> Observation:
    """A corrected error: logged, and nothing else; B and C read their page afterwards."""
    people = [_injector(), _p("B", mapped_after=True, access="old data"),
              _p("C", **{"mapped_after": True, "access": "old data", "vaddr": VA_C, **c})]
    return _obs("mce-corrected", people, kernel=K6_12, dmesg=(), hardware_corrupted_delta_kb=0,
                path_observed="none")


def madvise_early(**c: object) -> Observation:
    return _obs("madvise-early", [_p("A", sigbus=[ar()], injection="caller killed"),
                                  _p("C", **{"sigbus": [ao()], "vaddr": VA_C, **c})])


def corrupt_pfn(**c: object) -> Observation:
    return _obs("corrupt-pfn", [_injector(), _p("B"),
                                _p("C", **{"sigbus": [ao()], "vaddr": VA_C, **c})])


def sysctl_early(**b: object) -> Observation:
    return _obs("sysctl-early", [_injector(), _p("B", **{"sigbus": [ao(addr=VA_A)], **b})])


def unmapped(dmesg: str = "recovery action for dax page: Recovered", **m: object) -> Observation:
    return _obs("corrupt-pfn-unmapped", [_injector(), _p("M", **{"mapped_after": None, **m})],
                dmesg=(f"Memory failure: 0x101218: {dmesg}",) if dmesg else ())


def unpoison(dmesg: str = "recovery action for dax page: Recovered") -> Observation:
    return dataclasses.replace(
        _obs("corrupt-pfn-unpoison", [_injector(unpoison="Input/output error"),
                                      _p("M", mapped_after=None)]),
        dmesg=(f"Memory failure: 0x101218: {dmesg}",) if dmesg else ())


def late_only(kernel: str = K6_1, **b: object) -> Observation:
    """B keeps its mapping and reads the old data: the "nothing unmapped" deviation."""
    b = {"mapped_after": True, "access": "old data", **b}
    return _obs("corrupt-pfn-late-only", [_injector(), _p("B", **b)], kernel=kernel)


def late_access(badblocks: tuple[str, ...] = (), **b: object) -> Observation:
    """B is unmapped and its load refaults the old data: the software-injection deviation."""
    b = {"access": "old data", **b}
    return _obs("madvise-late-access", [_p("A", sigbus=[ar()], injection="caller killed"),
                                        _p("B", **b)], badblocks=badblocks)


def file_io(**reads: str) -> Observation:
    """R's reads return the old data (software injection), the write clears nothing."""
    io = {"read": "old data", "pread": "old data", "odirect_read": "old data",
          "write_page": "wrote 4096", "pread_after_write": "data [51]", **reads}
    return _obs("corrupt-pfn-file-io", [_injector(), _p("M", mapped_after=None),
                                        _p("R", maps=False, io=tuple(io.items()))])


_NO_CLEAR_IO = (("read", "Input/output error"), ("pread", "Input/output error"),
                ("odirect_read", "Input/output error"), ("write_partial", "Bad address"),
                ("write_page", "Bad address"), ("pread_after_write", "Input/output error"))


def badblocks_file_io(facts: tuple[tuple[str, str], ...] = (("nd_bus_commands", "cmd_call"),)
                      ) -> Observation:
    """On a bus without clear_error, the whole-page write cannot clear the bad block."""
    return _obs("badblocks-file-io", [_injector(), _p("M", mapped_after=None),
                                      _p("R", maps=False, io=_NO_CLEAR_IO)],
                badblocks=("4168 8",), facts=facts)


def twice(kernel: str = K6_12, hw_kb: int = 8,
          stats: str = "total +2, recovered +2") -> Observation:
    """The poisoned page is handled, and counted, a second time."""
    return _obs("corrupt-pfn-twice", [_injector(injection2="ok"),
                                      _p("C", sigbus=[ao()], vaddr=VA_C)], kernel=kernel,
                hardware_corrupted_delta_kb=hw_kb,
                facts=(("memory_failure_stats", stats),))


_UNBIND_STACK = ("no return within 30 s: xas_load <- dax_lock_mapping_entry <- mf_dax_kill_procs"
                 " <- xfs_dax_failure_fn <- xfs_rmap_query_range_helper <- "
                 "xfs_btree_simple_query_range <- xfs_rmap_query_range <- "
                 "xfs_dax_notify_dev_failure <- xfs_dax_notify_failure")


def unbind_hung(kernel: str = K7_3, hung: str = _UNBIND_STACK) -> Observation:
    """The unbind spins in dax_lock_mapping_entry() after signalling M."""
    return _obs("unbind-mounted", [_injector(injection="hung"),
                                   _p("M", sigbus=[ao(addr=VA_A)], range_after="0" * 8)],
                kernel=kernel, path="notify_failure", facts=(("kernel_hung", hung),))


def reflink(kernel: str = K6_1) -> Observation:
    return _obs("corrupt-pfn-reflink", [_injector(), _p("X", sigbus=[ao(addr=VA_A)]),
                                        _p("Y", sigbus=[ao()], vaddr=VA_C)],
                kernel=kernel, path="notify_failure", fs="xfs-rmapbt")


def reflink_lost_owner(kernel: str = K6_1, path: str = "generic", **y: object) -> Observation:
    """6.1, generic path: X (the file's early mapper) never collected; Y (the clone's) is."""
    x = _p("X", vaddr=VA_A, mapped_after=True, range_after="1" * 8, exit="alive")
    return _obs("corrupt-pfn-reflink", [_injector(), x,
                                        _p("Y", **{"sigbus": [ao()], "vaddr": VA_C, **y})],
                kernel=kernel, path=path, fs="xfs")


VA_C2 = VA_C + (512 << 20)  # C's second mapping of the file, one page earlier in it


def two_mappings(**c: object) -> Observation:
    """C maps the file twice; page 3 of the first window is page 4 of the second."""
    base = {"sigbus": [ao(addr=VA_C + 3 * 4096)], "vaddr": VA_C, "poison_addr": VA_C + 3 * 4096,
            "poison_index": 3, "range_after": "11101111", "poison_addr2": VA_C2 + 4 * 4096,
            "poison_index2": 4, "range_after2": "11110111"}
    return _obs("corrupt-pfn-two-mappings", [_injector(), _p("C", **{**base, **c})])


_REFLINK_WARN = ("WARN: [  192.911039] WARNING: CPU: 0 PID: 923 at fs/dax.c:380 "
                 "dax_insert_entry+0x227/0x320",
                 "new taint: taint flags W (0x200) appeared during the test")


def offset(**a: object) -> ParticipantObs:
    """A's window starts at file page 5; its page 3 (file page 8) is poisoned."""
    return _p("A", **{"sigbus": [ar(addr=VA_A + 3 * 4096)], "injection": "caller killed",
                      "poison_addr": VA_A + 3 * 4096, "poison_index": 3,
                      "map_offset_page": 5, "range_after": "11101111", **a})


VA_PMD = 0x7D0040000000


def pmd_self(addr: int, lsb: int = 21) -> Observation:
    """A maps 2 MiB with a PMD; its page 300 is poisoned; all 512 pages go."""
    return _obs("madvise-self-pmd", [_p("A", sigbus=[ar(addr=addr, lsb=lsb)], vaddr=VA_PMD,
                                        injection="caller killed",
                                        poison_addr=VA_PMD + 300 * 4096, poison_index=300,
                                        range_pages=512, range_present=0,
                                        range_after="0" * 512)])


LEAKS = (
    # machine checks: the action-required signal belongs to the consuming thread
    Leak("13a", "mce-ar-self: the BUS_MCEERR_AR goes to A's main thread, not its load loop",
         lambda: mce_ar_self(signal_thread="main thread"), FAIL,
         "A thread: expected thread 1, observed main thread"),
    Leak("13b", "mce-ar-self: killed by kill_me_now() (SI_KERNEL, no address) on 6.12",
         lambda: mce_ar_self(sigbus=[SigbusObs("128", 0, 0, 12.0)], mapped_after=True), FAIL,
         "A signal: expected BUS_MCEERR_AR"),
    Leak("13c", "mce-corrected: the kernel poisons the page and signals the early mapper",
         lambda: mce_corrected(sigbus=[ao()], mapped_after=False), FAIL,
         "C signal: expected none"),
    Leak("13d", "mce-corrected: the NFIT notifier records a bad range for a corrected error",
         lambda: dataclasses.replace(mce_corrected(), badblocks=("4440 1",)), FAIL,
         "kernel badblocks: expected none, observed 1 bad range"),
    # 4: participants were checked by their first signal only
    Leak("4a", "corrupt-pfn: C gets a second SIGBUS, lsb 0", lambda: corrupt_pfn(
        sigbus=[ao(), ao(lsb=0)]), FAIL,
        "C signal: expected BUS_MCEERR_AO, observed BUS_MCEERR_AO, BUS_MCEERR_AO"),
    Leak("4b", "corrupt-pfn-unmapped: M, sent nothing, ends killed by SIGKILL",
         lambda: unmapped(exit="killed by SIGKILL"), FAIL,
         "M exit: expected alive, observed killed by SIGKILL"),
    Leak("4c", "madvise-early: C gets a SIGSEGV besides its BUS_MCEERR_AO",
         lambda: madvise_early(other_signals=("SIGSEGV",)), FAIL,
         "C other_signals: expected none, observed SIGSEGV"),
    Leak("4d", "sysctl-early: B gets its BUS_MCEERR_AO and lives on",
         lambda: sysctl_early(exit="alive"), FAIL, "B exit: expected killed by SIGBUS"),
    Leak("4e", "madvise-self: A gets its BUS_MCEERR_AR but ends killed by SIGKILL",
         lambda: madvise_self(exit="killed by SIGKILL"), FAIL,
         "A exit: expected killed by SIGBUS, observed killed by SIGKILL"),
    # 6: no recovery-action check where the page still belongs to its file
    Leak("6a", "corrupt-pfn-unmapped: the write is ok but memory-failure logs Failed",
         lambda: unmapped(dmesg="recovery action for dax page: Failed"), FAIL,
         "recovery_action: expected Recovered, observed Failed"),
    Leak("6b", "corrupt-pfn-unpoison: no recovery action logged at all",
         lambda: unpoison(dmesg=""), FAIL, "recovery_action: expected Recovered, observed none"),
    Leak("6c", "corrupt-pfn-unmapped: the write is ok, yet no page is counted as corrupted",
         lambda: dataclasses.replace(unmapped(), hardware_corrupted_delta_kb=0), FAIL,
         "hardware_corrupted_kb"),
    Leak("6d", "corrupt-pfn-unpoison: no page counted as corrupted",
         lambda: dataclasses.replace(unpoison(), hardware_corrupted_delta_kb=0), FAIL,
         "hardware_corrupted_kb"),
    # 7: known deviations matched one field at a time, on any later kernel, any hang
    Leak("7a", "corrupt-pfn-late-only: B unmapped, yet its load reads the old data",
         lambda: late_only(mapped_after=False), FAIL,
         "Not the known deviation, which needs with it B.mapping mapped (observed unmapped)"),
    Leak("7b", "corrupt-pfn-late-only: B still mapped, yet its load gets SIGBUS",
         lambda: late_only(access="SIGBUS BUS_MCEERR_AR", exit=KILLED), FAIL,
         "B.access old data (observed SIGBUS BUS_MCEERR_AR)"),
    Leak("7c", "madvise-late-access: B reads the old data although a bad block is recorded",
         lambda: late_access(badblocks=("4168 8",)), FAIL,
         "kernel.badblocks none (observed 1 bad range)"),
    Leak("7d", "corrupt-pfn-file-io: read() returns the old data, pread() and O_DIRECT EIO",
         lambda: file_io(pread="Input/output error", odirect_read="Input/output error"), FAIL,
         "R.io:pread old data (observed Input/output error)"),
    Leak("7e", "unbind-mounted hangs on 6.14, a kernel between the passing 6.12 and 7.2",
         lambda: unbind_hung(kernel="6.14.3-amd64"), FAIL,
         "Known deviation seen from 7.2.13, unconfirmed on 6.14.3-amd64"),
    Leak("7f", "unbind-mounted hangs on 7.4, after the last kernel it was seen on",
         lambda: unbind_hung(kernel="7.4.1-amd64"), FAIL,
         "Known deviation seen up to 7.3.4, unconfirmed on 7.4.1-amd64"),
    Leak("7g", "unbind-mounted hangs with another stack (waiting on a folio, not spinning)",
         lambda: unbind_hung(hung="no return within 30 s: folio_wait_bit_common <- "
                             "truncate_inode_pages_range <- pmem_release_disk"), FAIL,
         "kernel.kernel_hung matching"),
    Leak("7h", "unbind-mounted 'hung' from a participant error, no stuck stack",
         lambda: unbind_hung(hung=""), FAIL, "kernel.kernel_hung matching"),
    Leak("7i", "badblocks-file-io: the bus commands could not be read",
         lambda: badblocks_file_io(facts=(("nd_bus_commands", "unknown"),)), FAIL,
         "the nd_bus_commands fact known and without clear_error (observed unknown)"),
    Leak("7j", "badblocks-file-io: no bus commands recorded at all",
         lambda: badblocks_file_io(facts=()), FAIL,
         "the nd_bus_commands fact known and without clear_error (observed nothing)"),
    Leak("7k", "corrupt-pfn-twice on 7.4, after the last kernel it was seen on",
         lambda: twice(kernel="7.4.1-amd64"), FAIL, "seen up to 7.3.4, unconfirmed on 7.4.1"),
    Leak("7l", "corrupt-pfn-twice: the second write is ok, yet nothing is counted twice",
         lambda: twice(hw_kb=4, stats="total +1, recovered +1"), FAIL,
         "kernel.hardware_corrupted_kb +8 (observed +4)"),
    Leak("7m", "corrupt-pfn-reflink WARN on 6.0, before the only kernel it was seen on",
         lambda: reflink(kernel="6.0.12-amd64"), FAIL,
         "Known deviation seen from 6.1.0-56, unconfirmed on 6.0.12-amd64", _REFLINK_WARN),
    # 11: the shared-extent cases: the file's mappers lost on 6.1's generic path only
    Leak("11h", "corrupt-pfn-reflink on 6.1, generic: X lost and Y not signalled either",
         lambda: reflink_lost_owner(sigbus=[], mapped_after=True, range_after="1" * 8,
                                    exit="alive"), FAIL,
         "Y signal: expected BUS_MCEERR_AO, observed none"),
    Leak("11i", "corrupt-pfn-reflink: X lost on the notify_failure path (XFS walks owners)",
         lambda: reflink_lost_owner(path="notify_failure"), FAIL,
         "X signal: expected BUS_MCEERR_AO, observed none"),
    Leak("11j", "corrupt-pfn-reflink: X lost on 6.12, where it was never seen",
         lambda: reflink_lost_owner(kernel="6.12.118+deb13-amd64"), FAIL,
         "unconfirmed on 6.12.118"),
    Leak("11k", "corrupt-pfn-reflink on 6.1, generic: X lost but its page unmapped anyway",
         lambda: dataclasses.replace(reflink_lost_owner(), participants=(
             _injector(), _p("X", vaddr=VA_A, exit="alive"),
             _p("Y", sigbus=[ao()], vaddr=VA_C))), FAIL,
         "X.mapping mapped (observed unmapped)"),
    Leak("11l", "corrupt-pfn-two-mappings: C's second mapping keeps the poisoned page",
         lambda: two_mappings(range_after2="1" * 8), FAIL,
         "C window2: expected only the poisoned page unmapped, observed all mapped"),
    Leak("11m", "corrupt-pfn-two-mappings: a SIGBUS per mapping",
         lambda: two_mappings(sigbus=[ao(addr=VA_C + 3 * 4096), ao(addr=VA_C2 + 4 * 4096)]),
         FAIL, "C signal: expected BUS_MCEERR_AO, observed BUS_MCEERR_AO, BUS_MCEERR_AO"),
    Leak("11n", "corrupt-pfn-two-mappings: si_addr the same page index in the other mapping",
         lambda: two_mappings(sigbus=[ao(addr=VA_C2 + 3 * 4096)]), FAIL,
         "C si_addr_any: expected a poisoned page's address, observed"),
    # 11: every scenario poisoned page 0 of a mapping at file offset 0, one page checked
    Leak("11a", "madvise-self at an offset: si_addr is the start of the mapping",
         lambda: _obs("madvise-self", [offset(sigbus=[ar(addr=VA_A)])]), FAIL,
         "A si_addr: expected poisoned page, observed mapping start"),
    Leak("11b", "madvise-self at an offset: si_addr is another page of the mapping",
         lambda: _obs("madvise-self", [offset(sigbus=[ar(addr=VA_A + 4 * 4096)])]), FAIL,
         "observed page 4 of the mapping"),
    Leak("11c", "madvise-self at an offset: the whole mapping is torn down",
         lambda: _obs("madvise-self", [offset(range_after="0" * 8)]), FAIL,
         "A window: expected only the poisoned page unmapped, observed all unmapped"),
    Leak("11d", "madvise-self at an offset: a neighbour unmapped, the poisoned page kept",
         lambda: _obs("madvise-self", [offset(range_after="11011111", mapped_after=True)]),
         FAIL, "A window: expected only the poisoned page unmapped, observed unmapped: pages 2 of 8"),
    Leak("11f", "madvise-self-pmd: si_addr in the next 2 MiB, lsb 21",
         lambda: pmd_self(VA_PMD + (2 << 20)), FAIL,
         "A si_addr_extent: expected covers the poisoned page, observed"),
    Leak("11g", "madvise-self-pmd: si_addr exact but lsb 12 (a 4 KiB extent)",
         lambda: pmd_self(VA_PMD + 300 * 4096, lsb=12), FAIL, "A si_addr_lsb: expected 21"),
    Leak("11e", "corrupt-pfn: C's si_addr is where B maps the page",
         lambda: corrupt_pfn(sigbus=[ao(addr=VA_A)]), FAIL,
         "C si_addr: expected poisoned page, observed"),
)


def _verdict(leak: Leak) -> tuple[str, list[str]]:
    obs = leak.build()
    v = judge(obs)
    if leak.findings:
        v = with_health(v, list(leak.findings), obs)
    return v.verdict, v.messages


@pytest.mark.parametrize("leak", LEAKS, ids=lambda leak: f"{leak.id}-{leak.what}")
def test_leak_is_not_a_pass(leak: Leak) -> None:
    assert leak.verdict != PASS
    verdict, messages = _verdict(leak)
    assert verdict == leak.verdict, messages
    assert any(leak.message in m for m in messages), messages


BASELINES = (
    (madvise_self, PASS), (madvise_early, PASS), (corrupt_pfn, PASS), (sysctl_early, PASS),
    (unmapped, PASS), (unpoison, KNOWN_DEVIATION), (late_only, KNOWN_DEVIATION),
    (late_access, KNOWN_DEVIATION), (file_io, KNOWN_DEVIATION),
    (badblocks_file_io, KNOWN_DEVIATION), (twice, KNOWN_DEVIATION),
    (unbind_hung, KNOWN_DEVIATION), (reflink, PASS),
    (reflink_lost_owner, KNOWN_DEVIATION), (mce_ar_self, PASS), (mce_corrected, PASS),
)


@pytest.mark.parametrize(("build", "verdict"), BASELINES, ids=lambda x: getattr(x, "__name__", x))
def test_builders_give_the_documented_verdict(build: Callable[[], Observation],
                                              verdict: str) -> None:
    v = judge(build())
    assert v.verdict == verdict, v.messages
    if build is reflink:  # and the 6.1 WARN is the known one
        assert with_health(v, list(_REFLINK_WARN), build()).verdict == KNOWN_DEVIATION


# --- leaks outside the judge: crashes, lost rows, races -------------------------
#
# RunLeak(id, what, verdict_of, verdict): ``verdict_of`` runs the code that
# decides the row (the host's crash folding, the session checks, the race
# rules) on a hand-made case with the defect and returns the verdict it gave;
# it must be ``verdict``, never a pass.

class RunLeak(NamedTuple):
    id: str
    what: str
    verdict_of: Callable[[], str]
    verdict: str


def _crash_then(verdict: str, first: str = "Kernel panic - not syncing: sysrq triggered crash"
                ) -> str:
    from mfinject import cli
    from mfinject.results import ScenarioResult
    from mfinject.vm import outcomes
    node = "tests/kernel/test_races.py::test_race[xfs-race-truncate]"
    crash = outcomes.CrashAttempt(node, "race-truncate", "xfs", 0, "console.log", first, "crash")
    [row] = outcomes.fold([ScenarioResult("race-truncate", "xfs", K6_1, verdict, nodeid=node)],
                          [crash], K6_1)
    return row.verdict if cli._is_failure(row) else PASS


def _between_tests() -> str:
    from mfinject import cli
    from mfinject.vm import outcomes
    death = outcomes.CrashAttempt("", "(vm)", "-", 0, "console.log", "BUG: unable to handle "
                                  "page fault", "guest crashed")
    [row] = outcomes.between_tests([death], K6_1)
    return row.verdict if cli._is_failure(row) else PASS


def _session(exit_code: int, final: bool = True, collected: tuple[str, ...] = ()) -> str:
    import tempfile
    from pathlib import Path

    from mfinject import cli
    from mfinject.results import ScenarioResult, append_jsonl
    from mfinject.vm import runner
    from mfinject.vm.kernels import Kernel
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        append_jsonl(d / "results.jsonl", ScenarioResult("madvise-self", "xfs", K6_1, PASS,
                                                         nodeid="t::test_scenario[xfs-madvise-self]",
                                                         final=final))
        if collected:
            (d / "collected-0.json").write_text(json.dumps(list(collected)))
        run = runner.GuestRun(Kernel("debian:6.1", K6_1, d / "vmlinuz", d), "tcg", "", d,
                              exit_code, False, 1.0)
        rows = cli._collect(run)
    return ERROR if any(r.verdict == ERROR for r in rows) else PASS


def _race(**kw: object) -> str:
    from mfinject.scenarios.race_runner import Iteration, raced, violations
    from mfinject.scenarios.races import RACES
    base = dict(index=0, page=1, inject_delay_us=0, race_delay_us=0, injection="ok", racer="ok",
                mapper_signals=(), path="generic", overlap_us=5.0)
    done = [Iteration(**{**base, "index": i, **kw}) for i in range(32)]
    if raced(done):
        return ERROR
    return FAIL if any(violations(RACES[0], it, "generic") for it in done) else PASS


# kernel health (item 3): what mf_kernel_health and mf_record make of the log
_CUT = "------------[ cut here ]------------"
_WARN_INSERT = "WARNING: CPU: 0 PID: 923 at fs/dax.c:380 dax_insert_entry+0x227/0x320"
_SIGBUS = ("Memory failure: 0x101218: Sending SIGBUS to python3:282 due to hardware memory "
           "corruption")
_RECOVERED = "Memory failure: 0x101218: recovery action for dax page: Recovered"
_FORCIBLY = ("Memory failure: 0x101218: forcibly killing python3:281 because of failure to unmap "
             "corrupted page")
_XFS_SHUTDOWN = ("XFS (pmem0): Corruption of in-memory data (0x8) detected at xfs_trans_cancel"
                 "+0x146/0x150 [xfs] (fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.")
_TAINT_W = (0, 1 << 9, 1 << 9)  # kernel.taint() when the watch starts, at the record, in teardown
_EPIPE = "EPIPE"


def _health(obs: Observation, during: list[object], after: list[object] | None = None,
            taint: tuple[int, ...] = (0, 0, 0)) -> str:
    """The row's verdict once the fixtures that own it ran: mf_kernel_health around a
    test that records ``obs`` through mf_record, over a /dev/kmsg that hands out
    ``during`` (read when the row is recorded), then ``after`` (what the unmount
    logs, read in teardown). A record is (level, seq, text); _EPIPE: the records
    up to the next one were overwritten before they were read."""
    import contextlib
    import errno
    import os
    from types import SimpleNamespace
    from unittest import mock

    from mfinject.fixtures import poison
    from mfinject.observers import kmsg
    from mfinject.records import RECORDER_KEY, Recorder
    from mfinject.scenarios import catalogue

    class DevKmsg:  # the os module as kmsg sees it: each read() to EAGAIN is one phase
        O_RDONLY, O_NONBLOCK, SEEK_END = os.O_RDONLY, os.O_NONBLOCK, os.SEEK_END

        def __init__(self, *phases: list[object]) -> None:
            self.phases = [list(p) for p in phases]

        def open(self, path: str, flags: int) -> int:
            return 3

        def lseek(self, fd: int, pos: int, how: int) -> None:
            self.phases.pop(0)  # to the end: past what was logged before

        def read(self, fd: int, size: int) -> bytes:
            if not self.phases or not self.phases[0]:
                self.phases[:1] = []
                raise OSError(errno.EAGAIN, "no more records")
            item = self.phases[0].pop(0)
            if item == _EPIPE:
                raise OSError(errno.EPIPE, "overwritten")
            level, seq, text = item
            return f"{level},{seq},{seq * 1000},-;{text}\n".encode()

        def close(self, fd: int) -> None:
            pass

    scenario = next(s for s in catalogue.ALL if s.name == obs.scenario)
    item = SimpleNamespace(
        nodeid=f"t::test_scenario[{obs.fs}-{obs.scenario}]", name="test_scenario",
        originalname="test_scenario", stash=pytest.Stash(),
        callspec=SimpleNamespace(params={"scenario": scenario, "mf_dax_fs": obs.fs}),
        get_closest_marker=lambda name: name if name == "pmem" else None,  # marked pmem
        iter_markers=lambda name=None: iter(()))
    request = SimpleNamespace(node=item, config=SimpleNamespace(stash=pytest.Stash()))
    request.config.stash[RECORDER_KEY] = Recorder(None, obs.kernel)
    taints = iter(taint)
    with mock.patch.object(kmsg, "os", DevKmsg([(6, 9, "before the test")], during, after or [])), \
            mock.patch("mfinject.kernel.taint", lambda: next(taints)), \
            mock.patch.object(poison, "CLEAR_WARN_ONCE", "/nonexistent", create=True):
        fixture = poison.mf_kernel_health.__wrapped__(request)
        record = poison.mf_record.__wrapped__(request, next(fixture))
        record(obs, judge(obs))
        with contextlib.suppress(StopIteration, pytest.fail.Exception):
            next(fixture)  # teardown
    return request.config.stash[RECORDER_KEY].row(item).verdict


RUN_LEAKS = (
    RunLeak("3a", "corrupt-pfn-reflink on 6.1: the unmount logs an XFS shutdown after the "
            "known WARN and its taint finding",
            lambda: _health(reflink(), [(4, 10, _CUT), (4, 11, _WARN_INSERT), (3, 12, _SIGBUS),
                                        (3, 13, _SIGBUS), (3, 14, _RECOVERED)],
                            [(1, 15, _XFS_SHUTDOWN)], _TAINT_W), FAIL),
    RunLeak("3b", "corrupt-pfn: memory-failure logs that it forcibly killed a mapper",
            lambda: _health(corrupt_pfn(), [(3, 10, _SIGBUS), (3, 11, _FORCIBLY),
                                            (3, 12, _RECOVERED)]), FAIL),
    RunLeak("3c", "badblocks-file-io: a recovery action logged, though nothing calls "
            "memory_failure() for a bad block",
            lambda: _health(badblocks_file_io(), [(3, 10, _RECOVERED)]), FAIL),
    RunLeak("3d", "corrupt-pfn: kernel log records overwritten before the row was recorded",
            lambda: _health(corrupt_pfn(), [_EPIPE, (3, 13, _SIGBUS), (3, 14, _RECOVERED)]),
            ERROR),
    RunLeak("3e", "corrupt-pfn: kernel log records overwritten during the unmount",
            lambda: _health(corrupt_pfn(), [(3, 10, _SIGBUS), (3, 11, _RECOVERED)],
                            [_EPIPE, (6, 15, "XFS (pmem0): Unmounting Filesystem")]), ERROR),
    RunLeak("1a", "the guest crashed during the test, the retry in a fresh VM passed",
            lambda: _crash_then(PASS), FLAKY),
    RunLeak("1b", "crashed, then a known deviation in the retry",
            lambda: _crash_then(KNOWN_DEVIATION), FLAKY),
    RunLeak("1c", "an int3 crash on 6.1: outside the catalogued crash's kernel range",
            lambda: _crash_then(PASS, "Oops: int3 0000 [#1] PREEMPT SMP"), FLAKY),
    RunLeak("1d", "crashed in setup, then skipped in the fresh VM",
            lambda: _crash_then("skipped"), FLAKY),
    RunLeak("1e", "the guest died after it came up, while no test ran",
            lambda: _between_tests(), FLAKY),
    RunLeak("2a", "pytest said '1 passed, 1 error', every row passed", lambda: _session(1),
            ERROR),
    RunLeak("2b", "an INTERNALERROR ended the session", lambda: _session(3), ERROR),
    RunLeak("2c", "a collected test has no row",
            lambda: _session(0, collected=("t::test_scenario[xfs-madvise-self]",
                                           "t::test_scenario[ext4-madvise-self]")), ERROR),
    RunLeak("2d", "the teardown never finished (the last row streamed is not final)",
            lambda: _session(0, final=False), ERROR),
    RunLeak("5a", "no iteration's injection and racing call overlapped",
            lambda: _race(overlap_us=-250.0), ERROR),
    RunLeak("5b", "EBUSY on every iteration", lambda: _race(injection="Device or resource busy"),
            ERROR),
    RunLeak("5c", "the injection took neither memory-failure path", lambda: _race(path="none"),
            FAIL),
    RunLeak("5d", "the racer of race-truncate read old data instead of truncating",
            lambda: _race(racer="old data"), FAIL),
)


@pytest.mark.parametrize("leak", RUN_LEAKS, ids=lambda leak: f"{leak.id}-{leak.what}")
def test_run_leak_is_not_a_pass(leak: RunLeak) -> None:
    got = leak.verdict_of()
    assert got != PASS
    assert got == leak.verdict


@pytest.mark.parametrize("addr", [VA_PMD + 300 * 4096, VA_PMD])
def test_a_pmd_signal_may_name_the_page_or_the_base_of_its_2mib_extent(addr: int) -> None:
    """sigaction(2): si_addr_lsb says which low bits of si_addr are significant."""
    assert judge(pmd_self(addr)).verdict == PASS


@pytest.mark.parametrize("addr", [VA_C + 3 * 4096, VA_C2 + 4 * 4096])
def test_a_process_mapping_the_page_twice_may_be_told_either_address(addr: int) -> None:
    assert judge(two_mappings(sigbus=[ao(addr=addr)])).verdict == PASS
