"""The plugin: the no-pmem guard, and staying out of sessions that are not mfinject's.

Without pmem a test skips with the fix; under require-pmem it errors; a run in
which every mfinject test skipped is not a pass. In another project's session
in the same venv the plugin shows nothing and reads nothing; bad option values
are usage errors that name the option.
"""

import importlib.metadata
import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from mfinject import options, plugin

KERNEL_TESTS = Path(__file__).resolve().parent.parent / "kernel"
ENV = ("CI", "MFINJECT_REQUIRE_PMEM", "MFINJECT_DEVICE", "MFINJECT_DISPOSABLE", "MFINJECT_RESULTS",
       "MFINJECT_SEED", "MFINJECT_RACE_ITERATIONS", "MFINJECT_IN_VM", "MFINJECT_CRASH_TEST",
       "MFINJECT_PROGRESS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS",
       "MFINJECT_MKFS_OPTIONS", "MFINJECT_FSTYPE", "MFINJECT_MOUNT_OPTIONS",
       "MFINJECT_POISON_PAGE")
NO_PMEM = "no pmem designated: pass --mfinject-device=/dev/pmemN"


@pytest.fixture
def clean_env(monkeypatch):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)


def _entry_point_installed() -> bool:
    return any(ep.value == "mfinject.plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))


# How another project's session gets the plugin: the venv's entry point, or
# `-p mfinject.plugin` with and without the entry point installed too.
LOADS = ["entry-point", "p-and-entry-point", "p-only"]


@pytest.fixture(params=LOADS)
def load(request, clean_env, monkeypatch):
    """The arguments that load the plugin the way this parameter says."""
    if request.param == "p-only":
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    elif not _entry_point_installed():
        pytest.skip("the pytest11 entry point is not installed: pip install -e .")
    return [] if request.param == "entry-point" else ["-p", "mfinject.plugin"]


def test_no_pmem_skips_with_the_fix(pytester, clean_env):
    res = pytester.runpytest("-p", "no:cacheprovider", "-rs", str(KERNEL_TESTS))
    outcomes = res.parseoutcomes()
    assert outcomes.get("skipped", 0) >= 12 and set(outcomes) <= {"skipped", "deselected"}
    res.stdout.fnmatch_lines([f"*{NO_PMEM}*"])


def test_all_skipped_says_nothing_ran_and_is_no_pass(pytester, clean_env):
    res = pytester.runpytest("-p", "no:cacheprovider", str(KERNEL_TESTS))
    skipped = res.parseoutcomes()["skipped"]
    assert res.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    res.stdout.fnmatch_lines([
        "*= mfinject results =*",
        f"mfinject: no scenario ran: {skipped} skipped ({skipped}: {NO_PMEM}*"])


def test_a_run_that_ran_something_is_judged_as_usual(pytester, clean_env):
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.pmem
        def test_ran():
            pass
        def test_skipped():
            pytest.skip("not here")
    """)
    res = pytester.runpytest("-p", "no:cacheprovider", "--mfinject-seed=1")
    assert res.ret == pytest.ExitCode.OK
    assert "no scenario ran" not in res.stdout.str()
    res.stdout.fnmatch_lines(["*= mfinject results =*", "*test_ran*pass*"])


def test_require_pmem_turns_the_skip_into_an_error(pytester, clean_env, monkeypatch):
    monkeypatch.setenv("MFINJECT_REQUIRE_PMEM", "1")
    res = pytester.runpytest("-p", "no:cacheprovider", str(KERNEL_TESTS))
    outcomes = res.parseoutcomes()
    assert outcomes.get("errors", 0) >= 12 and set(outcomes) <= {"errors", "deselected"}
    res.stdout.fnmatch_lines(["*no pmem designated*--mfinject-require-pmem*"])
    assert res.ret == pytest.ExitCode.TESTS_FAILED


def test_ci_true_implies_require_pmem(pytester, clean_env, monkeypatch):
    monkeypatch.setenv("CI", "true")
    res = pytester.runpytest("-p", "no:cacheprovider", str(KERNEL_TESTS))
    outcomes = res.parseoutcomes()
    assert outcomes.get("errors", 0) >= 12 and set(outcomes) <= {"errors", "deselected"}


def test_missing_device_stops_the_session_once(pytester, clean_env, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # the check runs as root only
    res = pytester.runpytest("-p", "no:cacheprovider", "--mfinject-device=/dev/pmem97",
                             str(KERNEL_TESTS))
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in res.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "--mfinject-device" in errors[0] and "/dev/pmem97" in errors[0]
    assert "Traceback" not in res.stderr.str()
    assert " passed" not in res.stdout.str() and " error" not in res.stdout.str()


def test_deliberate_crash_never_runs_outside_the_vm(pytester, clean_env, monkeypatch):
    monkeypatch.setenv("MFINJECT_CRASH_TEST", "1")  # asked for, but not in the VM
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", str(KERNEL_TESTS))
    assert "test_deliberate_crash" not in res.stdout.str()
    assert "1 deselected" in res.stdout.str()
    monkeypatch.setenv("MFINJECT_IN_VM", "1")
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", str(KERNEL_TESTS))
    assert "test_deliberate_crash" in res.stdout.str()


OTHER_PROJECT = """
    import pytest

    def test_other(request):
        assert request.config.getoption("mfinject_seed") is None  # the plugin is loaded
        assert not [f for f in request.fixturenames if "mf_" in f or "health" in f], \\
            request.fixturenames

    @pytest.mark.skip(reason="a skip of another project's is none of mfinject's business")
    def test_skipped():
        pass
"""


def test_other_projects_session_shows_nothing(pytester, clean_env, load):
    pytester.makepyfile(OTHER_PROJECT)
    res = pytester.runpytest("-p", "no:cacheprovider", *load)
    assert res.ret == pytest.ExitCode.OK, res.stdout.str() + res.stderr.str()
    assert res.parseoutcomes() == {"passed": 1, "skipped": 1}
    assert "mfinject:" not in res.stdout.str()  # the header ("plugins:" names the dist)
    assert "mfinject results" not in res.stdout.str()
    fixtures = pytester.runpytest("-p", "no:cacheprovider", "--fixtures", *load)
    assert fixtures.ret == pytest.ExitCode.OK
    assert not [line for line in fixtures.stdout.lines if line.startswith("mf_")]
    assert "mfinject.fixtures" not in fixtures.stdout.str()


@pytest.mark.parametrize("var", ["MFINJECT_SEED", "MFINJECT_RACE_ITERATIONS"])
def test_other_projects_session_ignores_the_environment(pytester, clean_env, monkeypatch, load,
                                                        var):
    monkeypatch.setenv(var, "abc")
    pytester.makepyfile(OTHER_PROJECT)
    res = pytester.runpytest("-p", "no:cacheprovider", *load)
    assert res.ret == pytest.ExitCode.OK, res.stdout.str() + res.stderr.str()
    assert res.parseoutcomes() == {"passed": 1, "skipped": 1}


@pytest.mark.parametrize("value", ["0", "-5", "abc"])
def test_bad_race_iterations_is_a_usage_error(pytester, clean_env, value):
    res = pytester.runpytest("-p", "no:cacheprovider", "--mfinject-race-iterations", value)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines([f"ERROR: --mfinject-race-iterations '{value}': give the number of "
                              "iterations of each race, 1 or more*"])
    assert "Traceback" not in res.stderr.str()


def test_bad_seed_is_a_usage_error(pytester, clean_env):
    res = pytester.runpytest("-p", "no:cacheprovider", "--mfinject-seed", "12x")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["ERROR: --mfinject-seed '12x': give a number, or 'random'*"])


@pytest.mark.parametrize("var,value", [("MFINJECT_SEED", "abc"),
                                       ("MFINJECT_RACE_ITERATIONS", "abc"),
                                       ("MFINJECT_RACE_ITERATIONS", "0"),
                                       ("MFINJECT_POISON_PAGE", "last")])
def test_bad_environment_fallback_is_a_usage_error_in_mfinject_sessions(
        pytester, clean_env, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", str(KERNEL_TESTS))
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    option = "--" + var.lower().replace("_", "-")
    res.stderr.fnmatch_lines([f"ERROR: {var}='{value}' (the environment fallback of {option}): *"])
    assert "Traceback" not in res.stderr.str()


def test_ini_twins_are_read(pytester, clean_env, tmp_path):
    pytester.makeini(f"""
        [pytest]
        mfinject_device = /dev/pmem5
        mfinject_disposable = true
        mfinject_results = {tmp_path}
        mfinject_require_pmem = true
        mfinject_seed = 4242
        mfinject_race_iterations = 3
    """)
    pytester.makepyfile(f"""
        from pathlib import Path

        def test_settings(mf_settings):
            assert mf_settings.device == "/dev/pmem5"
            assert mf_settings.disposable and mf_settings.require_pmem
            assert mf_settings.results_dir == Path({str(tmp_path)!r})
            assert (mf_settings.race_seed, mf_settings.race_iterations) == (4242, 3)
    """)
    res = pytester.runpytest("-p", "no:cacheprovider")
    assert res.ret == pytest.ExitCode.OK, res.stdout.str()
    res.stdout.fnmatch_lines(["mfinject: race seed 4242 (3 iterations per race*"])
    assert "PytestConfigWarning" not in res.stdout.str()  # every key is a known ini option


def test_bad_ini_value_is_a_usage_error(pytester, clean_env):
    pytester.makeini("[pytest]\nmfinject_race_iterations = -1\n")
    res = pytester.runpytest("-p", "no:cacheprovider")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["ERROR: ini mfinject_race_iterations = '-1' (the twin of "
                              "--mfinject-race-iterations): *"])


def test_every_option_has_an_ini_twin_in_help_and_docstring(pytester, clean_env):
    res = pytester.runpytest("-p", "no:cacheprovider", "--help")
    doc_rows = [line.split() for line in plugin.__doc__.splitlines() if line.startswith("--")]
    for o in options.OPTIONS:
        assert o.cli in res.stdout.str()
        res.stdout.fnmatch_lines([f"  {o.name} (*"])  # the ini-options section
        row = next(r for r in doc_rows if r[0].split("=")[0] == o.cli)
        assert row[1] == o.name and row[2].split("=")[0] == o.env


@pytest.mark.parametrize("arg,suite,reaches", [
    ("/repo/tests/kernel", "/repo/tests/kernel", True),
    ("/repo/tests/kernel/test_races.py", "/repo/tests/kernel", True),
    ("/repo/tests", "/repo/tests/kernel", True),  # `pytest` in the checkout: testpaths
    ("/repo", "/repo/tests/kernel", True),
    ("/repo/tests/unit", "/repo/tests/kernel", False),
    ("/proj", "/proj/.venv/lib/python3.11/site-packages/mfinject/suite", False),
    ("/proj/.venv/lib/python3.11/site-packages/mfinject/suite/test_races.py",
     "/proj/.venv/lib/python3.11/site-packages/mfinject/suite", True),
])
def test_which_paths_reach_the_suite(arg, suite, reaches):
    assert plugin._reaches(Path(arg), Path(suite)) is reaches


def test_the_checkout_tests_dir_activates_it(pytester, clean_env):
    tests = KERNEL_TESTS.parent
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q",
                             f"--ignore={tests / 'unit'}", str(tests))
    assert res.ret == pytest.ExitCode.OK
    assert "tests/kernel/test_scenarios.py::test_scenario[xfs-madvise-self]" in res.stdout.str()
    assert "1 deselected" in res.stdout.str()  # the plugin's deliberate-crash gate ran


def test_the_installed_suite_activates_it_and_the_venv_around_it_does_not(pytester, clean_env,
                                                                           monkeypatch):
    venv = pytester.mkdir("venv")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    suite = venv / "lib" / "python3" / "site-packages" / "mfinject" / "suite"
    suite.mkdir(parents=True)
    (suite / "test_installed.py").write_text(
        "import pytest\npytestmark = pytest.mark.pmem\n"
        "def test_installed(mf_settings):\n    assert mf_settings.race_iterations == 32\n")
    pytester.makepyfile(test_project="def test_project(request):\n"
                                     "    assert 'mf_kernel_health' not in request.fixturenames\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: SimpleNamespace(
        submodule_search_locations=[str(suite)]) if name == "mfinject.suite" else real(name, *rest))
    res = pytester.runpytest("-p", "no:cacheprovider", str(suite))
    assert res.ret == pytest.ExitCode.OK and res.parseoutcomes() == {"passed": 1}
    res.stdout.fnmatch_lines(["mfinject: race seed *", "*= mfinject results =*"])
    res = pytester.runpytest("-p", "no:cacheprovider")  # the project: pytest skips its venv
    assert res.ret == pytest.ExitCode.OK and res.parseoutcomes() == {"passed": 1}
    assert "mfinject:" not in res.stdout.str()


def test_spare_devices_need_disposable_and_differ_from_the_device(pytester, clean_env):
    res = pytester.runpytest("-p", "no:cacheprovider", "--mfinject-device", "namespace0.0",
                             "--mfinject-spare-devices", "namespace1.0")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["ERROR: --mfinject-spare-devices 'namespace1.0': spare namespaces "
                              "are reconfigured and formatted: pass --mfinject-disposable too"])
    res = pytester.runpytest("-p", "no:cacheprovider", "--mfinject-device", "namespace0.0",
                             "--mfinject-disposable", "--mfinject-spare-devices",
                             "namespace1.0,namespace0.0")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*name each spare once, and not the designated device "
                              "(namespace0.0)"])
