"""The plugin's options: one table of them, and the session's settings read from it.

Each option is a command-line flag, an ini key and an environment variable,
read in that order. Values are checked once, when the plugin becomes active,
and a bad one is a usage error that names the option (pytest exits 4).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_SEED = 20221125
DEFAULT_RACE_ITERATIONS = 32


@dataclass(frozen=True)
class Option:
    name: str  # the attribute on config.option and the ini key: mfinject_device
    env: str
    help: str
    flag: bool = False  # store_true on the command line, a bool in the ini file

    @property
    def cli(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS = (
    Option("mfinject_device", "MFINJECT_DEVICE",
           "the pmem namespace or /dev/pmemN the suite may reconfigure, format and poison"),
    Option("mfinject_disposable", "MFINJECT_DISPOSABLE",
           "the designated device holds nothing of value: allow reconfiguring its namespace "
           "and overwriting an existing filesystem", flag=True),
    Option("mfinject_results", "MFINJECT_RESULTS", "directory for results.json"),
    Option("mfinject_require_pmem", "MFINJECT_REQUIRE_PMEM",
           "fail instead of skipping when no pmem is usable (also on when CI=true)", flag=True),
    Option("mfinject_seed", "MFINJECT_SEED",
           "seed of the race scenarios: a number, or 'random' for a fresh one "
           f"(default {DEFAULT_SEED}); every race prints it"),
    Option("mfinject_race_iterations", "MFINJECT_RACE_ITERATIONS",
           f"iterations of each race scenario, 1 or more (default {DEFAULT_RACE_ITERATIONS})"),
)
BY_NAME = {o.name: o for o in OPTIONS}


def add(parser: pytest.Parser) -> None:
    """Every option in one group, each with its ini twin."""
    group = parser.getgroup("mfinject", "memory-failure injection on fsdax")
    for o in OPTIONS:
        helptext = f"{o.help} (ini {o.name}; env {o.env}{'=1' if o.flag else ''})"
        if o.flag:
            group.addoption(o.cli, dest=o.name, action="store_true", default=None, help=helptext)
            parser.addini(o.name, o.help, type="bool", default=False)
        else:
            group.addoption(o.cli, dest=o.name, default=None, help=helptext)
            parser.addini(o.name, o.help, default="")


def given(config: pytest.Config) -> list[str]:
    """The options this session names on the command line or in its ini file."""
    return [o.cli for o in OPTIONS
            if getattr(config.option, o.name, None) is not None or config.getini(o.name)]


@dataclass(frozen=True)
class Raw:
    """One option's value, and where it came from (for the message that refuses it)."""
    value: str
    given_as: str  # `--mfinject-seed 'abc'`, `MFINJECT_SEED='abc' (the environment ...)`


def _raw(config: pytest.Config, o: Option) -> Raw | None:
    cli = getattr(config.option, o.name, None)
    if cli is not None:
        return Raw(str(cli), f"{o.cli} {str(cli)!r}")
    ini = config.getini(o.name)
    if ini:
        return Raw(str(ini), f"ini {o.name} = {str(ini)!r} (the twin of {o.cli})")
    env = os.environ.get(o.env)
    if env is not None and env.strip():
        return Raw(env, f"{o.env}={env!r} (the environment fallback of {o.cli})")
    return None


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _flag(config: pytest.Config, name: str) -> bool:
    o = BY_NAME[name]
    return bool(getattr(config.option, name, None) or config.getini(name)
                or truthy(os.environ.get(o.env)))


def _seed(raw: Raw | None) -> int:
    if raw is None:
        return DEFAULT_SEED
    text = raw.value.strip()
    if text == "random":
        return secrets.randbits(32)
    try:
        return int(text, 0)
    except ValueError:
        raise pytest.UsageError(f"{raw.given_as}: give a number, or 'random' for a fresh "
                                "seed") from None


def _iterations(raw: Raw | None) -> int:
    if raw is None:
        return DEFAULT_RACE_ITERATIONS
    try:
        n = int(raw.value.strip())
    except ValueError:
        n = 0
    if n < 1:
        raise pytest.UsageError(f"{raw.given_as}: give the number of iterations of each race, "
                                f"1 or more (default {DEFAULT_RACE_ITERATIONS})")
    return n


@dataclass(frozen=True)
class Settings:
    device: str | None
    disposable: bool
    results_dir: Path | None
    require_pmem: bool
    race_seed: int  # fixed per session; 'random' is drawn once
    race_iterations: int


def read(config: pytest.Config) -> Settings:
    """The session's settings; raises pytest.UsageError for a value it cannot use."""
    device = _raw(config, BY_NAME["mfinject_device"])
    results = _raw(config, BY_NAME["mfinject_results"])
    return Settings(
        device=(device.value.strip() or None) if device else None,
        disposable=_flag(config, "mfinject_disposable"),
        results_dir=Path(results.value.strip()) if results and results.value.strip() else None,
        require_pmem=_flag(config, "mfinject_require_pmem") or truthy(os.environ.get("CI")),
        race_seed=_seed(_raw(config, BY_NAME["mfinject_seed"])),
        race_iterations=_iterations(_raw(config, BY_NAME["mfinject_race_iterations"])),
    )


SETTINGS_KEY = pytest.StashKey[Settings]()


def settings(config: pytest.Config) -> Settings:
    """The settings read once per session (the plugin reads them when it activates)."""
    if SETTINGS_KEY not in config.stash:
        config.stash[SETTINGS_KEY] = read(config)
    return config.stash[SETTINGS_KEY]
