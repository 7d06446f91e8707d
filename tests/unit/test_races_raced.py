"""A race passes only if it raced, and each iteration is judged by its own rule."""

from __future__ import annotations

from mfinject.participant import Reply
from mfinject.scenarios import race_runner, races
from mfinject.scenarios.race_runner import Iteration, Timed, overlap_us, raced, violations

TRUNCATE, FAULT = races.RACES[0], next(r for r in races.RACES if r.racer == races.FAULT)


def _it(i: int, injection: str = "ok", overlap: float | None = 5.0, racer: str = "ok",
        path: str = "generic") -> Iteration:
    return Iteration(i, 1, 100, 100, injection, racer, (), path, overlap)


def test_a_race_whose_two_calls_never_overlapped_did_not_race():
    why = raced([_it(i, overlap=-300.0 - i) for i in range(32)])
    assert why is not None and "never raced" in why and "300 us apart" in why


def test_a_race_that_was_ebusy_every_time_did_not_test_the_poison():
    why = raced([_it(i, injection="Device or resource busy") for i in range(32)])
    assert why is not None and "0 of 32" in why


def test_a_race_with_overlap_and_injections_raced():
    assert raced([*[_it(i) for i in range(4)], *[_it(i, overlap=-50.0) for i in range(4, 32)]]) \
        is None


def test_a_race_that_overlapped_once_in_32_hardly_raced():
    why = raced([_it(0), *[_it(i, overlap=-50.0) for i in range(1, 32)]])
    assert why is not None and "only 1 of 32" in why


def test_the_path_is_checked_per_iteration():
    assert violations(TRUNCATE, _it(0, path="none"), "generic") != []
    assert violations(TRUNCATE, _it(0, path="not traced"), "generic") != []  # unproven


def test_race_fault_allows_the_documented_sigbus_and_refuses_a_dead_racer():
    assert violations(FAULT, _it(0, racer="SIGBUS BUS_MCEERR_AR"), "generic") == []
    assert violations(FAULT, _it(0, racer="old data"), "generic") == []
    assert violations(FAULT, _it(0, racer="process died"), "generic") != []
    assert violations(TRUNCATE, _it(0, racer="old data"), "generic") != []


def test_overlap_is_measured_from_both_sides():
    def timed(a: int, b: int) -> Timed:
        return Timed(Reply(True), a, b)
    assert overlap_us(timed(0, 10_000), timed(5_000, 20_000)) == 5.0
    assert overlap_us(timed(0, 10_000), timed(30_000, 40_000)) == -20.0
    assert overlap_us(Timed(None), timed(0, 1)) is None


def test_timed_unwraps_the_reply_of_op_after():
    reply = Reply(True, {"reply": {"ok": False, "errno": 16, "error": "busy"},
                         "start_ns": 1, "end_ns": 2})
    t = Timed.of(reply)
    assert t.reply == Reply(False, None, 16, "busy") and (t.start_ns, t.end_ns) == (1, 2)
    assert race_runner.reply_text(t.reply) == "Device or resource busy"


MADVISE_FAULT = next(r for r in races.RACES if r.injector == races.MADVISE)
T1, T2 = 4242, 4243  # M's thread 1 (faults) and thread 2 (madvise)
# what the kernel logged in a documented iteration: memory-failure's SIGBUS to thread 2
SENT = race_runner.KernelSaid(sent=frozenset({T2}))
# and the fault handler's own SIGBUS to thread 1 besides
FAULTED = race_runner.KernelSaid(announced=frozenset({T1}), sent=frozenset({T2}))


def _own(injection: str = "ok", racer: str = "old data", injector: tuple[str, ...] = (
        "BUS_MCEERR_AR",), mapper: tuple[str, ...] = (), hw_kb: int | None = 4) -> Iteration:
    return Iteration(0, 3, 100, 100, injection, racer, mapper, "generic", 5.0, injector, T1, T2,
                     hw_kb)


def test_race_madvise_fault_passes_the_documented_outcomes():
    assert violations(MADVISE_FAULT, _own(), "generic", SENT) == []
    assert violations(MADVISE_FAULT, _own(racer="SIGBUS BUS_MCEERR_AR"), "generic", FAULTED) == []
    # the fault met the poison and its SIGBUS (announced by the fault handler)
    # ended the process before madvise() replied
    assert violations(MADVISE_FAULT, _own("process died", "SIGBUS BUS_MCEERR_AR", ()), "generic",
                      FAULTED) == []
    assert violations(MADVISE_FAULT, _own("Device or resource busy", injector=()),
                      "generic") == []


