"""File I/O on a poisoned page, through the file rather than a mapping.

- corrupt-pfn-file-io: M learnt the page's PFN and unmapped it; I
  poisons it with corrupt-pfn; R then read()s, pread()s and O_DIRECT-reads
  the page, writes 16 bytes into it, writes the whole page, and reads back.
- badblocks-file-io: the same, over a pmem bad block instead: the record
  the pmem driver consults, and that a whole-page write should clear. As
  for badblocks, nothing calls memory_failure(): no memory-failure line.
"""

from mfinject.scenarios import FileIO, Inject, Map, Proc, Scenario, Unmap

_PROCS = (Proc("I"), Proc("M"), Proc("R"))
_STEPS = (Map("M"), Unmap("M"), Inject("I"), FileIO("R"))

CORRUPT_PFN_FILE_IO = Scenario(
    "corrupt-pfn-file-io", "file I/O on a page poisoned by corrupt-pfn", "corrupt-pfn",
    _PROCS, _STEPS,
)
BADBLOCKS_FILE_IO = Scenario(
    "badblocks-file-io", "file I/O on a page under a pmem bad block", "badblocks",
    _PROCS, _STEPS, kernel_messages=(),
)


SCENARIOS = (CORRUPT_PFN_FILE_IO, BADBLOCKS_FILE_IO)
