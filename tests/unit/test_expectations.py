"""Expectation matching: passes, failures that quote their source, known deviations."""

import dataclasses

import pytest

from mfinject.expectations import sources
from mfinject.expectations.catalogue import EXPECTATIONS, KNOWN_DEVIATIONS
from mfinject.expectations.evaluate import judge, observed_field
from mfinject.expectations.model import (
    FAIL,
    KNOWN_DEVIATION,
    PASS,
    Expect,
    KernelRange,
    KnownDeviation,
    Seen,
    combine,
)
from mfinject.kernel import Version
from mfinject.scenarios import catalogue

from .samples import VA_A, VA_C, ao, ar, observation, participant


def test_every_scenario_has_expectations_with_sources():
    for sc in catalogue.ALL:
        exps = EXPECTATIONS[sc.name]
        assert exps, sc.name
        names = {p.name for p in sc.procs} | {"kernel"}
        for e in exps:
            assert e.participant in names
            assert e.source.quote and e.source.ref


def test_madvise_self_pass():
    obs = observation("madvise-self", [participant("A", sigbus=[ar()])])
    v = judge(obs)
    assert v.verdict == PASS
    assert {c.field for c in v.checks} == {"path", "hardware_corrupted_kb", "recovery_action",
                                          "signal", "si_addr", "si_addr_lsb", "mapping", "window",
                                          "other_signals", "exit"}


def test_wrong_si_code_fails_and_quotes_the_document():
    obs = observation("madvise-self", [participant("A", sigbus=[ao(addr=VA_A)])])
    v = judge(obs)
    assert v.verdict == FAIL
    (msg,) = v.messages
    assert "expected BUS_MCEERR_AR, observed BUS_MCEERR_AO" in msg
    assert msg.count("deviates from madvise(2)") == 1


def test_missing_signal_fails_addr_and_lsb_too():
    obs = observation("madvise-self", [participant("A", mapped_after=True)])
    v = judge(obs)
    failed = {c.field: c.observed for c in v.checks if c.verdict == FAIL}
    assert failed == {"signal": "none", "si_addr": "no signal", "si_addr_lsb": "no signal",
                      "mapping": "mapped", "window": "all mapped", "exit": "alive"}


def test_early_bystander_address_is_its_own():
    a = participant("A", sigbus=[ar()])
    c = participant("C", sigbus=[ao(addr=VA_A)], vaddr=VA_C)  # A's address sent to C
    v = judge(observation("madvise-early", [a, c]))
    assert v.verdict == FAIL
    bad = [c for c in v.checks if c.verdict == FAIL]
    assert [(b.participant, b.field, b.observed) for b in bad] == [("C", "si_addr", f"{VA_A:#x}")]


def test_known_deviation_is_not_a_pass():
    exp = {"s": (Expect("B", "mapping", "unmapped", sources.SYSCTL_LATE),)}
    dev = (KnownDeviation("s", "B", "mapping", "mapped", "kernel",
                          "no early-kill mapper: nothing unmapped", sources.COMMIT_DEV_PAGEMAP,
                          Seen("6.1.0-56", "6.1.0-56")),)
    obs = observation("s", [participant("B", mapped_after=True)])
    v = judge(obs, exp, dev)
    assert v.verdict == KNOWN_DEVIATION
    msg = v.messages[0]
    assert "Known deviation (kernel)" in msg and "nothing unmapped" in msg
    assert "deviates from Documentation/admin-guide/sysctl/vm.rst" in msg
    # a different observed value is not covered by the deviation
    obs2 = observation("s", [participant("B", mapped_after=None)])
    assert judge(obs2, exp, dev).verdict == FAIL


def test_kernel_range_selects_expectations():
    e_old = Expect("A", "signal", "none", sources.MADVISE_HWPOISON,
                   kernels=KernelRange(until=Version(6, 0)))
    e_new = Expect("A", "signal", "BUS_MCEERR_AR", sources.MADVISE_HWPOISON,
                   kernels=KernelRange(since=Version(6, 0)))
    exp = {"s": (e_old, e_new)}
    obs = observation("s", [participant("A", sigbus=[ar()])])
    assert judge(obs, exp, ()).verdict == PASS
    old = observation("s", [participant("A", sigbus=[ar()])], kernel="5.15.0-1-amd64")
    assert judge(old, exp, ()).verdict == FAIL


def test_path_selects_expectations():
    e = Expect("A", "signal", "none", sources.MADVISE_HWPOISON, paths=frozenset({"notify_failure"}))
    obs = observation("s", [participant("A")], path="generic")
    with pytest.raises(KeyError):
        judge(obs, {"s": (e,)}, ())


def test_commit_source_reads_differs_from():
    e = Expect("A", "signal", "none", sources.COMMIT_DEV_PAGEMAP)
    v = judge(observation("s", [participant("A", sigbus=[ar()])]), {"s": (e,)}, ())
    assert "differs from commit 6100e34b2526" in v.messages[0]


def test_observed_field_vocabulary():
    p = participant("I", maps=False, injection="ok")
    assert observed_field(p, "signal") == "none"
    assert observed_field(p, "mapping") == "unknown"
    assert observed_field(p, "injection") == "ok"


def test_combine_orders_severity():
    assert combine([PASS, KNOWN_DEVIATION]) == KNOWN_DEVIATION
    assert combine([KNOWN_DEVIATION, FAIL]) == FAIL
    assert combine([PASS]) == PASS


