"""A planted guest crash: proof that a crash cannot hide behind a clean retry.

Loaded by mfinject.vm.guest (``-p mfinject.vm.planted``) only in the VM and
only when ``mfinject vm --plant-crash PATTERN`` asked for it; the runner sets
MFINJECT_PLANT_CRASH in the first boot only. One second into the first test
whose node id contains PATTERN (mid-race, for a race), the guest kernel is
crashed with sysrq-c. The runner runs the test again in a fresh VM, and the
row must come out ``flaky`` with both consoles, failing the run.
"""

from __future__ import annotations

import os
import threading

import pytest

DELAY_S = 1.0
_planted = threading.Event()


def _crash() -> None:
    with open("/proc/sys/kernel/sysrq", "w") as f:
        f.write("1")
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("c")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    pattern = os.environ.get("MFINJECT_PLANT_CRASH")
    if not pattern or os.environ.get("MFINJECT_IN_VM") != "1" or _planted.is_set():
        return
    if pattern in item.nodeid:
        _planted.set()
        threading.Timer(DELAY_S, _crash).start()
