"""The corrupt-pfn scenarios again, with the poison arriving as a machine check.

QEMU raises an action-optional uncorrected memory error (SRAO) at the page's
physical address (mfinject.mce). The processes and steps are those of the
corrupt-pfn scenario each is made from; what differs is the chain the
error travels: the #MC handler, the NFIT driver's notifier recording a bad
range (which the pmem driver then consults on every read and fault), and
memory_failure() run from a work item without MF_SW_SIMULATED.

- mce: I, who maps nothing, is the one that asks; B (late) and C (early) map the page.
- mce-late-access: as mce, then B (late kill, unmapped because C's early
  kill made memory-failure unmap every mapper) loads the page again: the
  fault now meets the bad range.
- mce-late-only: only B (late kill) maps it; then B touches it.
- mce-file-io: file I/O on the page afterwards, through the file.
- mce-shared: a block shared by a file and its reflink clone, mapped by early
  and late mappers of both.

The action-required twins of the madvise scenarios (injector ``mce-ar``):
the process that poisoned its own mapping with madvise now consumes the
poison, a load on vCPU 1 in user mode, and QEMU raises the check there (SRAR):

- mce-ar-self, mce-ar-late, mce-ar-early: made from madvise-self, -late, -early.
- mce-ar-noripv-self: as mce-ar-self, the check saying the consuming
  instruction cannot be restarted (MCG_STATUS.RIPV clear, injector
  ``mce-ar-noripv``).

A corrected error (injector ``mce-ce``): no #MC; the kernel reads the bank when
it polls, logs the error and must poison nothing:

- mce-corrected: I asks while B (late) and C (early) map the page; then both load it.
"""

import dataclasses

from mfinject.observers.health import TAINT_MACHINE_CHECK
from mfinject.observers.mflog import HWPOISON_FAULT, KernelMessage
from mfinject.scenarios import EARLY, Inject, Map, Proc, Scenario
from mfinject.scenarios.steps import FileIO, Probe
from mfinject.scenarios.access import CORRUPT_PFN_LATE_ONLY
from mfinject.scenarios.fileio import CORRUPT_PFN_FILE_IO
from mfinject.scenarios.first import CORRUPT_PFN, MADVISE_EARLY, MADVISE_LATE, MADVISE_SELF
from mfinject.scenarios.shared import CORRUPT_PFN_SHARED

INJECTOR = "mce"
# what the machine check itself logs, besides memory-failure's own lines
MCE_LOGGED = KernelMessage(
    "machine check logged", r"^mce: \[Hardware Error\]: Machine check events logged$",
    'arch/x86/kernel/cpu/mce/core.c mce_notify_irq(): pr_info(HW_ERR "Machine check events '
    'logged\\n") (HW_ERR is "[Hardware Error]: ", pr_fmt "mce: ")')


def from_corrupt_pfn(s: Scenario) -> Scenario:
    """``s`` with the poison raised as a machine check: mce-<rest of its name>.

    It may log what the machine check logs, and taints the kernel M; a fault
    on the bad range ("MCE: Killing ...") only where a step touches the page
    again after the injection.
    """
    touches = any(isinstance(step, (Probe, FileIO)) for step in s.steps)
    name = "mce" + s.name.removeprefix("corrupt-pfn")
    title = s.title.replace("corrupt-pfn by I", "a machine check asked for by I", 1)
    if title == s.title:
        title = s.title.replace("corrupt-pfn", "a machine check", 1)
    return dataclasses.replace(s, name=name, title=title, injector=INJECTOR,
                               kernel_messages=(*s.kernel_messages, MCE_LOGGED,
                                                *([HWPOISON_FAULT] if touches else [])),
                               taint=TAINT_MACHINE_CHECK)


# kill_me_maybe() (arch/x86/kernel/cpu/mce/core.c), queued on the consuming task
USER_ACCESS = KernelMessage(
    "uncorrected error in user access",
    r"^mce: Uncorrected hardware memory error in user-access at [0-9a-f]+$",
    'arch/x86/kernel/cpu/mce/core.c kill_me_maybe(): pr_err("Uncorrected hardware memory error '
    'in user-access at %llx", p->mce_addr) (pr_fmt "mce: ")')


