"""Threads, counters, file I/O, facts and races: the logic behind the newer checks."""

import dataclasses

from mfinject import kernel
from mfinject.expectations.catalogue import EXPECTATIONS
from mfinject.expectations.evaluate import judge, observed_field, observed_value
from mfinject.expectations.model import FAIL, KNOWN_DEVIATION, PASS
from mfinject.scenarios import races
from mfinject.scenarios.race_runner import Iteration, violations

from .samples import VA_C, ao, observation, participant


def test_stats_delta():
    before = {"total": 3, "recovered": 3, "failed": 0}
    assert kernel.stats_delta(before, {"total": 4, "recovered": 4, "failed": 0}) == \
        "total +1, recovered +1"
    assert kernel.stats_delta(before, before) == "unchanged"
    assert kernel.stats_delta(None, None) == "absent"


def test_thread_and_policy_fields():
    c = dataclasses.replace(participant("C", sigbus=[ao()], vaddr=VA_C),
                            signal_thread="thread 2", kill_policy="default")
    assert observed_field(c, "thread") == "thread 2"
    assert observed_field(c, "kill_policy") == "default"
    assert observed_field(participant("B"), "thread") == "no signal"


def test_early_thread_scenario_passes_and_fails_on_the_wrong_thread():
    def obs(thread):
        c = dataclasses.replace(participant("C", sigbus=[ao()], vaddr=VA_C),
                                signal_thread=thread, kill_policy="default")
        i = participant("I", maps=False, injection="ok")
        return dataclasses.replace(observation("corrupt-pfn-early-thread", [i, c]))
    assert judge(obs("thread 2")).verdict == PASS
    bad = judge(obs("main thread"))
    assert bad.verdict == FAIL
    assert any("find_early_kill_thread" in m for m in bad.messages)


def test_reinjection_counted_twice_is_a_known_kernel_deviation():
    c = participant("C", sigbus=[ao()], vaddr=VA_C)
    i = dataclasses.replace(participant("I", maps=False, injection="ok"), injection2="ok")
    obs = dataclasses.replace(observation("corrupt-pfn-twice", [i, c], kernel="6.12.118+deb13-amd64"),
                              hardware_corrupted_delta_kb=8,
                              facts=(("memory_failure_stats", "total +2, recovered +2"),))
    v = judge(obs)
    assert v.verdict == KNOWN_DEVIATION
    fields = {c.field: c.verdict for c in v.checks}
    assert fields["injection2"] == fields["memory_failure_stats"] == KNOWN_DEVIATION
    # on 6.1 the counters do not exist, and that is what is expected there
    old = dataclasses.replace(obs, kernel="6.1.0-56-amd64", facts=(("memory_failure_stats", "absent"),))
    assert {c.field: c.verdict for c in judge(old).checks}["memory_failure_stats"] == PASS


def test_clear_on_write_deviation_only_without_clear_error():
    r = dataclasses.replace(participant("R", maps=False), io=(
        ("read", "Input/output error"), ("pread", "Input/output error"),
        ("odirect_read", "Input/output error"), ("write_partial", "Bad address"),
        ("write_page", "Bad address"), ("pread_after_write", "Input/output error")))
    i = participant("I", maps=False, injection="ok")
    m = participant("M")
    base = dataclasses.replace(observation("badblocks-file-io", [i, m, r]), badblocks=("4168 8",))
    emulated = dataclasses.replace(base, facts=(("nd_bus_commands", "ars_cap ars_start"),))
    assert judge(emulated).verdict == KNOWN_DEVIATION
    real = dataclasses.replace(base, facts=(("nd_bus_commands", "ars_cap clear_error"),))
    assert judge(real).verdict == FAIL
    assert observed_value(base, "kernel", "badblocks") == "1 bad range"


def test_race_violations():
    race = races.RACES[0]
    ok = Iteration(0, 3, 100, 200, "Device or resource busy", "ok", (), "generic", 12.0)
    assert violations(race, ok, "generic") == []
    bad = Iteration(1, 3, 100, 200, "Invalid argument", "ok", ("BUS_MCEERR_AO",), "generic")
    found = violations(race, bad, "generic")
    assert len(found) == 2 and "late-kill mapper" in found[1]
    for r in races.RACES:
        assert EXPECTATIONS[r.name][0].field == "violations"


def test_health_signature_and_known_warn_on_old_kernels():
    from mfinject.expectations.evaluate import with_health
    from mfinject.expectations.model import Verdict
    from mfinject.observers.health import signature

    found = ["WARN: [  192.908776] ------------[ cut here ]------------",
             ("WARN: [  192.911039] WARNING: CPU: 0 PID: 923 at fs/dax.c:380 "
              "dax_insert_entry+0x227/0x320"),
             "new taint: taint flags W (0x200) appeared during the test"]
    assert signature(found) == "WARN fs/dax.c dax_insert_entry; new taint W"
    obs = observation("corrupt-pfn-reflink", [], path="notify_failure", fs="xfs-rmapbt")
    assert with_health(Verdict(PASS), found, obs).verdict == KNOWN_DEVIATION
    newer = dataclasses.replace(obs, kernel="6.12.118+deb13-amd64")
    assert with_health(Verdict(PASS), found, newer).verdict == FAIL
    other = dataclasses.replace(obs, scenario="corrupt-pfn")
    assert with_health(Verdict(PASS), found, other).verdict == FAIL


def test_stuck_stack_picks_the_stuck_cpu():
    lines = ["NMI backtrace for cpu 0", "CPU: 0 UID: 0 PID: 400 Comm: python3",
             " dump_stack_lvl+0x5d/0x80", " write_sysrq_trigger+0x1/0x2",
             "NMI backtrace for cpu 1", "CPU: 1 UID: 0 PID: 338 Comm: python3",
             " ? xas_load+0x16/0xf0", " ? dax_lock_mapping_entry+0xc5/0x120",
             " ? mf_dax_kill_procs+0x7f/0x260"]
    assert kernel.stack_from_backtraces(lines, 338) == \
        "xas_load <- dax_lock_mapping_entry <- mf_dax_kill_procs"


def test_summary_format():
    from mfinject.report import render
    from mfinject.results import ResultSet, ScenarioResult

    rs = ResultSet((
        ScenarioResult("corrupt-pfn", "xfs", "6.1.0-56-amd64", "pass"),
        ScenarioResult("corrupt-pfn", "ext4", "6.1.0-56-amd64", "known-deviation"),
        ScenarioResult("corrupt-pfn-reflink", "xfs", "6.1.0-56-amd64", "fail"),
    ))
    out = render("summary", rs)
    assert "| corrupt-pfn " in out and "dev pass" in out
    assert "| corrupt-pfn-reflink " in out and "- FAIL" in out
    assert "6.1.0-56-amd64: 2 scenarios, 3 results: 1 pass, 1 known deviation, 0 unspecified, " \
           "1 fail" in out
