"""PMD mappings: a 2 MiB-aligned extent mapped by one page-table entry.

- madvise-self-pmd: A maps 2 MiB of the file with a PMD and poisons its
  first 4 KiB page with madvise.
- corrupt-pfn-pmd: I, who maps nothing, poisons that page while C (early
  kill) maps the 2 MiB with a PMD.

The PMD is confirmed before the injection through the fs_dax:dax_pmd_fault_done
tracepoint (smaps FilePmdMapped does not count DAX PMDs); a filesystem that
cannot give one makes the scenario an error, never a pass.
"""

from mfinject.scenarios import EARLY, Inject, Map, Proc, Scenario

MADVISE_SELF_PMD = Scenario(
    "madvise-self-pmd", "a process poisons one page of its PMD mapping with madvise", "madvise",
    (Proc("A"),), (Map("A"), Inject("A")), pmd=True,
)
CORRUPT_PFN_PMD = Scenario(
    "corrupt-pfn-pmd", "corrupt-pfn by I while C (early kill) maps the page with a PMD",
    "corrupt-pfn",
    (Proc("I"), Proc("C", policy=EARLY)), (Map("C"), Inject("I")), pmd=True,
)


SCENARIOS = (MADVISE_SELF_PMD, CORRUPT_PFN_PMD)
