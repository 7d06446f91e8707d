"""The pytest plugin (entry point ``pytest11``): inert outside mfinject's own sessions.

Installed in a venv, this module is loaded into every pytest run there. It
adds its options (one group, harmless) and nothing else unless the session is
mfinject's: it names an mfinject option (on the command line or in the ini
file), or a path it collects lies in or contains the in-VM suite
(``tests/kernel`` in a checkout, the ``mfinject.suite`` package when
installed). Only then does it read the environment and register its hooks
(``mfinject.hooks``: header, markers, result records, the results table) and
its fixtures (``mfinject.fixtures``, every one named ``mf_*``). A checkout
without the entry point loads it with ``pytest -p mfinject.plugin``.

Options live in one group; each has an ini twin and an environment fallback
(read in this order; a value that cannot be used is a usage error naming it):

=============================  ========================  ========================
option                         ini                       environment
=============================  ========================  ========================
--mfinject-device=DEV          mfinject_device           MFINJECT_DEVICE
--mfinject-disposable          mfinject_disposable       MFINJECT_DISPOSABLE=1
--mfinject-spare-devices=NS    mfinject_spare_devices    MFINJECT_SPARE_DEVICES
--mfinject-results=DIR         mfinject_results          MFINJECT_RESULTS
--mfinject-require-pmem        mfinject_require_pmem     MFINJECT_REQUIRE_PMEM=1
--mfinject-seed=N|random       mfinject_seed             MFINJECT_SEED
--mfinject-race-iterations=N   mfinject_race_iterations  MFINJECT_RACE_ITERATIONS
--mfinject-poison-page=WHERE   mfinject_poison_page      MFINJECT_POISON_PAGE
--mfinject-fresh-fs            mfinject_fresh_fs         MFINJECT_FRESH_FS=1
--mfinject-shard=K/N           mfinject_shard            MFINJECT_SHARD
--mfinject-mkfs-options=OPTS   mfinject_mkfs_options     MFINJECT_MKFS_OPTIONS
--mfinject-fstype=xfs|ext4     mfinject_fstype           MFINJECT_FSTYPE
--mfinject-mount-options=OPTS  mfinject_mount_options    MFINJECT_MOUNT_OPTIONS
=============================  ========================  ========================

``--mfinject-mkfs-options`` adds a filesystem kind of the user's own,
``custom-xfs`` or ``custom-ext4`` (``--mfinject-fstype``), to the ones every
scenario runs on (see mfinject.fs).

``--mfinject-require-pmem`` (also on when CI=true) turns every "no pmem" skip
into an error, so a broken VM can never go green with everything skipped; and
a session in which every mfinject test skipped says so and exits 5.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mfinject import options

SUITE_PACKAGE = "mfinject.suite"
CHECKOUT = Path(__file__).resolve().parent.parent
FIXTURES = ("mfinject.fixtures.pmem", "mfinject.fixtures.fs", "mfinject.fixtures.poison")
# The plugin's two names: the pytest11 entry point's, and the module's
# (`-p mfinject.plugin`, or `pytest_plugins = "mfinject.plugin"` in a conftest).
ALIASES = ("mfinject", "mfinject.plugin")


def _register_once(pluginmanager: pytest.PytestPluginManager) -> None:
    """Registered under one name, block the other.

    pluggy refuses a module registered a second time under another name
    (ValueError: Plugin already registered under a different name), which is
    what `-p mfinject.plugin` met in a venv that also has the entry point.
    """
    me = pluginmanager.get_name(sys.modules[__name__])
    for alias in ALIASES:
        if alias != me and pluginmanager.get_plugin(alias) is None:
            pluginmanager.set_blocked(alias)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    _register_once(pluginmanager)
    options.add(parser)


def suite_dirs() -> list[Path]:
    """Where mfinject's in-VM tests live: the checkout's and the installed package's."""
    found = []
    if (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "tests" / "kernel").is_dir():
        found.append(CHECKOUT / "tests" / "kernel")
    try:
        spec = importlib.util.find_spec(SUITE_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    installed = (spec.submodule_search_locations or []) if spec is not None else []
    for where in (Path(p).resolve() for p in installed):
        if where not in found:  # an editable install maps it to tests/kernel
            found.append(where)
    return found


def _reaches(arg: Path, suite: Path) -> bool:
    """Whether collecting ``arg`` collects tests of ``suite``: it lies in it or contains it."""
    if arg == suite or suite in arg.parents:
        return True
    if arg not in suite.parents:
        return False
    # pytest does not recurse into installed packages (it skips virtualenvs), so
    # a project directory that holds the venv does not collect the suite
    return not {"site-packages", "dist-packages"} & set(suite.relative_to(arg).parts)


def collects_suite(config: pytest.Config) -> bool:
    suites = suite_dirs()
    pyargs = getattr(config.option, "pyargs", False)
    for arg in config.args:
        head = arg.split("::")[0]
        if pyargs and (head in ("mfinject", SUITE_PACKAGE) or head.startswith(SUITE_PACKAGE + ".")):
            return True
        path = Path(config.invocation_params.dir, head).resolve()
        if any(_reaches(path, suite) for suite in suites):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    """Activate for mfinject's sessions only; anything else runs as if it were not installed."""
    if getattr(config.option, "help", False):
        return  # --help lists the options; nothing to check or register
    if not (options.given(config) or collects_suite(config)):
        return
    options.settings(config)  # a bad value stops the session here, naming the option
    for module in ("mfinject.hooks", *FIXTURES):
        config.pluginmanager.import_plugin(module)
