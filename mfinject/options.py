"""The plugin's options: one table of them, and the session's settings read from it.

Each option is a command-line flag, an ini key and an environment variable,
read in that order. Values are checked once, when the plugin becomes active,
and a bad one is a usage error that names the option (pytest exits 4).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from mfinject import fs

T = TypeVar("T")

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
    Option("mfinject_spare_devices", "MFINJECT_SPARE_DEVICES",
           "more namespaces, comma-separated, that the suite moves to when the one in use is "
           "left with bad blocks nothing in the machine clears (a machine check's); each is "
           "reconfigured and formatted like the designated device, so only with "
           "--mfinject-disposable"),
    Option("mfinject_results", "MFINJECT_RESULTS", "directory for results.json"),
    Option("mfinject_require_pmem", "MFINJECT_REQUIRE_PMEM",
           "fail instead of skipping when no pmem is usable (also on when CI=true)", flag=True),
    Option("mfinject_seed", "MFINJECT_SEED",
           "seed of the races and of where each scenario's poisoned page lies: a number, or "
           f"'random' for a fresh one (default {DEFAULT_SEED}); every race prints it, every "
           "result records its layout"),
    Option("mfinject_poison_page", "MFINJECT_POISON_PAGE",
           "where a scenario's poisoned page lies: 'seeded' (default: a page other than the "
           "first, of a mapping at a non-zero file offset, drawn from the seed) or 'first' "
           "(page 0 of a mapping at file offset 0, as the suite did until 0.3)"),
    Option("mfinject_race_iterations", "MFINJECT_RACE_ITERATIONS",
           f"iterations of each race scenario, 1 or more (default {DEFAULT_RACE_ITERATIONS})"),
    Option("mfinject_fresh_fs", "MFINJECT_FRESH_FS",
           "make a new filesystem on a reset namespace for every test, instead of keeping "
           "one while nothing it holds could reach the next test (mfinject.fspool)",
           flag=True),
    Option("mfinject_shard", "MFINJECT_SHARD",
           "run part K of N of the selected tests, K/N (1 <= K <= N): the same split on every "
           "machine, each part a run of whole filesystem kinds where it can be; the parts' "
           "results merge with `mfinject report`"),
    Option("mfinject_mkfs_options", "MFINJECT_MKFS_OPTIONS",
           "add a filesystem kind of your own, custom-FSTYPE, made with mkfs.FSTYPE -f -q OPTS "
           "DEVICE (as xfstests' MKFS_OPTIONS; '' for mkfs's defaults)"),
    Option("mfinject_fstype", "MFINJECT_FSTYPE",
           f"the filesystem of the custom kind: {' or '.join(fs.MKFS)} (default xfs)"),
    Option("mfinject_mount_options", "MFINJECT_MOUNT_OPTIONS",
           f"mount -o options of the custom kind (default {fs.DAX_ALWAYS}; with dax=inode the "
           "root directory gets FS_XFLAG_DAX)"),
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


LAYOUTS = ("seeded", "first")  # as mfinject.scenarios.runner.LAYOUTS (checked by a unit test)


def _layout(raw: Raw | None) -> str:
    if raw is None:
        return LAYOUTS[0]
    text = raw.value.strip()
    if text not in LAYOUTS:
        raise pytest.UsageError(f"{raw.given_as}: give {' or '.join(LAYOUTS)}")
    return text


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" as (K, N); ValueError naming the form for anything else."""
    k, sep, n = text.strip().partition("/")
    try:
        part, parts = int(k), int(n)
    except ValueError:
        part, parts = 0, 0
    if not sep or parts < 1 or not 1 <= part <= parts:
        raise ValueError("give K/N, part K of N with 1 <= K <= N (e.g. 1/2)")
    return part, parts


def _shard(raw: Raw | None) -> tuple[int, int] | None:
    return None if raw is None else _checked(raw, "", parse_shard)


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


def _checked(raw: Raw | None, default: str, check: Callable[[str], T]) -> T:
    try:
        return check(raw.value if raw else default)
    except ValueError as e:
        raise pytest.UsageError(f"{raw.given_as if raw else repr(default)}: {e}") from None


