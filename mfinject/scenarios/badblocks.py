"""The badblocks path: a media error the pmem driver knows about.

- badblocks: I records a bad block over the page in
  /sys/block/pmemN/badblocks while B maps it; then N maps the page and
  faults it in, R reads it with pread(), and B loads through its old
  mapping. Unlike the software-injected path (memory_failure()), this is
  the record the fsdax fault path consults. A bad block alone does not call
  memory_failure(), so nothing may be logged by mm/memory-failure.c; from
  v6.5 the fault that meets the bad block logs the x86 fault handler's
  "MCE: Killing ..." line as it sends BUS_MCEERR_AR.
"""

from mfinject.observers.mflog import HWPOISON_FAULT
from mfinject.scenarios import Inject, Map, MapAfter, Pread, Proc, Scenario
from mfinject.scenarios.steps import Probe

BADBLOCKS = Scenario(
    "badblocks", "a pmem bad block over the page: fresh fault, pread, and an old mapping",
    "badblocks", (Proc("I"), Proc("B"), Proc("N"), Proc("R")),
    (Map("B"), Inject("I"), MapAfter("N"), Pread("R"), Probe()),
    kernel_messages=(HWPOISON_FAULT,),
)

SCENARIOS = (BADBLOCKS,)
