"""The expectations of each scenario, per participant and field.

Reading guide: ``victim_ar("A")`` is the set of facts that a process which
poisons its own mapping should observe, and so on. Every fact names its
source; the memory-failure paths and kernels it holds for default to all.
"""

from __future__ import annotations

from mfinject.expectations import sources as src
from mfinject.expectations.model import Expect, KnownDeviation
from mfinject.scenarios import first

PTE_LSB = "12"  # log2(4096): a PTE mapping of one 4 KiB page


def victim_ar(name: str) -> tuple[Expect, ...]:
    """The process that poisons a page it maps gets BUS_MCEERR_AR at its own address.

    mf_generic_kill_procs() (commit 6100e34b2526) and mf_dax_kill_procs() both
    add MF_ACTION_REQUIRED | MF_MUST_KILL, and kill_proc() sends
    BUS_MCEERR_AR to the current task.
    """
    return (
        Expect(name, "signal", "BUS_MCEERR_AR", src.MADVISE_HWPOISON),
        Expect(name, "si_addr", "own address", src.SIGACTION_ADDR),
        Expect(name, "si_addr_lsb", PTE_LSB, src.SIGACTION_LSB),
        Expect(name, "mapping", "unmapped", src.SYSCTL_LATE),
    )


def bystander_late(name: str) -> tuple[Expect, ...]:
    """A late-kill mapper is unmapped but not signalled at injection time."""
    return (
        Expect(name, "signal", "none", src.PRCTL_MCE_KILL),
        Expect(name, "mapping", "unmapped", src.SYSCTL_LATE),
    )


def bystander_early(name: str) -> tuple[Expect, ...]:
    """An early-kill mapper gets BUS_MCEERR_AO at its own address and is unmapped."""
    return (
        Expect(name, "signal", "BUS_MCEERR_AO", src.PRCTL_MCE_KILL),
        Expect(name, "si_addr", "own address", src.SIGACTION_ADDR),
        Expect(name, "si_addr_lsb", PTE_LSB, src.SIGACTION_LSB),
        Expect(name, "mapping", "unmapped", src.SYSCTL_LATE),
    )


def outside_injector(name: str) -> tuple[Expect, ...]:
    """A corrupt-pfn writer that maps nothing: the write succeeds, no signal."""
    return (
        Expect(name, "injection", "ok", src.HWPOISON_CORRUPT_PFN),
        Expect(name, "signal", "none", src.SIGACTION_AO),
    )


EXPECTATIONS: dict[str, tuple[Expect, ...]] = {
    first.MADVISE_SELF.name: victim_ar("A"),
    first.MADVISE_LATE.name: victim_ar("A") + bystander_late("B"),
    first.MADVISE_EARLY.name: victim_ar("A") + bystander_early("C"),
    first.CORRUPT_PFN.name: outside_injector("I") + bystander_late("B") + bystander_early("C"),
}

# Documented cases where the kernel does not do what the sources above say,
# each with its explanation. Empty until a run shows one and it is understood.
KNOWN_DEVIATIONS: tuple[KnownDeviation, ...] = ()
