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
