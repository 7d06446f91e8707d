"""The benchmark's arithmetic, on rows as the recorder writes them."""

from __future__ import annotations

import re

from mfinject.results import ScenarioResult
from mfinject.vm import benchmark


def _row(name: str, setup: float, call: float, teardown: float, starts: str = "20, 40"
         ) -> ScenarioResult:
    return ScenarioResult(name, "xfs", "6.1.0-57-amd64", "pass",
                          nodeid=f"tests/kernel/test_scenarios.py::test_scenario[xfs-{name}]",
                          durations={"setup": setup, "call": call, "teardown": teardown},
                          observation={"facts": [["participant_start_ms", starts]]})


def test_setup_and_teardown_are_told_apart_from_the_body():
    rows = (_row("a", 3.0, 0.5, 1.0), _row("b", 0.1, 5.0, 0.1), _row("c", 0.2, 0.3, 0.2))
    text = benchmark.inside_tests(rows)
    lines = dict(re.split(r"\s{2,}", line.strip()) for line in text.split("\n\n")[0].splitlines()
                 if not line.startswith("-"))
    assert lines["in test bodies (s)"] == "6"
    assert lines["in setup and teardown (s)"] == "5"
    assert lines["setup + teardown per test, median (s)"] == "0.40"
    # only a: 4 s of setup and teardown around a 0.5 s body
    assert lines["tests whose setup + teardown exceed the body by > 2 s"] == "1"
    assert lines["participant start, median / max (ms)"] == "30 / 40 (6 started)"
    slowest = text.split("slowest tests")[1].splitlines()
    assert slowest[2].startswith("test_scenario[xfs-b]")  # 5.2 s in all: first


def test_runs_are_compared_with_the_bare_boot():
    text = benchmark.summary([benchmark.Run("bare boot", 20.0),
                              benchmark.Run("one-scenario loop", 32.0,
                                            (_row("a", 1, 1, 1), _row("b", 1, 1, 1)))])
    assert "1.6x" in text and "pass 2" in text


def test_rows_without_durations_are_said_to_be_untimed():
    assert "no row says" in benchmark.inside_tests((ScenarioResult("a", "xfs", "k", "pass"),))


def test_the_bare_boot_runs_nothing_on_the_same_kernel_and_nvdimm(tmp_path):
    (tmp_path / "debian-6.1").mkdir()
    (tmp_path / "debian-6.1" / "vng-command.txt").write_text(
        "/v/bin/vng --disable-kvm --run /k/vmlinuz '--qemu-opts=-device nvdimm,id=nvdimm0' "
        "--append 'panic=-1' --exec 'cd /w && python3 -m mfinject.vm.guest --results /r'\n")
    argv = benchmark.bare_command(tmp_path)
    assert argv[-2:] == ["--exec", "true"]
    assert "--qemu-opts=-device nvdimm,id=nvdimm0" in argv and "/k/vmlinuz" in argv


def test_a_bare_boot_that_failed_is_no_yardstick():
    text = benchmark.summary([benchmark.Run("bare boot", 1.0, exit=127),
                              benchmark.Run("one-scenario loop", 32.0)])
    assert "32.0x" not in text and "127" in text
