"""The sentences and commits the expectations rest on, quoted once."""

from mfinject.expectations.model import Source

SIGACTION_AO = Source(
    "sigaction(2)",
    "BUS_MCEERR_AO (since Linux 2.6.32) Hardware memory error detected in process but not "
    "consumed; action optional.",
)
SIGACTION_ADDR = Source(
    "sigaction(2)",
    "SIGILL, SIGFPE, SIGSEGV, SIGBUS, and SIGTRAP fill in si_addr with the address of the fault.",
)
SIGACTION_LSB = Source(
    "sigaction(2)",
    "si_addr_lsb field indicates the least significant bit of the reported address and "
    "therefore the extent of the corruption. For example, if a full page was corrupted, "
    "si_addr_lsb contains log2(sysconf(_SC_PAGESIZE)).",
)
MADVISE_HWPOISON = Source(
    "madvise(2)",
    "MADV_HWPOISON: Poison the pages in the range specified by addr and length and handle "
    "subsequent references to those pages like a hardware memory corruption.",
)
PRCTL_MCE_KILL = Source(
    "prctl(2) PR_MCE_KILL",
    "Early kill means that the thread receives a SIGBUS signal as soon as hardware memory "
    "corruption is detected inside its address space. In late kill mode, the process is "
    "killed only when it accesses a corrupted page.",
)
SYSCTL_LATE = Source(
    "Documentation/admin-guide/sysctl/vm.rst (memory_failure_early_kill)",
    "0: Only unmap the corrupted page from all processes and only kill a process who tries "
    "to access it.",
)
HWPOISON_LATE = Source(
    "Documentation/mm/hwpoison.rst",
    "late kill: Send SIGBUS when the application runs into the corrupted page.",
)
HWPOISON_CORRUPT_PFN = Source(
    "Documentation/mm/hwpoison.rst",
    "corrupt-pfn: Inject hwpoison fault at PFN echoed into this file.",
)
COMMIT_DEV_PAGEMAP = Source(
    "commit 6100e34b2526",
    "mm, memory_failure: Teach memory_failure() about dev_pagemap pages",
    "v4.19",
)
CODING_STYLE_WARN = Source(
    "Documentation/process/coding-style.rst",
    "WARN*() is intended for unexpected, this-should-never-happen situations. WARN*() macros "
    "are not to be used for anything that is expected to happen during normal operation.",
)
UNMAP_AND_KILL = Source(
    "mm/memory-failure.c unmap_and_kill()",
    "unmap_mapping_range() covers the largest mapping among the processes collected for a "
    "signal; with none collected the size stays 0 and nothing is unmapped",
)
PMEM_BADBLOCKS = Source(
    "drivers/nvdimm/pmem.c __pmem_direct_access()",
    "is_bad_pmem(&pmem->bb, ...) is the only poison check on the fsdax fault path; "
    "software injection records no bad block",
)
COMMIT_XFS_NOTIFY_FAILURE = Source(
    "commit 6f643c57d57c",
    "xfs: implement ->notify_failure() for XFS",
    "v6.0",
)
PROC_HARDWARE_CORRUPTED = Source(
    "Documentation/filesystems/proc.rst (meminfo)",
    "HardwareCorrupted: The amount of RAM/memory in KB, the kernel identifies as corrupted.",
)
SYSCTL_EARLY = Source(
    "Documentation/admin-guide/sysctl/vm.rst (memory_failure_early_kill)",
    "1: Kill all processes that have the corrupted and not reloadable page mapped as soon as "
    "the corruption is detected.",
)
DAX_LOCK_PAGE = Source(
    "mm/memory-failure.c mf_generic_kill_procs()",
    "cookie = dax_lock_page(page); if (!cookie) return -EBUSY; (a page that belongs to no "
    "file cannot be locked, and the injection is refused)",
)
MAPPING_SHIFT = Source(
    "mm/memory-failure.c add_to_kill() (\"mm, memory_failure: Collect mapping size in "
    "collect_procs()\", v4.19)",
    "for a ZONE_DEVICE page the signal's si_addr_lsb is the shift of the mapping that is torn "
    "down: 21 for a PMD",
)
UNMAP_LARGEST = Source(
    "mm/memory-failure.c unmap_and_kill()",
    "Unmap the largest mapping to avoid breaking up device-dax mappings which are constant "
    "size. The actual size of the mapping being torn down is communicated in siginfo",
)
DAX_MEDIA_ERRORS = Source(
    "Documentation/filesystems/dax.rst (Handling Media Errors)",
    "The libnvdimm subsystem stores a record of known media error locations for each pmem "
    "block device (in gendisk->badblocks). If we fault at such location, or one with a latent "
    "error not yet discovered, the application can expect to receive a SIGBUS.",
)
HWPOISON_UNPOISON = Source(
    "Documentation/mm/hwpoison.rst",
    "unpoison-pfn: Software-unpoison page at PFN echoed into this file. This way a page can be "
    "reused again. This only works for Linux injected failures, not for real memory failures.",
)
UNPOISON_MEMORY = Source(
    "mm/memory-failure.c unpoison_memory()",
    "observed: the debugfs write fails with EIO for an fsdax PFN and nothing is logged; the "
    "refusing check is not yet traced to a line",
)
