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
"""

import dataclasses

from mfinject.observers.health import TAINT_MACHINE_CHECK
from mfinject.observers.mflog import HWPOISON_FAULT, KernelMessage
from mfinject.scenarios import Scenario
from mfinject.scenarios.steps import FileIO, Probe
from mfinject.scenarios.access import CORRUPT_PFN_LATE_ONLY
from mfinject.scenarios.fileio import CORRUPT_PFN_FILE_IO
from mfinject.scenarios.first import CORRUPT_PFN
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


MCE = from_corrupt_pfn(CORRUPT_PFN)
# corrupt-pfn then a load by B: no corrupt-pfn scenario of its own (software
# injection leaves no bad block for the load to meet), so no twin either
MCE_LATE_ACCESS = from_corrupt_pfn(dataclasses.replace(
    CORRUPT_PFN, name="corrupt-pfn-late-access",
    title=CORRUPT_PFN.title + "; then B touches it", steps=(*CORRUPT_PFN.steps, Probe())))
MCE_LATE_ONLY = from_corrupt_pfn(CORRUPT_PFN_LATE_ONLY)
MCE_FILE_IO = from_corrupt_pfn(CORRUPT_PFN_FILE_IO)
MCE_SHARED = from_corrupt_pfn(CORRUPT_PFN_SHARED)

SCENARIOS = (MCE, MCE_LATE_ACCESS, MCE_LATE_ONLY, MCE_FILE_IO, MCE_SHARED)
