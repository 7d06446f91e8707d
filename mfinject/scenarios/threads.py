"""Signals to threads, and the kill policy across fork.

- madvise-thread: A has two more threads; thread 2 poisons the page with
  madvise(): BUS_MCEERR_AR goes to thread 2 alone.
- corrupt-pfn-early-thread: C's main thread keeps the default (late)
  policy; its thread 2 sets PR_MCE_KILL early. I poisons the page: the AO
  signal goes to the designated thread 2.
- corrupt-pfn-fork-early: C's parent set PR_MCE_KILL early and forked C;
  C inherited the policy and gets the AO signal.
"""

from mfinject.scenarios import EARLY, Inject, Map, Proc, Scenario

MADVISE_THREAD = Scenario(
    "madvise-thread", "madvise() from thread 2 of a three-thread process", "madvise",
    (Proc("A", threads=2),), (Map("A"), Inject("A", thread=2)),
)
CORRUPT_PFN_EARLY_THREAD = Scenario(
    "corrupt-pfn-early-thread", "corrupt-pfn; only thread 2 of the mapper asked for early kill",
    "corrupt-pfn",
    (Proc("I"), Proc("C", threads=2, thread_policies=((2, EARLY),))), (Map("C"), Inject("I")),
)
CORRUPT_PFN_FORK_EARLY = Scenario(
    "corrupt-pfn-fork-early", "corrupt-pfn; the mapper inherited early kill across fork()",
    "corrupt-pfn",
    (Proc("I"), Proc("C", policy_before_fork=EARLY)), (Map("C"), Inject("I")),
)

SCENARIOS = (MADVISE_THREAD, CORRUPT_PFN_EARLY_THREAD, CORRUPT_PFN_FORK_EARLY)
