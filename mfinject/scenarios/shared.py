"""Reflink: one block shared by two files (XFS with rmapbt and reflink only).

- corrupt-pfn-reflink: clone.dat is a FICLONE copy of the scenario file,
  so both files own the same block. X maps the file and Y maps the clone,
  both early kill; I poisons the shared page. XFS walks its reverse map
  and has the mappers of every owner killed.
"""

from mfinject.scenarios import EARLY, Role, Scenario

CORRUPT_PFN_REFLINK = Scenario(
    "corrupt-pfn-reflink", "corrupt-pfn on a block shared by two files (reflink)",
    "corrupt-pfn",
    (Role("I", maps=False, injects=True), Role("X", maps=True, policy=EARLY),
     Role("Y", maps=True, policy=EARLY, maps_file="clone")),
    needs_reflink=True,
)

SCENARIOS = (CORRUPT_PFN_REFLINK,)
