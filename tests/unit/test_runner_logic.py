"""The VM runner's pure logic: progress parsing, console excerpts, parallelism."""

from mfinject.vm import runner

PROGRESS = """guest up: kernel 6.1.0-56-amd64, namespace namespace0.0
running tests/kernel/t.py::test_scenario[xfs-madvise-self] scenario=madvise-self fs=xfs
passed tests/kernel/t.py::test_scenario[xfs-madvise-self] (call, 0.7 s)
running tests/kernel/t.py::test_scenario[xfs-madvise-late] scenario=madvise-late fs=xfs
failed tests/kernel/t.py::test_scenario[xfs-madvise-late] (call, 0.7 s)
failed tests/kernel/t.py::test_scenario[xfs-madvise-late] (teardown, 0.1 s)
running tests/kernel/t.py::test_scenario[ext4-corrupt-pfn] scenario=corrupt-pfn fs=ext4
"""


def test_progress_finds_the_test_that_never_finished():
    done, running = runner.parse_progress(PROGRESS)
    assert done == {"tests/kernel/t.py::test_scenario[xfs-madvise-self]",
                    "tests/kernel/t.py::test_scenario[xfs-madvise-late]"}
    assert running is not None
    assert (running.scenario, running.fs) == ("corrupt-pfn", "ext4")


def test_progress_all_finished():
    done, running = runner.parse_progress(PROGRESS.rsplit("running", 1)[0])
    assert running is None and len(done) == 2


def test_console_excerpt_starts_at_the_panic(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("\n".join([f"[ {i}.0] boot line {i}" for i in range(50)]
                             + ["[ 60.1] Kernel panic - not syncing: sysrq triggered crash",
                                "[ 60.2] CPU: 1 PID: 255 Comm: python3"]
                             + [f"[ 61.{i}] trace {i}" for i in range(40)]))
    first, text = runner.console_excerpt(log, lines=5)
    assert first == "[ 60.1] Kernel panic - not syncing: sysrq triggered crash"
    assert text.splitlines()[2] == first
    assert len(text.splitlines()) == 7


def test_console_excerpt_without_trouble_is_the_tail(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("\n".join(f"line {i}" for i in range(100)))
    first, text = runner.console_excerpt(log, lines=3)
    assert first is None and text == "line 97\nline 98\nline 99"


def test_parallelism_is_bounded_and_explained():
    plan = runner.plan_parallelism(3)
    assert 1 <= plan.jobs <= 3
    assert "cores" in plan.reason and "GiB" in plan.reason
