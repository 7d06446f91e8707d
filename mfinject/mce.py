"""Machine checks at a page's physical address: what is asked of QEMU, and how.

The guest cannot raise a machine check on itself: the host runner does it
through QEMU's monitor (``mce`` over QMP, mfinject.vm.relay). The guest asks
by writing a request file into the results directory the two share; the host
answers with a file beside it. Each side waits with a timeout.

The register values (Intel SDM vol. 3B, 16.3.2 and 16.6; the kernel grades
them in arch/x86/kernel/cpu/mce/severity.c):

- MCi_STATUS 0xbd000000000000c0: VAL | UC | EN | MISCV | ADDRV | S, MCACOD
  0x00c0, "memory scrubbing": an uncorrected error that no instruction
  consumed (SRAO, action optional). severity.c grades it "Action optional:
  memory scrubbing error", and uc_decode_notifier() calls memory_failure(pfn, 0)
  from a work item, after the NFIT driver's notifier (drivers/acpi/nfit/mce.c
  nfit_handle_mce()) recorded the address in the bus's bad ranges.
- MCG_STATUS 0x5: RIPV | MCIP (the interrupted code may restart).
- MCi_MISC 0x86: address mode 2 (physical), LSB 6 (a 64-byte line), which
  mce_usable_address() requires before it hands the address on.
- broadcast (``-b``): every vCPU takes the #MC, as on hardware: the kernel's
  handler waits for all CPUs to enter it (mce_start()); one vCPU alone timed
  out, and a second machine check on a vCPU with MCIP still set is what QEMU
  answers "Previous MCE still in progress, raising triple fault".

An action-required one (SRAR) is what a load that consumes the poison
raises, and the kernel's answer depends on where the CPU was: in user mode,
severity.c grades it "Action required: data load error in a user process"
and the #MC handler queues kill_me_maybe() on the interrupted task, which
calls memory_failure(pfn, MF_ACTION_REQUIRED) (| MF_MUST_KILL when RIPV is
clear) on its way back to user space; in kernel mode, without an exception-table fixup, it panics
("Data load in unrecoverable area of kernel"). So it is raised only while
the victim's load loop runs on that vCPU: the relay stops the VM, reads the
vCPU's registers (``info registers``), and injects only when CPL is 3, RIP
lies in the victim's loop and RDI holds the poisoned address; otherwise it
lets the VM run a moment and looks again.

- MCi_STATUS 0xbd80000000000134: VAL | UC | EN | MISCV | ADDRV | S | AR,
  MCACOD 0x0134 (MCACOD_DATA, a data load).
- MCG_STATUS 0x7: RIPV | EIPV | MCIP, what Intel hardware reports for a data
  load consumed in user mode (a Skylake-SP's log: "MCG status:RIPV EIPV MCIP
  LMCE ... STATUS bd80000000100134", linux-edac 2021-02-22), what mce-test's
  srar_usr_dcu injects, and what QEMU's own kvm_mce_inject() gives a KVM
  guest (QEMU commit cb48748af7df). kill_me_maybe() passes no MF_MUST_KILL.
- The unrestartable variant (srar-noripv), MCG_STATUS 0x6, RIPV clear, as
  older SDMs describe it: memory_failure(pfn, MF_ACTION_REQUIRED |
  MF_MUST_KILL) from v6.5 (commit e40879b6d7d8); before it,
  do_machine_check() queued kill_me_now(): SIGBUS without memory_failure().

QEMU must present an Intel CPU (``-cpu max,vendor=GenuineIntel`` under TCG):
its default under TCG is AuthenticAMD, whose errors the kernel grades by the
AMD tables instead (severity.c mce_severity_amd()).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from mfinject import hwinject
from mfinject.errors import MfinjectError

ENV_DIR = "MFINJECT_MCE_DIR"  # set in the guest by mfinject.vm.guest
ANSWER_TIMEOUT_S = 30.0
MCE_BANK = 9  # QEMU's x86 CPUs have 10 banks (MCG_CAP 0x100010a under TCG)
MCE_CPU = 1


class MceError(MfinjectError):
    pass


_raised = False  # a machine check was raised in this process (bad ranges nothing clears)


def raised_any() -> bool:
    """Whether this session raised a machine check: its bad range outlives any reset."""
    return _raised


@dataclass(frozen=True)
class Flavour:
    """The register values of one kind of machine check."""
    name: str
    status: int
    mcg_status: int
    misc: int
    meaning: str
    broadcast: bool = True  # an uncorrected check reaches every CPU (-b); a corrected one none


SRAO = Flavour("srao", 0xBD000000000000C0, 0x5, 0x86,
               "uncorrected memory error found by the patrol scrubber, action optional")
SRAR = Flavour("srar", 0xBD80000000000134, 0x7, 0x86,
               "uncorrected memory error consumed by a data load in user mode, action required")
SRAR_NORIPV = Flavour("srar-noripv", 0xBD80000000000134, 0x6, 0x86,
                      "as srar, the interrupted instruction not restartable (RIPV clear)")
# MCi_STATUS VAL | EN | MISCV | ADDRV, MCACOD 0x009f (memory controller, read,
# channel unspecified): no UC, so QEMU raises no #MC and only fills the bank;
# the kernel finds it when it polls (machine_check_poll()).
CORRECTED = Flavour("corrected", 0x9C0000000000009F, 0x0, 0x86,
                    "corrected memory read error, found by the kernel's poll", broadcast=False)
FLAVOURS = {f.name: f for f in (SRAO, SRAR, SRAR_NORIPV, CORRECTED)}
NEEDS_VICTIM = frozenset({SRAR.name, SRAR_NORIPV.name})


@dataclass(frozen=True)
class Victim:
    """Where the consuming load must be when an action-required check is raised:
    vCPU ``cpu`` in user mode, RIP in [rip_lo, rip_hi), RDI = ``rdi``."""
    cpu: int
    rip_lo: int
    rip_hi: int
    rdi: int

    @classmethod
    def parse(cls, data: object) -> Victim:
        if not isinstance(data, dict) or set(data) != {"cpu", "rip_lo", "rip_hi", "rdi"} \
                or any(type(v) is not int for v in data.values()):
            raise TypeError(f"a victim is four ints (cpu, rip_lo, rip_hi, rdi): {data}")
        v = cls(**data)
        if v.cpu != MCE_CPU or not 0 < v.rip_lo < v.rip_hi:
            raise ValueError(f"the victim must run on vCPU {MCE_CPU} in a non-empty loop: {data}")
        return v


_REG = re.compile(r"\b(RIP|RDI)=([0-9a-f]{16})\b")
_CPL = re.compile(r"\bCPL=(\d)\b")


def caught(registers: str, victim: Victim) -> tuple[bool, str]:
    """Whether ``info registers`` shows the vCPU in the victim's load loop; and what it shows.

    All three must hold: CPL 3 (user mode: a kernel-mode consumer panics),
    RIP inside the loop (not some other user process on that CPU), RDI the
    poisoned address (the loop's load operand).
    """
    regs = {k: int(v, 16) for k, v in _REG.findall(registers)}
    cpl = _CPL.search(registers)
    if "RIP" not in regs or "RDI" not in regs or cpl is None:
        return False, f"no RIP, RDI and CPL in the monitor's answer: {registers[:200]!r}"
    seen = f"CPL={cpl[1]} RIP={regs['RIP']:#x} RDI={regs['RDI']:#x}"
    ok = cpl[1] == "3" and victim.rip_lo <= regs["RIP"] < victim.rip_hi \
        and regs["RDI"] == victim.rdi
    return ok, seen


@dataclass(frozen=True)
class Request:
    id: str
    flavour: str
    addr: int  # guest physical address
    victim: Victim | None = None  # where the consuming load runs (action required only)

    @classmethod
    def parse(cls, data: dict[str, object]) -> Request:
        """From its JSON, with every field's type checked (KeyError, TypeError, ValueError)."""
        rid, flavour, addr = data["id"], data["flavour"], data["addr"]
        if not isinstance(rid, str) or not isinstance(flavour, str) or type(addr) is not int:
            raise TypeError(f"a request needs a str id and flavour and an int addr: {data}")
        if flavour not in FLAVOURS or addr < 0 or addr % 64:
            raise ValueError(f"unknown flavour or an address not 64-byte aligned: {data}")
        raw = data.get("victim")
        victim = None if raw is None else Victim.parse(raw)
        if (victim is None) == (flavour in NEEDS_VICTIM):
            raise ValueError(f"a {flavour} request {'needs' if victim is None else 'takes no'} "
                             f"victim: {data}")
        return cls(rid, flavour, addr, victim)

    def monitor_command(self) -> str:
        f = FLAVOURS[self.flavour]
        return (f"mce {'-b ' if f.broadcast else ''}{MCE_CPU} {MCE_BANK} {f.status:#x} "
                f"{f.mcg_status:#x} {self.addr:#x} {f.misc:#x}")


@dataclass(frozen=True)
class Answer:
    id: str
    ok: bool
    monitor_said: str = ""
    error: str | None = None
    command: str = ""
    attempts: int = 0  # times the VM was stopped to find the victim's load (action required)
    registers: str = ""  # what the vCPU showed when the check was raised (or last seen)


def request_path(directory: Path, rid: str) -> Path:
    return directory / f"request-{rid}.json"


def answer_path(directory: Path, rid: str) -> Path:
    return directory / f"answer-{rid}.json"


def write_atomic(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def relay_dir(namespace: str | None = None) -> Path:
    """The shared directory the host watches, or why there is none (and, given the
    namespace, what hardware injection this machine would offer)."""
    d = os.environ.get(ENV_DIR)
    if not d or not Path(d).is_dir():
        here = ""
        if namespace is not None:
            here = "; this machine: " + "; ".join(str(a) for a in hwinject.discover(namespace))
        raise MceError("machine-check injection needs the host's QEMU monitor: run the suite "
                       "in the VM (`mfinject vm`); on real pmem the suite does not inject "
                       f"through EINJ or ndctl inject-error yet{here}")
    return Path(d)


def ask(flavour: Flavour, addr: int, timeout_s: float = ANSWER_TIMEOUT_S,
        victim: Victim | None = None) -> Answer:
    """Ask the host to raise ``flavour`` at ``addr``; its answer, or MceError at the timeout."""
    global _raised
    d = relay_dir()
    req = Request(uuid.uuid4().hex[:12], flavour.name, addr, victim)
    write_atomic(request_path(d, req.id), asdict(req))
    deadline = time.monotonic() + timeout_s
    path = answer_path(d, req.id)
    extended = False
    while True:
        if path.exists():
            answer = Answer(**json.loads(path.read_text()))
            _raised = _raised or answer.ok
            return answer
        if time.monotonic() > deadline:
            try:  # withdraw it; if the relay took it already, its answer is coming
                request_path(d, req.id).unlink()
                break
            except FileNotFoundError:
                if extended:
                    break
                deadline, extended = deadline + timeout_s, True
        time.sleep(0.02)
    raise MceError(f"the host did not answer machine-check request {req.id} within "
                   f"{timeout_s:.0f} s (is the VM runner's relay running?)")