def from_madvise(s: Scenario, injector: str = "mce-ar") -> Scenario:
    """``s`` with A's madvise() replaced by a load that consumes an action-required check."""
    name = injector + s.name.removeprefix("madvise")
    title = s.title.replace("a process poisons its own mapping with madvise",
                            "A consumes an action-required machine check in its own mapping", 1)
    title = title.replace("madvise by A", "an action-required machine check consumed by A", 1)
    if injector != "mce-ar":
        title += " (RIPV clear: not restartable)"
    return dataclasses.replace(s, name=name, title=title, injector=injector,
                               kernel_messages=(*s.kernel_messages, MCE_LOGGED, USER_ACCESS),
                               taint=TAINT_MACHINE_CHECK)


MCE = from_corrupt_pfn(CORRUPT_PFN)
# corrupt-pfn then a load by B: no corrupt-pfn scenario of its own (software
# injection leaves no bad block for the load to meet), so no twin either
MCE_LATE_ACCESS = from_corrupt_pfn(dataclasses.replace(
    CORRUPT_PFN, name="corrupt-pfn-late-access",
    title=CORRUPT_PFN.title + "; then B touches it", steps=(*CORRUPT_PFN.steps, Probe())))
MCE_LATE_ONLY = from_corrupt_pfn(CORRUPT_PFN_LATE_ONLY)
MCE_FILE_IO = from_corrupt_pfn(CORRUPT_PFN_FILE_IO)
MCE_SHARED = from_corrupt_pfn(CORRUPT_PFN_SHARED)

MCE_AR_SELF = from_madvise(MADVISE_SELF)
MCE_AR_LATE = from_madvise(MADVISE_LATE)
MCE_AR_EARLY = from_madvise(MADVISE_EARLY)
MCE_AR_NORIPV_SELF = from_madvise(MADVISE_SELF, "mce-ar-noripv")

# what the kernel prints of a logged error nobody else consumed (mce_default_notifier()
# -> __print_mce(), 6.1 without RAS_CEC): pr_emerg lines with HW_ERR, pr_fmt "mce: "
MCE_PRINTED = KernelMessage(
    "machine check record printed",
    r"^mce: \[Hardware Error\]: (CPU \d+: Machine Check: |TSC |PROCESSOR |Run the above|"
    r"ADDR |MISC )",
    'arch/x86/kernel/cpu/mce/core.c __print_mce(): pr_emerg(HW_ERR "CPU %d: Machine Check%s: '
    '%Lx Bank %d: %016Lx\\n", ...) and the lines after it')
MCE_CORRECTED = Scenario(
    "mce-corrected", "a corrected memory error at the page, found by the kernel's poll, "
    "while B (late) and C (early) map it; then both load it", "mce-ce",
    (Proc("I"), Proc("B"), Proc("C", policy=EARLY)), (Map("B"), Map("C"), Inject("I"), Probe()),
    kernel_messages=(MCE_LOGGED, MCE_PRINTED))

SRAO_SCENARIOS = (MCE, MCE_LATE_ACCESS, MCE_LATE_ONLY, MCE_FILE_IO, MCE_SHARED)
AR_SCENARIOS = (MCE_AR_SELF, MCE_AR_LATE, MCE_AR_EARLY, MCE_AR_NORIPV_SELF)
# mce-shared last: its reflinked files end the kind's kept filesystem (and so the VM)
SCENARIOS = (tuple(s for s in SRAO_SCENARIOS if s is not MCE_SHARED) + AR_SCENARIOS
             + (MCE_CORRECTED, MCE_SHARED))
# each scenario's software-injection twin, whose expectations and kernel deviations it inherits
TWINS = {**{s.name: "corrupt-pfn" + s.name.removeprefix("mce") for s in SRAO_SCENARIOS},
         **{s.name: "madvise" + s.name.removeprefix(s.injector) for s in AR_SCENARIOS}}