def _custom_fs(mkfs: Raw | None, fstype: Raw | None, mount: Raw | None) -> fs.FsKind | None:
    """The user's own filesystem kind, made only when mkfs options are given."""
    if mkfs is None:
        alone = fstype or mount
        if alone is not None:
            flag = BY_NAME["mfinject_mkfs_options"].cli
            raise pytest.UsageError(
                f"{alone.given_as}: it describes the custom filesystem kind, which is made only "
                f"with {flag}=OPTS: give that too ({flag}='' for mkfs's defaults)")
        return None
    name = _checked(fstype, "xfs", fs.check_fstype)
    _checked(mkfs, "", fs.split_mkfs_options)
    opts = _checked(mount, fs.DAX_ALWAYS, fs.check_mount_options)
    return fs.custom_kind(name, mkfs.value, opts)


@dataclass(frozen=True)
class Settings:
    device: str | None
    disposable: bool
    results_dir: Path | None
    require_pmem: bool
    race_seed: int  # fixed per session; 'random' is drawn once
    race_iterations: int
    layout: str = "seeded"  # mfinject.scenarios.runner.LAYOUTS
    custom_fs: fs.FsKind | None = None  # --mfinject-mkfs-options: the user's own kind
    fresh_fs: bool = False  # a new filesystem for every test (--mfinject-fresh-fs)
    shard: tuple[int, int] | None = None  # (K, N): part K of N (--mfinject-shard)
    spares: tuple[str, ...] = ()  # --mfinject-spare-devices, in order of use

    def fs_kinds(self) -> dict[str, fs.FsKind]:
        """The filesystem kinds of this session: fs.FS_KINDS, then the custom one."""
        custom = {self.custom_fs.name: self.custom_fs} if self.custom_fs else {}
        return {**fs.FS_KINDS, **custom}


def _spares(raw: Raw | None, device: str | None, disposable: bool) -> tuple[str, ...]:
    if raw is None:
        return ()
    names = tuple(n.strip() for n in raw.value.split(",") if n.strip())
    if names and not disposable:
        raise pytest.UsageError(f"{raw.given_as}: spare namespaces are reconfigured and "
                                "formatted: pass --mfinject-disposable too")
    if device is not None and device in names or len(set(names)) != len(names):
        raise pytest.UsageError(f"{raw.given_as}: name each spare once, and not the designated "
                                f"device ({device})")
    return names


def read(config: pytest.Config) -> Settings:
    """The session's settings; raises pytest.UsageError for a value it cannot use."""
    device = _raw(config, BY_NAME["mfinject_device"])
    results = _raw(config, BY_NAME["mfinject_results"])
    disposable = _flag(config, "mfinject_disposable")
    designated = (device.value.strip() or None) if device else None
    return Settings(
        device=designated,
        disposable=disposable,
        spares=_spares(_raw(config, BY_NAME["mfinject_spare_devices"]), designated, disposable),
        results_dir=Path(results.value.strip()) if results and results.value.strip() else None,
        require_pmem=_flag(config, "mfinject_require_pmem") or truthy(os.environ.get("CI")),
        race_seed=_seed(_raw(config, BY_NAME["mfinject_seed"])),
        race_iterations=_iterations(_raw(config, BY_NAME["mfinject_race_iterations"])),
        layout=_layout(_raw(config, BY_NAME["mfinject_poison_page"])),
        custom_fs=_custom_fs(_raw(config, BY_NAME["mfinject_mkfs_options"]),
                             _raw(config, BY_NAME["mfinject_fstype"]),
                             _raw(config, BY_NAME["mfinject_mount_options"])),
        fresh_fs=_flag(config, "mfinject_fresh_fs"),
        shard=_shard(_raw(config, BY_NAME["mfinject_shard"])),
    )


SETTINGS_KEY = pytest.StashKey[Settings]()


def settings(config: pytest.Config) -> Settings:
    """The settings read once per session (the plugin reads them when it activates)."""
    if SETTINGS_KEY not in config.stash:
        config.stash[SETTINGS_KEY] = read(config)
    return config.stash[SETTINGS_KEY]
