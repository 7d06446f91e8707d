"""The ways to poison a page: madvise(MADV_HWPOISON), debugfs corrupt-pfn, a
machine check raised by QEMU; and the record-only and unbind variants.

madvise and corrupt-pfn are carried out by a participant process, never by
the test process: a process that poisons a page it maps receives SIGBUS
itself. A machine check is raised by the host (mfinject.mce); the test
process only asks for it and waits for memory-failure to have run.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mfinject import ledger, mce
from mfinject.errors import MfinjectError
from mfinject.observers import mcerecord
from mfinject.observers.kmsg import KmsgCapture
from mfinject.participant import Participant, Reply, reply_text
from mfinject.pmem import Namespace, PmemError, badblocks, data_start
from mfinject.quarantine import bad_byte_ranges
from mfinject.syscalls import PAGE_SIZE

log = logging.getLogger(__name__)

HWPOISON_DIR = "/sys/kernel/debug/hwpoison"
CORRUPT_PFN = f"{HWPOISON_DIR}/corrupt-pfn"
UNPOISON_PFN = f"{HWPOISON_DIR}/unpoison-pfn"


class InjectError(MfinjectError):
    pass


@dataclass(frozen=True)
class Injection:
    injector: str
    by: str
    pfn: int
    vaddr: int | None
    reply: Reply | None  # None: the injecting process did not survive the call
    hung: str | None = None  # the call never returned: what the kernel was doing

    def outcome(self) -> str:
        return "hung" if self.hung else reply_text(self.reply)


def check_pfn(namespace: Namespace, pfn: int) -> None:
    """Refuse any PFN outside the designated namespace: never poison the host."""
    if not namespace.contains_pfn(pfn):
        raise InjectError(
            f"refusing to inject at pfn {pfn:#x}: it lies outside {namespace.name} "
            f"{namespace.describe_range()}; the mapping is not on the designated namespace"
        )


def require_debugfs() -> None:
    if not os.path.ismount("/sys/kernel/debug"):
        raise InjectError("debugfs is not mounted: mount -t debugfs none /sys/kernel/debug")


# How long the scenario waits for nothing more to happen after an injection returns
# (Tracer.settle, which also waits for every signal queued and every exit begun).
# These injectors' signals are queued before the call returns: kill_procs() runs
# inside memory_failure(), which madvise(), the corrupt-pfn write and the unbind
# (MF_MEM_PRE_REMOVE) call themselves.
SYNC_QUIET_S = 0.1
# A machine check's handling runs elsewhere (a work item; the victim's task_work,
# where kill_me_maybe() logs "recovery action ... Failed", then
# "Memory error not recovered", then kill_me_now() sends SIGBUS): the injector
# returns on a log line, which can come before a signal.
ASYNC_QUIET_S = 0.5


class MadviseInjector:
    """madvise(MADV_HWPOISON) by a process on its own mapping (madvise(2))."""

    name = "madvise"
    settle_quiet_s = SYNC_QUIET_S

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace

    def inject(self, by: Participant, vaddr: int | None, pfn: int) -> Injection:
        if vaddr is None:
            raise InjectError("madvise injection needs a participant that maps the page")
        check_pfn(self.namespace, pfn)
        log.info("%s: madvise(%#x, MADV_HWPOISON) for pfn %#x", by.name, vaddr, pfn)
        ledger.note(pfn)
        reply = by.request("madvise_hwpoison", addr=vaddr, length=PAGE_SIZE)  # one page only
        return Injection(self.name, by.name, pfn, vaddr, reply)


class CorruptPfnInjector:
    """A write of the PFN to debugfs hwpoison/corrupt-pfn (Documentation/mm/hwpoison.rst)."""

    name = "corrupt-pfn"
    settle_quiet_s = SYNC_QUIET_S

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace
        require_debugfs()
        if not os.path.exists(CORRUPT_PFN):
            raise InjectError(f"{CORRUPT_PFN} missing: load the module (modprobe hwpoison_inject)"
                              " and mount debugfs")

    def inject(self, by: Participant, vaddr: int | None, pfn: int) -> Injection:
        check_pfn(self.namespace, pfn)
        log.info("%s: echo %#x > %s", by.name, pfn, CORRUPT_PFN)
        ledger.note(pfn)
        reply = by.request("write_file", path=CORRUPT_PFN, data=f"{pfn:#x}\n")
        return Injection(self.name, by.name, pfn, vaddr, reply)


class BadblocksInjector:
    """A pmem bad block recorded through /sys/block/pmemN/badblocks ("SECTOR LENGTH").

    This is the record Documentation/filesystems/dax.rst describes ("The
    libnvdimm subsystem stores a record of known media error locations for
    each pmem block device (in gendisk->badblocks)"); memory_failure() is not
    involved and the page flags are untouched.
    """

    name = "badblocks"
    settle_quiet_s = SYNC_QUIET_S

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace
        self.sysfs = f"/sys/block/{namespace.blockdev}/badblocks"
        try:
            self.data_start = data_start(namespace)  # physical address of sector 0
        except PmemError as e:
            raise InjectError(f"{e}: cannot place a bad block") from e

    def inject(self, by: Participant, vaddr: int | None, pfn: int) -> Injection:
        check_pfn(self.namespace, pfn)
        sector = (pfn * PAGE_SIZE - self.data_start) // 512
        log.info("%s: echo '%d %d' > %s", by.name, sector, PAGE_SIZE // 512, self.sysfs)
        reply = by.request("write_file", path=self.sysfs, data=f"{sector} {PAGE_SIZE // 512}\n")
        return Injection(self.name, by.name, pfn, vaddr, reply)


class UnbindInjector:
    """Not poison: the pmem device under a mounted filesystem is unbound from its driver.

    From v6.8 (commit fa422b353d21) the pmem driver tells the filesystem first
    (MF_MEM_PRE_REMOVE), and XFS with rmapbt revokes every DAX mapping of the
    device. ``ndctl disable-namespace`` refuses a mounted namespace, so the
    participant writes the device (pfnX.Y for fsdax) to its driver's unbind.
    """

    name = "unbind"
    settle_quiet_s = SYNC_QUIET_S

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace
        device = Path(f"/sys/block/{namespace.blockdev}/device").resolve()
        driver = device / "driver"
        if not driver.exists():
            raise InjectError(f"{device} is bound to no driver: nothing to unbind")
        self.device = device.name
        self.unbind = str(driver.resolve() / "unbind")

    def inject(self, by: Participant, vaddr: int | None, pfn: int) -> Injection:
        check_pfn(self.namespace, pfn)
        log.info("%s: echo %s > %s (mounted)", by.name, self.device, self.unbind)
        reply = by.request("write_file", path=self.unbind, data=self.device)
        return Injection(self.name, by.name, pfn, vaddr, reply)


class MceInjector:
    """A machine check at the page's physical address, raised by QEMU (mfinject.mce).

    An action-optional one (SRAO) arrives as on a patrol scrub: the #MC
    handler logs it, and a work item later walks the decoder chain:
    uc_decode_notifier() calls memory_failure(), then the NFIT driver's
    notifier records the bad range (MCE_PRIO_UC runs before MCE_PRIO_NFIT).
    So the injection waits for memory-failure's last line about the PFN
    (action_result(): "recovery action for dax page: ..."), none within
    MF_TIMEOUT_S being a hung injection, and then, up to BADBLOCK_WAIT_S, for
    the page's first sector in the pmem device's badblocks: a later read or
    fault is judged against the record the pmem driver consults. A bad range
    that never comes is not waited for longer: the kernel.badblocks fact says so.
    """

    name = "mce"
    flavour = mce.SRAO
    settle_quiet_s = ASYNC_QUIET_S
    ANSWER_TIMEOUT_S = mce.ANSWER_TIMEOUT_S
    MF_TIMEOUT_S = 30.0
    BADBLOCK_WAIT_S = 10.0

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace
        try:
            mce.relay_dir(namespace.name)
        except mce.MceError as e:
            raise InjectError(str(e)) from e

    def inject(self, by: Participant, vaddr: int | None, pfn: int) -> Injection:
        check_pfn(self.namespace, pfn)
        log.info("%s: machine check %s at %#x (pfn %#x)", by.name, self.flavour.name,
                 pfn * PAGE_SIZE, pfn)
        ledger.note(pfn)
        return self._raise(by, vaddr, pfn)

    def _raise(self, by: Participant, vaddr: int | None, pfn: int,
               victim: mce.Victim | None = None) -> Injection:
        """Ask for the check, then wait for memory-failure's result and the bad range.

        What fails in the VM's machinery (QEMU's refusal, no relay, for an
        action-required check a victim never caught) is an InjectError: an
        error of the run, no verdict on the kernel. With a ``victim`` that
        died without a memory-failure line, the kernel killed it instead
        (kill_me_now()): no hang, the expectations judge it.
        """
        cap = KmsgCapture()
        try:
            answer = mce.ask(self.flavour, pfn * PAGE_SIZE, self.ANSWER_TIMEOUT_S, victim)
            if not answer.ok:
                raise InjectError(f"no {self.flavour.name} machine check was raised: "
                                  f"{answer.error}")
            if victim is not None:
                log.info("vCPU %d caught after %d look(s): %s", victim.cpu, answer.attempts,
                         answer.registers)
            ran = wait_for_memory_failure(cap, pfn, self.MF_TIMEOUT_S,
                                          gone=by if victim is not None else None)
            hung = None if ran is not None else (
                f"no memory-failure result for pfn {pfn:#x} within {self.MF_TIMEOUT_S:.0f} s "
                "of the machine check QEMU took" + (
                    " in the victim's load, and the victim lives on (in the kernel)"
                    if victim is not None else " (a kernel that never ran memory_failure(), "
                    "or a machine check QEMU dropped without a word: see the kernel log's "
                    "mce lines)"))
            if ran is False:
                log.info("pfn %#x: the victim died without memory_failure() (kill_me_now())", pfn)
            if hung is None:
                self._wait_for_bad_range(pfn)
        except mce.MceError as e:
            raise InjectError(str(e)) from e
        finally:
            cap.close()
        return Injection(self.name, by.name, pfn, vaddr, Reply(True, value=answer.command),
                         hung=hung)

    def _wait_for_bad_range(self, pfn: int) -> None:
        offset = pfn * PAGE_SIZE - data_start(self.namespace)  # in the pmem device
        deadline = time.monotonic() + self.BADBLOCK_WAIT_S
        while time.monotonic() < deadline:
            if any(offset in r for r in bad_byte_ranges(badblocks(self.namespace))):
                return
            time.sleep(0.05)
        log.warning("pfn %#x: no bad block at device offset %#x within %.0f s of the machine "
                    "check", pfn, offset, self.BADBLOCK_WAIT_S)


class MceConsumeInjector(MceInjector):
    """An action-required machine check (SRAR), consumed by the injecting participant.

    The participant (it must map the page) starts a thread that loads the
    page for ever on the vCPU the check is raised on, in user mode; the host
    raises the check only once it has seen that vCPU inside the loop
    (mfinject.mce.caught()). The kernel then queues kill_me_maybe() on the
    thread: memory_failure(pfn, MF_ACTION_REQUIRED), plus MF_MUST_KILL when
    RIPV is clear, runs on its way back to user space, as after
    madvise(MADV_HWPOISON), minus MF_SW_SIMULATED. The rest is
    MceInjector's: memory-failure's line, then the bad range; a loop that
    does not start is an InjectError too.
    """

    name = "mce-ar"
    flavour = mce.SRAR
    SPIN_START_S = 5.0
    # the relay may stop the VM up to VICTIM_TRIES times before it finds the loop
    ANSWER_TIMEOUT_S = 60.0

    def inject(self, by: Participant, vaddr: int | None, pfn: int) -> Injection:
        if vaddr is None or not isinstance(by, Participant):
            raise InjectError("an action-required machine check is consumed by a load: the "
                              "injecting participant must map the page, from its main thread")
        check_pfn(self.namespace, pfn)
        prep = by.request("spin_prepare")
        if prep is None or not prep.ok:
            raise InjectError(f"{by.name} could not prepare its load loop: {reply_text(prep)}")
        thread = len(by.start_threads(1))
        handed = by.request("start_on_thread", thread=thread, do="spin_load",
                            args={"addr": vaddr, "cpu": mce.MCE_CPU})
        started = by.request("spin_started", timeout=self.SPIN_START_S)
        if handed is None or not handed.ok or started is None or not started.ok:
            raise InjectError(f"{by.name}'s load loop did not start on vCPU {mce.MCE_CPU}: "
                              f"{reply_text(handed)}, {reply_text(started)}")
        victim = mce.Victim(mce.MCE_CPU, prep.value["rip_lo"], prep.value["rip_hi"], vaddr)
        log.info("%s: machine check %s at %#x (pfn %#x), consumed by its load loop on vCPU %d",
                 by.name, self.flavour.name, pfn * PAGE_SIZE, pfn, mce.MCE_CPU)
        ledger.note(pfn)
        return self._raise(by, vaddr, pfn, victim)


class MceConsumeNoRipvInjector(MceConsumeInjector):
    """As MceConsumeInjector, with MCG_STATUS.RIPV clear (mce.SRAR_NORIPV)."""

    name = "mce-ar-noripv"
    flavour = mce.SRAR_NORIPV


class MceCorrectedInjector(MceInjector):
    """A corrected memory error at the page (mce.CORRECTED): no #MC, only a bank the
    kernel reads when it polls (machine_check_poll()).

    The poll interval is set to one second for the injection (then restored),
    and the injection has landed only when the kernel's mce:mce_record names
    this bank, status and address: without it, "nothing happened" would prove
    nothing. Then one second more, for whatever the notifier chain (run from
    a work item) does with it: nothing, for a corrected error, is what the
    scenario expects.
    """

    name = "mce-ce"
    flavour = mce.CORRECTED
    RECORD_WAIT_S = 10.0
    AFTER_RECORD_S = 1.0

    def inject(self, by: Participant, vaddr: int | None, pfn: int) -> Injection:
        check_pfn(self.namespace, pfn)
        addr = pfn * PAGE_SIZE
        log.info("%s: corrected machine-check error at %#x (pfn %#x)", by.name, addr, pfn)
        ledger.note(pfn)  # it must poison nothing; should the kernel disagree, reset
        try:
            with mcerecord.polled_every(1):
                watch = mcerecord.McRecordWatch()
                try:
                    answer = mce.ask(self.flavour, addr)
                    record = watch.wait(mce.MCE_BANK, self.flavour.status, addr,
                                        self.RECORD_WAIT_S) if answer.ok else None
                finally:
                    watch.close()
        except (OSError, mce.MceError) as e:
            raise InjectError(f"corrected error at {addr:#x}: {e}") from e
        if not answer.ok:
            raise InjectError(f"no corrected error was raised: {answer.error}")
        if record is None:  # QEMU took it: the kernel's poll never logged it
            return Injection(self.name, by.name, pfn, vaddr, Reply(False, error=(
                f"the kernel logged no mce:mce_record of the corrected error within "
                f"{self.RECORD_WAIT_S:.0f} s, polling every second")))
        log.info("the kernel's record: %s", record)
        time.sleep(self.AFTER_RECORD_S)
        return Injection(self.name, by.name, pfn, vaddr, Reply(True, value=answer.command))


def memory_failure_done(texts: list[str], pfn: int) -> bool:
    """Whether memory-failure logged its result for ``pfn`` (mm/memory-failure.c action_result(),
    or its refusal of a page already poisoned)."""
    done = re.compile(rf"Memory failure: {pfn:#x}: (recovery action|already hardware poisoned)")
    return any(done.search(t) for t in texts)


GONE_GRACE_S = 1.0  # after the victim died, how long its memory-failure line may still take


def wait_for_memory_failure(cap: KmsgCapture, pfn: int, timeout_s: float,
                            gone: Participant | None = None) -> bool | None:
    """True once memory-failure logged its result for ``pfn``; None at the timeout.

    With ``gone``, False when that participant died and no result followed
    within GONE_GRACE_S: the kernel killed it without calling memory_failure()
    (an action-required check answered by kill_me_now()), which is not a hang.
    """
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    died_at: float | None = None
    while time.monotonic() < deadline:
        seen += [r.text for r in cap.read()]
        if memory_failure_done(seen, pfn):
            return True
        if gone is not None and died_at is None:
            gone.tracer.pump()
            if not gone.alive:
                died_at = time.monotonic()
        if died_at is not None and time.monotonic() - died_at > GONE_GRACE_S:
            return False
        time.sleep(0.05)
    return None


INJECTORS = {c.name: c for c in (MadviseInjector, CorruptPfnInjector, BadblocksInjector,
                                 UnbindInjector, MceInjector, MceConsumeInjector,
                                 MceConsumeNoRipvInjector, MceCorrectedInjector)}
