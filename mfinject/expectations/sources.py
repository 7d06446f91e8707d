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
# a block XFS's reverse map gives to no file's data (per-AG metadata, an inode
# btree, a file's extent map or attribute fork): fs/xfs/xfs_notify_failure.c
# since commit 6f643c57d57c (v6.0); the same in 6.1.0-57, 6.12.118 and 7.3.4
# (corrupt-pfn-metadata)
XFS_METADATA_FAILURE = Source(
    "fs/xfs/xfs_notify_failure.c xfs_dax_failure_fn(), xfs_dax_notify_ddev_failure()",
    "if (XFS_RMAP_NON_INODE_OWNER(rec->rm_owner) || (rec->rm_flags & (XFS_RMAP_ATTR_FORK | "
    "XFS_RMAP_BMBT_BLOCK))) { ... notify->want_shutdown = true; ... } ... else if (error || "
    "notify.want_shutdown) { xfs_force_shutdown(mp, SHUTDOWN_CORRUPT_ONDISK); if (!error) "
    "error = -EFSCORRUPTED; } (poison in XFS metadata shuts the filesystem down, and "
    "memory-failure fails with EUCLEAN)",
)
# a freed block has no reverse-map record: the query finds nobody, and returns 0
XFS_FREE_BLOCK = Source(
    "fs/xfs/xfs_notify_failure.c xfs_dax_notify_ddev_failure()",
    "error = xfs_rmap_query_range(cur, &ri_low, &ri_high, xfs_dax_failure_fn, &notify); "
    "(a block no rmap record covers calls nothing; without want_shutdown the filesystem "
    "stays up and 0 is returned)",
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
UNMAP_ONE_PAGE = Source(
    "mm/memory-failure.c unmap_and_kill()",
    "start = (index << PAGE_SHIFT) & ~(size - 1); unmap_mapping_range(mapping, start, size, "
    "0): from the poisoned page's own file index, the size of the largest mapping collected "
    "(1 << size_shift: 4 KiB for a PTE mapping), so the other pages of a mapping stay",
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
    "p = pfn_to_online_page(pfn); if (!p) return -EIO; (a ZONE_DEVICE page is never "
    "online; traced with function_graph: unpoison_memory() returns right after "
    "pfn_to_online_page(), on 6.1, 6.12 and 7.3)",
)
COMMIT_AR_CURRENT_THREAD = Source(
    "commit 03151c6e0b66",
    "mm/memory-failure: send SIGBUS(BUS_MCEERR_AR) only to current thread",
    "v5.8",
)
EARLY_KILL_THREAD = Source(
    "mm/memory-failure.c find_early_kill_thread()",
    "Find a dedicated thread which is supposed to handle SIGBUS(BUS_MCEERR_AO) on behalf of "
    "the thread group. Return task_struct of the (first found) dedicated thread if found",
)
PRCTL_INHERITED = Source(
    "PR_MCE_KILL(2const)",
    "Set the machine check memory corruption kill policy for the calling thread. [...] The "
    "policy is inherited by children.",
)
NODE_STATS = Source(
    "Documentation/ABI/stable/sysfs-devices-node (memory_failure/total, recovered)",
    "The total number of raw poisoned pages (pages containing corrupted data due to memory "
    "errors) on a NUMA node. [...] Of the raw poisoned pages on a NUMA node, how many pages "
    "are recovered by memory error recovery attempt.",
)
COMMIT_NODE_STATS = Source(
    "commit 44b8f8bf2438",
    "mm: memory-failure: add memory failure stats to sysfs",
    "v6.4",
)
ALREADY_POISONED = Source(
    "mm/memory-failure.c memory_failure()",
    "if (TestSetPageHWPoison(p)) { pr_err(\"%#lx: already hardware poisoned\\n\", pfn); "
    "res = -EHWPOISON; ... } (a page is handled, and counted, once)",
)
PMEM_READ_EIO = Source(
    "drivers/nvdimm/pmem.c __pmem_direct_access()",
    "if (unlikely(is_bad_pmem(&pmem->bb, PFN_PHYS(pgoff) / 512, num * PAGE_SIZE))) ... "
    "return -EIO; (a read of a known media error fails instead of consuming poison)",
)
DAX_CLEAR_ON_WRITE = Source(
    "Documentation/filesystems/dax.rst (Handling Media Errors)",
    "Libnvdimm also allows clearing of these errors by simply writing the affected sectors "
    "(through the pmem driver, and if the underlying NVDIMM supports the clear_poison DSM "
    "defined by ACPI).",
)
DAX_RECOVERY_WRITE = Source(
    "fs/dax.c dax_iomap_iter() with drivers/nvdimm/pmem.c pmem_recovery_write()",
    "a write over a bad block becomes a recovery write, which clears only whole pages "
    "(\"Found poison, but addr(%p) or bytes(%#zx) not page aligned\" returns 0), and "
    "if (xfer == 0) ret = -EFAULT;",
)
FOLL_LONGTERM_FSDAX = Source(
    "mm/gup.c check_vma_flags()",
    "if ((gup_flags & FOLL_LONGTERM) && vma_is_fsdax(vma)) return -EOPNOTSUPP; (no long-term "
    "pin, such as an io_uring fixed buffer, on a filesystem-DAX mapping)",
)
PIN_DIO = Source(
    "Documentation/core-api/pin_user_pages.rst (Case 1: Direct IO)",
    "There are GUP references to pages that are serving as DIO buffers. These buffers are "
    "needed for a relatively short time (so they are not \"long term\"). No special "
    "synchronization with folio_mkclean() or munmap() is provided.",
)
DAX_ENTRY_LOCK = Source(
    "mm/memory-failure.c mf_generic_kill_procs()",
    "Prevent the inode from being freed while we are interrogating the address_space, "
    "typically this would be done by lock_page(), but dax pages do not use the page lock. "
    "This also prevents changes to the mapping of this pfn until poison signaling is complete.",
)
SIGNAL_NOT_QUEUED = Source(
    "signal(7)",
    "Standard signals do not queue. If multiple instances of a standard signal are generated "
    "while that signal is blocked, then only one instance of the signal is marked as pending",
)
AR_TO_CURRENT = Source(
    "commit 6100e34b2526",
    "mm, memory_failure: Teach memory_failure() about dev_pagemap pages (mf_generic_kill_procs() "
    "adds MF_ACTION_REQUIRED, so kill_proc() sends BUS_MCEERR_AR to the current task, the one "
    "whose write to corrupt-pfn called memory_failure(), collected whatever its policy)",
    "v4.19",
)
DAX_SHARED_FAULT_UNMAP = Source(
    "fs/dax.c dax_insert_entry()",
    "if (shared || (dax_is_zero_entry(entry) && !(flags & DAX_PMD))) { ... "
    "unmap_mapping_pages(mapping, index, 1, false); }: a fault on a shared extent first "
    "unmaps the page from every mapping of the file",
)
COW_UNSPECIFIED = Source(
    "Documentation/filesystems/dax.rst (Handling Media Errors)",
    "no sentence says what a copy-on-write write into a block poisoned by software injection "
    "(no bad block recorded) returns, nor what the new copy holds",
)
XFS_SHARED_OWNERS = Source(
    "fs/xfs/xfs_notify_failure.c xfs_dax_notify_ddev_failure()",
    "xfs_rmap_query_range(cur, &ri_low, &ri_high, xfs_dax_failure_fn, &notify): every owner "
    "of the failed blocks in the reverse map, so every file sharing a reflinked block, has "
    "its mappers killed through mf_dax_kill_procs()",
)
DAX_LOCK_RACE = Source(
    "fs/dax.c dax_lock_page() (dax_lock_folio() from v6.7)",
    "/* Ensure page->mapping isn't freed while we look at it */ rcu_read_lock(); ... "
    "xas_lock_irq(&xas); if (mapping != page->mapping) { xas_unlock_irq(&xas); continue; } "
    "(a page leaving its file is either locked in the file it is still in, or not locked at "
    "all and the injection ends with -EBUSY; a late-kill mapper is only unmapped)",
)
MADVISE_FAULT_RACE = Source(
    "commit 03151c6e0b66 and fs/dax.c",
    "mm/memory-failure: send SIGBUS(BUS_MCEERR_AR) only to current thread (the caller of "
    "madvise() gets it, with the page's address; no other thread does); the racing fault and "
    "dax_lock_page() take the same DAX entry lock, so the fault maps the page before the poison "
    "(its load reads the data) or after it (the old data under software injection, as in "
    "race-fault, or SIGBUS BUS_MCEERR_AR at the page)",
    "v5.8",
)
COMMIT_PRE_REMOVE = Source(
    "commit fa422b353d21",
    "mm, pmem, xfs: Introduce MF_MEM_PRE_REMOVE for unbind",
    "v6.8",
)
PRE_REMOVE_ALL_TASKS = Source(
    "mm/memory-failure.c collect_procs_fsdax()",
    "Search for all tasks while MF_MEM_PRE_REMOVE is set, because the current may not be the "
    "one accessing the fsdax page. (each mapper is collected whatever its kill policy, and "
    "kill_proc() sends it BUS_MCEERR_AO)",
)
COMMIT_DAX_SHARE = Source(
    "commit 16900426586d",
    "fsdax: introduce page->share for fsdax in reflink mode",
    "v6.2",
)
COMMIT_DAX_HWPOISON = Source(
    "commit 1ea7ca1b0901",
    "dax: enable dax fault handler to report VM_FAULT_HWPOISON (a fault on known poison "
    "reported BUS_ADRERR without a valid si_addr_lsb before; instead of reporting "
    "VM_FAULT_SIGBUS, it could report VM_FAULT_HWPOISON)",
    "v6.5",
)
DAX_ACTION_RESULT = Source(
    "mm/memory-failure.c memory_failure_dev_pagemap()",
    "action_result(pfn, MF_MSG_DAX, rc ? MF_FAILED : MF_RECOVERED); (logged as \"recovery "
    "action for dax page: Recovered\" or \"Failed\")",
)
# how a participant ends, and which signals it may get at all
SIGBUS_DEFAULT = Source(
    "signal(7)",
    "SIGBUS P2001 Core Bus error (bad memory access) [...] Core Default action is to "
    "terminate the process and dump core (see core(5)).",
)
KILL_PROCS = Source(
    "mm/memory-failure.c kill_procs()",
    "if (tk->addr == -EFAULT) { pr_err(\"%#lx: forcibly killing %s:%d because of failure to "
    "unmap corrupted page\\n\", ...); do_send_sig_info(SIGKILL, ...); } else if "
    "(kill_proc(tk, pfn, flags) < 0) (a collected process gets one SIGBUS, or SIGKILL where "
    "its address is unknown; memory-failure sends nothing else, and nothing to a process "
    "it did not collect)",
)
COLLECT_PROCS = Source(
    "mm/memory-failure.c collect_procs()",
    "Collect the processes who have the corrupted page mapped to kill. (a process that "
    "does not map the page when the poison arrives is not signalled; a pmem bad block "
    "alone does not call memory_failure() at all)",
)

# Machine checks (mfinject.mce): the chain a hardware error travels
MCE_SRAO = Source(
    "arch/x86/kernel/cpu/mce/severity.c, core.c uc_decode_notifier()",
    "an uncorrected, action-optional memory scrubbing error (MCi_STATUS UC|S, MCACOD 0xC0) "
    "with a usable physical address is handed to memory_failure(pfn, 0); no process "
    "consumed it, so none is the target of an action-required signal",
)
MCE_SRAR = Source(
    "arch/x86/kernel/cpu/mce/core.c kill_me_maybe()",
    "an action-required data-load error (MCi_STATUS UC|S|AR, MCACOD 0x134) taken in user "
    "mode is graded 'Action required: data load error in a user process'; the handler "
    "queues kill_me_maybe() on the task, which calls memory_failure(pfn, MF_ACTION_REQUIRED) "
    "(| MF_MUST_KILL when MCG_STATUS.RIPV is clear), and kill_proc() sends BUS_MCEERR_AR to "
    "the current task",
)
COMMIT_MCE_USABLE_ADDRESS = Source(
    "commit e40879b6d7d8",
    "x86/MCE: Check a hw error's address to determine proper recovery action: \"Make sure "
    "that machine check errors with a usable address are properly marked as poison. This is "
    "needed for errors that occur on memory which have MCG_STATUS[RIPV] clear\"",
    "v6.5",
)
MCE_CORRECTED = Source(
    "drivers/acpi/nfit/mce.c nfit_handle_mce(), arch/x86/kernel/cpu/mce/core.c "
    "uc_decode_notifier()",
    "if (!mce_is_memory_error(mce) || mce_is_correctable(mce)) return NOTIFY_DONE; (and "
    "uc_decode_notifier() acts only on action-optional or deferred severities): a corrected "
    "error is logged, counted (RAS_CEC), and poisons nothing",
)
NFIT_MCE = Source(
    "drivers/acpi/nfit/mce.c nfit_handle_mce()",
    "a memory error at an address inside an NVDIMM region is added to the bus's bad "
    "ranges (nvdimm_bus_add_badrange()) and the region is told "
    "(nvdimm_region_notify(NVDIMM_REVALIDATE_POISON)), so the pmem driver's badblocks "
    "list records it",
)
