"""The plugin's guard: without pmem, skip with the fix; under require-pmem, error."""

from pathlib import Path

import pytest

KERNEL_TESTS = Path(__file__).resolve().parent.parent / "kernel"


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("CI", "MFINJECT_REQUIRE_PMEM", "MFINJECT_DEVICE", "MFINJECT_DISPOSABLE",
                "MFINJECT_IN_VM", "MFINJECT_CRASH_TEST"):
        monkeypatch.delenv(var, raising=False)


def test_no_pmem_skips_with_the_fix(pytester, clean_env):
    res = pytester.runpytest("-p", "no:cacheprovider", "-rs", str(KERNEL_TESTS))
    outcomes = res.parseoutcomes()
    assert outcomes.get("skipped", 0) >= 12 and set(outcomes) <= {"skipped", "deselected"}
    res.stdout.fnmatch_lines(["*no pmem designated: pass --mfinject-device=/dev/pmemN*"])


def test_require_pmem_turns_the_skip_into_an_error(pytester, clean_env, monkeypatch):
    monkeypatch.setenv("MFINJECT_REQUIRE_PMEM", "1")
    res = pytester.runpytest("-p", "no:cacheprovider", str(KERNEL_TESTS))
    outcomes = res.parseoutcomes()
    assert outcomes.get("errors", 0) >= 12 and set(outcomes) <= {"errors", "deselected"}
    res.stdout.fnmatch_lines(["*no pmem designated*--mfinject-require-pmem*"])
    assert res.ret != 0


def test_ci_true_implies_require_pmem(pytester, clean_env, monkeypatch):
    monkeypatch.setenv("CI", "true")
    res = pytester.runpytest("-p", "no:cacheprovider", str(KERNEL_TESTS))
    outcomes = res.parseoutcomes()
    assert outcomes.get("errors", 0) >= 12 and set(outcomes) <= {"errors", "deselected"}


def test_missing_device_is_named(pytester, clean_env, monkeypatch):
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root to get past the root check: run as root")
    res = pytester.runpytest("-p", "no:cacheprovider", "--mfinject-device=/dev/pmem97",
                             str(KERNEL_TESTS))
    res.stdout.fnmatch_lines(["*/dev/pmem97 does not exist*ndctl list -N*"])
    assert res.ret != 0


def test_deliberate_crash_never_runs_outside_the_vm(pytester, clean_env, monkeypatch):
    monkeypatch.setenv("MFINJECT_CRASH_TEST", "1")  # asked for, but not in the VM
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", str(KERNEL_TESTS))
    assert "test_deliberate_crash" not in res.stdout.str()
    assert "1 deselected" in res.stdout.str()
    monkeypatch.setenv("MFINJECT_IN_VM", "1")
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", str(KERNEL_TESTS))
    assert "test_deliberate_crash" in res.stdout.str()
