"""A guest kernel crash on purpose (sysrq-c), to prove the VM runner survives one.

Runs only with `mfinject vm --crash-test`: the runner must record this test as
crashed, with the console tail, and finish the other scenarios in a fresh VM.
"""

import pytest

pytestmark = [pytest.mark.pmem, pytest.mark.deliberate_crash]


def test_deliberate_crash(mf_pmem_namespace):
    with open("/proc/sys/kernel/sysrq", "w") as f:
        f.write("1")
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("c")
    pytest.fail("the kernel survived sysrq-c: this test exists to crash it")
