"""The debug kernel's configuration: what the build asks for, and what it refuses."""

from __future__ import annotations

import pytest

from mfinject import kernel
from mfinject.kernel import parse_config
from mfinject.vm import debugkernel
from mfinject.vm.debugkernel import DEBUG, FRAGMENT, NEEDS, dropped, fragment_text
from mfinject.vm.kernels import KernelResolveError


def _as_built(**override: str) -> dict[str, str]:
    config = parse_config(fragment_text())
    for name, value in override.items():
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value
    return config


def test_a_config_that_holds_the_fragment_loses_nothing():
    assert dropped(_as_built()) == []


@pytest.mark.parametrize("name,value", [
    ("CONFIG_KASAN", None),  # olddefconfig dropped it: an unmet dependency
    ("CONFIG_PROVE_LOCKING", None),
    ("CONFIG_HWPOISON_INJECT", "y"),  # asked m: the suite modprobes it
    ("CONFIG_MODULE_SIG", "y"),  # asked off
    ("CONFIG_PANIC_ON_OOPS", "y"),  # one splat would end the run
])
def test_each_option_lost_by_the_configuration_is_named(name, value):
    (lost,) = dropped(_as_built(**{name: value}))
    assert lost.startswith(name + "=") and f"got {value or 'unset'}" in lost


def test_an_option_asked_off_may_be_absent():
    assert dropped(_as_built(CONFIG_MODULE_SIG=None)) == []


def test_the_fragment_has_what_the_suite_requires_and_what_the_issue_asks():
    names = {item.split("=")[0] for item in FRAGMENT}
    assert set(kernel.REQUIRED_CONFIG) <= names
    for opt in ("PROVE_LOCKING", "PROVE_RCU", "DEBUG_ATOMIC_SLEEP", "DEBUG_VM", "KASAN",
                "KASAN_GENERIC", "DEBUG_LIST", "ACPI_NFIT", "BLK_DEV_PMEM", "XFS_FS", "EXT4_FS",
                "DM_DELAY", "IO_URING", "FTRACE"):
        assert f"CONFIG_{opt}" in names
    assert not set(NEEDS) & set(DEBUG)
    # "# CONFIG_X is not set" is how kconfig spells off
    assert "# CONFIG_MODULE_SIG is not set" in fragment_text().splitlines()


def test_the_cache_key_follows_the_configuration(monkeypatch):
    src = debugkernel.Source("debian-debug:6.12", "trixie", "linux-source-6.12", "6.12.118-1")
    before = src.key
    monkeypatch.setattr(debugkernel, "FRAGMENT", FRAGMENT + ("CONFIG_KCSAN=y",))
    assert src.key != before and src.key.startswith("6.12.118-1-")


def test_an_unknown_release_names_the_choices():
    with pytest.raises(KernelResolveError, match=r"debian-debug:6\.1, debian-debug:6\.12"):
        debugkernel._source("bookworm")


def test_the_report_says_when_lockdep_turned_itself_off():
    cfg = {"CONFIG_PROVE_RCU": "y", "CONFIG_KASAN_GENERIC": "y", "CONFIG_DEBUG_VM": "y"}
    live = kernel.debug_state(cfg, " lock-classes:  1234 [max: 8192]\n debug_locks:  1\n", 0)
    assert live == "debug kernel: lockdep live; PROVE_RCU, KASAN_GENERIC, DEBUG_VM"
    off = kernel.debug_state(cfg, " debug_locks:  0\n", 0)
    assert off is not None and "lockdep OFF" in off and "an earlier report" in off
    after_mce = kernel.debug_state(cfg, " debug_locks:  0\n", 1 << 4)
    assert after_mce is not None and "machine check's taint (M" in after_mce
    assert "OFF" in (kernel.debug_state(cfg, "", 0) or "")