def test_race_madvise_fault_leaks():
    """Wrong kernel behaviour that each rule catches (the leak table of this race)."""
    wrong = {
        # madvise()'s caller got no BUS_MCEERR_AR (commit 03151c6e0b66)
        "caller not signalled": (_own(injector=()), SENT),
        # memory-failure logged no signal to the caller
        "no signal logged to the caller": (_own(), race_runner.KernelSaid()),
        # the caller's signal named another address, or not a page (si_addr_lsb)
        "caller's si_addr": (_own(injector=("BUS_MCEERR_AR at 0x7d0000001000, not the page "
                                            "0x7d0000003000",)), SENT),
        "caller's lsb": (_own(injector=("BUS_MCEERR_AR lsb 21",)), SENT),
        # the caller got AO, or two signals
        "caller AO": (_own(injector=("BUS_MCEERR_AO",)), SENT),
        "caller twice": (_own(injector=("BUS_MCEERR_AR", "BUS_MCEERR_AR")), SENT),
        # EBUSY, yet a signal to the caller, or to thread 1
        "signal after EBUSY": (_own("Device or resource busy"), SENT),
        "thread 1 SIGBUS after EBUSY": (_own("Device or resource busy", "SIGBUS BUS_MCEERR_AR",
                                             ()), FAULTED),
        # thread 1 got a SIGBUS at another address, with another code, or unannounced
        "fault's si_addr": (_own(racer="SIGBUS BUS_MCEERR_AR at 0x1000, not the page 0x3000"),
                            FAULTED),
        "fault's code": (_own(racer="SIGBUS BUS_ADRERR"), FAULTED),
        "thread 1 SIGBUS no fault announced": (_own(racer="SIGBUS BUS_MCEERR_AR"), SENT),
        # memory-failure signalled thread 1 too (besides the caller)
        "memory-failure signalled thread 1": (
            _own(racer="SIGBUS BUS_MCEERR_AR"),
            race_runner.KernelSaid(announced=frozenset({T1}), sent=frozenset({T1, T2}))),
        # the faulting thread read something else
        "wrong data": (_own(racer="data 0x0"), SENT),
        # another thread of M (the main one) got a signal
        "main thread": (_own(mapper=("BUS_MCEERR_AR",)), SENT),
        # the caller's AR went to thread 1 instead: the process died, nothing announced
        "AR to the wrong thread": (_own("process died", "SIGBUS BUS_MCEERR_AR", ()), SENT),
        # the process died without any SIGBUS of thread 1
        "caller killed": (_own("process died", "process died", ()), SENT),
        # the page counted twice, or not at all
        "HardwareCorrupted +8": (_own(hw_kb=8), SENT),
        "HardwareCorrupted +0": (_own(hw_kb=0), SENT),
    }
    for what, (it, said) in wrong.items():
        assert violations(MADVISE_FAULT, it, "generic", said) != [], what


def test_i_which_maps_nothing_may_get_no_signal():
    it = Iteration(0, 1, 100, 100, "ok", "ok", (), "generic", 5.0, ("BUS_MCEERR_AO",))
    assert violations(TRUNCATE, it, "generic") != []


def test_the_kernel_log_names_the_threads():
    from mfinject.observers.kmsg import KmsgRecord, Lost
    records = [KmsgRecord(3, 1, 0, "MCE: Killing python3:4242 due to hardware memory corruption "
                                   "fault at 7d0000003000"),
               KmsgRecord(3, 2, 0, "Memory failure: 0x1234: Sending SIGBUS to python3:77 due to "
                                   "hardware memory corruption"),
               Lost(3, 1)]
    said = race_runner.KernelSaid.of(records)
    assert said.announced == {4242} and said.sent == {77}


def test_a_file_given_only_poisoned_pages_is_kept_as_a_fence(monkeypatch):
    """After as many iterations as a file has pages, the blocks the truncates freed may
    all be poisoned: the file that gets them keeps them, and the next one is used."""
    import pytest

    from mfinject import fs, ledger
    from mfinject.scenarios import race_runner, races
    from mfinject.scenarios.runner import ScenarioError

    made: list[str] = []
    monkeypatch.setattr(fs, "create_file", lambda mount, name, size, fill: made.append(name)
                        or f"/mnt/{name}")
    poisoned_files = {"/mnt/race-truncate-7.dat", "/mnt/race-truncate-7-fence1.dat"}
    monkeypatch.setattr(race_runner, "_extent_pfn", lambda path, ns, page: (
        0x1000 + page if path in poisoned_files else 0x2000 + page))
    ledger.forget()
    for pfn in range(0x1000, 0x1000 + race_runner.RACE_FILE_PAGES):
        ledger.note(pfn)
    race = next(r for r in races.RACES if r.name == "race-truncate")
    try:
        path, page = race_runner._fresh_file(race, None, None, 7, 3)
        assert (path, page) == ("/mnt/race-truncate-7-fence2.dat", 3)
        assert made == ["race-truncate-7.dat", "race-truncate-7-fence1.dat",
                        "race-truncate-7-fence2.dat"]
        poisoned_files.update(f"/mnt/race-truncate-8{s}.dat" for s in
                              ["", *(f"-fence{k}" for k in range(1, race_runner.FENCES + 1))])
        with pytest.raises(ScenarioError, match="5 new files in a row"):
            race_runner._fresh_file(race, None, None, 8, 0)
    finally:
        ledger.forget()