def test_version_parse():
    assert Version.parse("6.1.0-56-amd64") == Version(6, 1, 0)
    assert Version.parse("7.3-rc1") == Version(7, 3)
    assert Version(6, 12) > Version(6, 1, 192)


def test_path_expectation_follows_the_filesystem():
    good = observation("madvise-self", [participant("A", sigbus=[ar()])], path="notify_failure")
    assert judge(good).verdict == PASS
    bad = observation("madvise-self", [participant("A", sigbus=[ar()])], path="notify_failure")
    bad = bad.__class__(**{**bad.__dict__, "path_observed": "generic"})
    v = judge(bad)
    assert v.verdict == FAIL
    assert "differs from commit 6f643c57d57c" in v.messages[0]


def test_seen_confirms_the_series_between_its_ends():
    seen = Seen("7.2.13", "7.3.4")
    assert seen.confirms(Version(7, 2, 1)) and seen.confirms(Version(7, 3, 9))
    assert not seen.confirms(Version(7, 4)) and not seen.confirms(Version(6, 14, 3))
    assert seen.unconfirmed("7.4.1-amd64") == "seen up to 7.3.4, unconfirmed on 7.4.1-amd64"
    assert seen.unconfirmed("6.14.3") == "seen from 7.2.13, unconfirmed on 6.14.3"
    # Debian's 6.1 releases are 6.1.0-N: one series
    assert Seen("6.1.0-56", "6.1.0-56").confirms(Version.parse("6.1.0-57-amd64"))


def test_a_case_explains_only_as_a_whole_and_where_seen():
    exp = {"s": (Expect("B", "mapping", "unmapped", sources.SYSCTL_LATE),
                 Expect("B", "access", "SIGBUS BUS_MCEERR_AR", sources.HWPOISON_LATE))}
    case = tuple(KnownDeviation("s", "B", f, v, "kernel", "still mapped", sources.UNMAP_AND_KILL,
                                Seen("6.1.0-56", "6.12.118"), case="still mapped")
                 for f, v in (("mapping", "mapped"), ("access", "old data")))

    def obs(mapped, access, kernel="6.1.0-56-amd64"):
        b = dataclasses.replace(participant("B", mapped_after=mapped), access=access)
        return observation("s", [b], kernel=kernel)

    assert judge(obs(True, "old data"), exp, case).verdict == KNOWN_DEVIATION
    assert judge(obs(True, "old data", "6.12.118+deb13-amd64"), exp, case).verdict == \
        KNOWN_DEVIATION
    # half of it is no case: both halves fail, saying what the other lacks
    half = judge(obs(False, "old data"), exp, case)
    assert half.verdict == FAIL
    assert "needs with it B.mapping mapped (observed unmapped)" in half.messages[0]
    assert judge(obs(True, "SIGBUS BUS_MCEERR_AR"), exp, case).verdict == FAIL
    # all of it, on a kernel it was not seen on
    later = judge(obs(True, "old data", "7.3.4+deb13-amd64"), exp, case)
    assert later.verdict == FAIL
    assert "seen up to 6.12.118, unconfirmed on 7.3.4+deb13-amd64" in later.messages[0]


def test_a_fact_a_case_needs_must_be_known():
    d = KnownDeviation("s", "B", "mapping", "mapped", "kernel", "x", sources.SYSCTL_LATE,
                       Seen("6.1", "7.3"), fact_lacks=("nd_bus_commands", "clear_error"))
    assert d.holds_for((("nd_bus_commands", "cmd_call"),))
    assert d.holds_for((("nd_bus_commands", "none"),))  # a bus that offers nothing
    assert not d.holds_for((("nd_bus_commands", "ars_cap clear_error"),))
    assert not d.holds_for((("nd_bus_commands", "unknown"),))  # not read
    assert not d.holds_for(())


def test_cases_are_consistent_and_health_cases_stand_alone():
    cases = {}
    for d in KNOWN_DEVIATIONS:
        cases.setdefault((d.scenario, d.case), []).append(d)
    for (scenario, name), entries in cases.items():
        assert name, scenario
        shared = {(d.kind, d.explanation, d.source, d.seen, d.paths, d.fact_lacks)
                  for d in entries}
        assert len(shared) == 1, (scenario, name)
        fields = {(d.participant, d.field) for d in entries}
        assert len(fields) == len(entries)
        if ("kernel", "health") in fields:  # judged by with_health(), alone
            assert fields == {("kernel", "health")}


def _kills(scenario, participant, path, version):
    return any(e.participant == participant and e.applies(path, version)
               and ((e.field == "signal" and e.value != "none")
                    or (e.field in ("access", "fault") and e.value.startswith("SIGBUS")))
               for e in EXPECTATIONS[scenario])


def test_every_participant_has_its_signals_and_its_end_expected():
    """signal, other_signals and exit, for everyone; and the end the catalogue derives
    holds on every path and kernel the signals it follows from hold on."""
    for sc in catalogue.ALL:
        for role in sc.procs:
            exps = [e for e in EXPECTATIONS[sc.name] if e.participant == role.name]
            assert {"signal", "other_signals", "exit"} <= {e.field for e in exps}, \
                (sc.name, role.name)
            kills = {_kills(sc.name, role.name, path, Version(*v))
                     for path in ("generic", "notify_failure")
                     for v in ((6, 1), (6, 4), (6, 5), (6, 12), (7, 3))}
            assert len(kills) == 1, (sc.name, role.name)
