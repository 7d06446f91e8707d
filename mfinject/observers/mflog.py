"""What mm/memory-failure.c logs, as the patterns a scenario declares it may log.

Every message of mm/memory-failure.c carries its pr_fmt prefix ("Memory
failure: ", and "Unpoison: " / "Soft offline: " in those sections), so a
line with one of :data:`PREFIXES` is a memory-failure line whatever its
level. The kernel-health check (:mod:`mfinject.observers.health`) accepts
such a line only when the scenario declared it (``Scenario.kernel_messages``).

Read in mm/memory-failure.c of two trees (the search tool's stored copies):
v6.1 as GrapheneOS/kernel_common-6.1 d18e56f55192 (android14-6.1), and a
7.x-era tree as ColinIanKing/linux-next 042acf45157e. Where the formats of
the two differ, the pattern takes both. No stored v6.12 copy was found; the
messages below are identical in the two trees around it except where said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# v6.1 and linux-next: #define pr_fmt(fmt) "Memory failure: " fmt at the top;
# linux-next redefines it to "Unpoison: " before unpoison_memory() and to
# "Soft offline: " before soft_offline_in_use_page(); v6.1 sets pr_fmt to ""
# there and writes "Unpoison: " into each unpoison_memory() format.
PREFIXES = ("Memory failure: ", "Unpoison: ", "Soft offline: ")
_PFN = r"0x[0-9a-f]+"


@dataclass(frozen=True)
class KernelMessage:
    name: str
    regex: str  # searched in the record's text (a /dev/kmsg record without its header)
    source: str  # the function and format it comes from

    def matches(self, text: str) -> bool:
        return re.search(self.regex, text) is not None


def is_memory_failure(text: str) -> bool:
    return text.startswith(PREFIXES)


SIGBUS_SENT = KernelMessage(
    "SIGBUS sent",
    rf"^Memory failure: {_PFN}: Sending SIGBUS to .+:\d+ due to hardware memory corruption$",
    'kill_proc(): pr_err("%#lx: Sending SIGBUS to %s:%d due to hardware memory corruption\\n",'
    " pfn, t->comm, t->pid) (task_pid_nr(t) in linux-next), for each process "
    "collect_procs() or collect_procs_fsdax() found",
)
DAX_RECOVERY = KernelMessage(
    "recovery action for dax page",
    rf"^Memory failure: {_PFN}: recovery action for dax page: (Recovered|Failed)$",
    'action_result(): pr_err("%#lx: recovery action for %s: %s\\n", pfn, '
    "action_page_types[type], action_name[result]), called by memory_failure_dev_pagemap() "
    "as action_result(pfn, MF_MSG_DAX, rc ? MF_FAILED : MF_RECOVERED) (linux-next skips it "
    "for -EOPNOTSUPP); which of the two is judged by the scenario's recovery_action check",
)
ALREADY_POISONED = KernelMessage(
    "already poisoned",
    rf"^Memory failure: {_PFN}: (already hardware poisoned|recovery action for already "
    r"poisoned( page)?: Failed)$",
    'memory_failure(): v6.1 if (TestSetPageHWPoison(p)) { pr_err("%#lx: already hardware '
    'poisoned\\n", pfn); ...}; linux-next action_result(pfn, MF_MSG_ALREADY_POISONED, '
    'MF_FAILED) with [MF_MSG_ALREADY_POISONED] = "already poisoned page" (posted patches '
    'show an earlier "already poisoned"). Only online pages reach this test: a dax page '
    "goes to memory_failure_dev_pagemap() before it",
)
UNPOISON = KernelMessage(
    "unpoison",
    r"^Unpoison: ",
    'unpoison_memory(): unpoison_pr_info(), v6.1 "Unpoison: Software-unpoisoned page %#lx" '
    '(and "Page was already unpoisoned", "Someone grabs the hwpoison page", ...), '
    'linux-next "%#lx: software-unpoisoned page" under pr_fmt "Unpoison: ". Both return '
    "-EIO without a message when pfn_to_online_page() is NULL, as for every dax page",
)

# Not mm/memory-failure.c's, but the same event seen from the fault: a load
# from a poisoned page that the fault handler refuses (VM_FAULT_HWPOISON)
# ends in arch/x86/mm/fault.c do_sigbus(), which logs this at KERN_ERR
# before sending SIGBUS BUS_MCEERR_AR. Seen on 6.12.118 and 7.3.4 in the
# badblocks scenario, where the dax fault finds a bad block (BUS_MCEERR_AR
# from v6.5, commit 1ea7ca1b0901); 6.1 sends BUS_ADRERR and logs nothing.
HWPOISON_FAULT = KernelMessage(
    "SIGBUS on a poisoned page's fault",
    r"^MCE: Killing .+:\d+ due to hardware memory corruption fault at [0-9a-f]+$",
    'arch/x86/mm/fault.c do_sigbus(): pr_err("MCE: Killing %s:%d due to hardware memory '
    'corruption fault at %lx\\n", current->comm, current->pid, address) under '
    "if (fault & (VM_FAULT_HWPOISON|VM_FAULT_HWPOISON_LARGE))",
)

# What a scenario that poisons a mapped fsdax page may log: the SIGBUS to each
# process memory-failure collects, and the recovery action for the dax page.
POISONING = (SIGBUS_SENT, DAX_RECOVERY)

# Not declared by any scenario, so a finding wherever they appear (kept for
# the record of what was read): kill_procs() pr_err("%#lx: forcibly killing
# %s:%d because of failure to unmap corrupted page\n") and pr_err("%#lx: Cannot
# send advisory machine check signal to %s:%d\n"); kill_proc() pr_info("Error
# sending signal to %s:%d: %d\n"); add_to_kill() (__add_to_kill() in
# linux-next) pr_info("Unable to find user space address %lx in %s\n");
# memory_failure() pr_err("%#lx: memory outside kernel control\n").
