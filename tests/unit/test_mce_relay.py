"""The machine-check relay: the guest's request becomes QEMU's `mce` command, and
QEMU's refusal is never an "ok".

The QEMU side here is a socket speaking QMP as QEMU 7.2 does (a greeting, then
one answer per command); what the monitor prints for a refused `mce` is
QEMU's own text (target/i386/helper.c do_inject_x86_mce()).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from mfinject import mce
from mfinject.vm.relay import Relay


def test_the_srao_request_is_the_recipes_command() -> None:
    req = mce.Request("r1", "srao", 0x109403000)
    assert req.monitor_command() == "mce -b 1 9 0xbd000000000000c0 0x5 0x109403000 0x86"


def _qemu(path: Path, said: str, seen: list[str]) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        f = conn.makefile("rwb")
        f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        f.flush()
        for line in f:
            msg = json.loads(line)
            seen.append(msg.get("arguments", {}).get("command-line", msg["execute"]))
            f.write(b'{"event": "RESET", "data": {}}\n')  # an event between answers
            answer = said if msg["execute"] == "human-monitor-command" else {}
            f.write(json.dumps({"return": answer}).encode() + b"\n")
            f.flush()
        conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("said, ok", [
    ("", True),
    ("CPU 1: Previous MCE still in progress, raising triple fault\r\n", False),
])
def test_the_answer_is_ok_only_when_the_monitor_said_nothing(tmp_path, said, ok) -> None:
    seen: list[str] = []
    _qemu(tmp_path / "qmp", said, seen)
    relay = Relay(tmp_path / "mce", tmp_path / "qmp")
    answer = relay.answer(mce.Request("r1", "srao", 0x1000))
    relay.stop()
    assert answer.ok is ok
    assert seen == ["qmp_capabilities", "mce -b 1 9 0xbd000000000000c0 0x5 0x1000 0x86"]
    assert answer.error == (None if ok else said.strip())


def test_no_monitor_is_an_error_not_a_wait(tmp_path) -> None:
    relay = Relay(tmp_path / "mce", tmp_path / "absent")
    answer = relay.answer(mce.Request("r1", "srao", 0x1000))
    assert not answer.ok and "QMP socket" in (answer.error or "")


def test_a_request_file_is_answered_beside_it(tmp_path, monkeypatch) -> None:
    seen: list[str] = []
    _qemu(tmp_path / "qmp", "", seen)
    relay = Relay(tmp_path / "mce", tmp_path / "qmp").start()
    monkeypatch.setenv(mce.ENV_DIR, str(tmp_path / "mce"))
    try:
        answer = mce.ask(mce.SRAO, 0x2000, timeout_s=10)
    finally:
        relay.stop()
    assert answer.ok and answer.command.endswith("0x2000 0x86")
    log = [json.loads(x) for x in (tmp_path / "mce" / "log.jsonl").read_text().splitlines()]
    assert [x["ok"] for x in log] == [True]


def test_outside_the_vm_the_injector_names_the_fix(monkeypatch) -> None:
    monkeypatch.delenv(mce.ENV_DIR, raising=False)
    with pytest.raises(mce.MceError, match="mfinject vm"):
        mce.relay_dir()


def test_a_request_an_earlier_boot_left_is_never_served(tmp_path) -> None:
    d = tmp_path / "mce"
    d.mkdir()
    mce.write_atomic(mce.request_path(d, "old"), {"id": "old", "flavour": "srao", "addr": 4096})
    relay = Relay(d, tmp_path / "absent").start()
    time.sleep(0.3)
    relay.stop()
    assert not mce.answer_path(d, "old").exists()
    assert (d / "request-old.stale").exists()


@pytest.mark.parametrize("data", [
    {"id": "x", "flavour": "srao", "addr": "0x1000"},
    {"id": "x", "flavour": "srar-unknown", "addr": 4096},
    {"id": "x", "flavour": "srao", "addr": 4097},
    {"flavour": "srao", "addr": 4096},
])
def test_a_malformed_request_is_refused_and_the_relay_lives_on(tmp_path, data) -> None:
    seen: list[str] = []
    _qemu(tmp_path / "qmp", "", seen)
    d = tmp_path / "mce"
    relay = Relay(d, tmp_path / "qmp").start()
    try:
        mce.write_atomic(d / "request-x.json", data)
        time.sleep(0.3)
        os.environ[mce.ENV_DIR] = str(d)
        try:
            answer = mce.ask(mce.SRAO, 0x3000, timeout_s=10)
        finally:
            del os.environ[mce.ENV_DIR]
    finally:
        relay.stop()
    assert answer.ok
    assert (d / "request-x.bad").exists()


def test_a_machine_check_has_landed_only_when_memory_failure_spoke_of_its_own_pfn() -> None:
    from mfinject.injectors import memory_failure_done
    pfn = 0x109403
    # what the kernel logged for another page, or before the result: not landed
    assert not memory_failure_done([
        "mce: [Hardware Error]: Machine check events logged",
        "Memory failure: 0x1094030: recovery action for dax page: Recovered",
        "Memory failure: 0x109404: recovery action for dax page: Recovered",
        f"Memory failure: {pfn:#x}: Sending SIGBUS to python3:270 due to hardware memory "
        "corruption",
    ], pfn)
    assert memory_failure_done(
        [f"Memory failure: {pfn:#x}: recovery action for dax page: Failed"], pfn)
    assert memory_failure_done([f"Memory failure: {pfn:#x}: already hardware poisoned"], pfn)


# What QEMU 7.2's `info registers` prints for a vCPU (target/i386/cpu-dump.c
# x86_cpu_dump_state()), trimmed to the lines the check reads
def _regs(rip: int, rdi: int, cpl: int) -> str:
    return (f"RAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000000\r\n"
            f"RSI=00007f2baf790000 RDI={rdi:016x} RBP=0000000000000000 RSP=00007ffd5e1c2a48\r\n"
            f"RIP={rip:016x} RFL=00000246 [---Z-P-] CPL={cpl} II=0 A20=1 SMM=0 HLT=0\r\n"
            f"CS =00{'33' if cpl == 3 else '10'} 0000000000000000 ffffffff 00a0fb00 DPL={cpl} CS64\r\n")


VICTIM = mce.Victim(1, 0x7F2BAF788006, 0x7F2BAF78800C, 0x7F2BAF600000)


@pytest.mark.parametrize("regs, ok", [
    (_regs(0x7F2BAF788008, 0x7F2BAF600000, 3), True),
    # in the kernel (a timer interrupt): an action-required check there panics the guest
    (_regs(0xFFFFFFFF81C0F2A0, 0x7F2BAF600000, 0), False),
    # user mode, but another process (or the victim outside its loop)
    (_regs(0x55D0C0DE1234, 0x7F2BAF600000, 3), False),
    # in the loop, but loading another address
    (_regs(0x7F2BAF788008, 0x7F2BAF601000, 3), False),
    # one past the loop's end
    (_regs(0x7F2BAF78800C, 0x7F2BAF600000, 3), False),
    ("Error: CPU 1 is not present", False),
])
def test_the_check_is_raised_only_inside_the_victims_load_loop(regs, ok) -> None:
    assert mce.caught(regs, VICTIM)[0] is ok


class _Monitor:
    """A QEMU monitor whose vCPU shows ``looks`` in turn (then the last for ever)."""

    def __init__(self, looks: list[str], said: str = "") -> None:
        self.looks, self.said, self.seen = looks, said, []

    def execute(self, command: str, **args: object) -> object:
        line = args.get("command-line", command)
        self.seen.append(line)
        if line == "info registers":
            assert args["cpu-index"] == VICTIM.cpu
            return self.looks.pop(0) if len(self.looks) > 1 else self.looks[0]
        return {}

    def hmp(self, line: str) -> str:
        self.seen.append(line)
        return self.said


def test_the_relay_waits_for_the_victim_and_always_lets_the_vm_run(monkeypatch) -> None:
    from mfinject.vm import relay
    monkeypatch.setattr(relay, "VICTIM_RUN_S", 0)
    req = mce.Request("r2", "srar", 0x109403000, VICTIM)
    mon = _Monitor([_regs(0xFFFFFFFF81C0F2A0, 0, 0), _regs(0x7F2BAF788008, VICTIM.rdi, 3)])
    answer = relay.raise_in_victim(mon, req, req.monitor_command())
    assert answer.ok and answer.attempts == 2 and "CPL=3" in answer.registers
    assert mon.seen == ["stop", "info registers", "cont",
                        "stop", "info registers", req.monitor_command(), "cont"]
    assert req.monitor_command() == "mce -b 1 9 0xbd80000000000134 0x7 0x109403000 0x86"
    noripv = mce.Request("r4", "srar-noripv", 0x109403000, VICTIM)
    assert noripv.monitor_command() == "mce -b 1 9 0xbd80000000000134 0x6 0x109403000 0x86"


def test_a_victim_never_seen_in_its_loop_gets_no_check(monkeypatch) -> None:
    from mfinject.vm import relay
    monkeypatch.setattr(relay, "VICTIM_RUN_S", 0)
    monkeypatch.setattr(relay, "VICTIM_TRIES", 5)
    req = mce.Request("r3", "srar", 0x109403000, VICTIM)
    mon = _Monitor([_regs(0xFFFFFFFF81C0F2A0, 0, 0)])
    answer = relay.raise_in_victim(mon, req, req.monitor_command())
    assert not answer.ok and "never seen" in (answer.error or "")
    assert req.monitor_command() not in mon.seen
    assert mon.seen.count("stop") == mon.seen.count("cont") == 5


@pytest.mark.parametrize("data", [
    {"id": "x", "flavour": "srar", "addr": 4096},  # action required without a victim
    {"id": "x", "flavour": "srao", "addr": 4096, "victim": {"cpu": 1, "rip_lo": 1, "rip_hi": 2,
                                                           "rdi": 3}},
    {"id": "x", "flavour": "srar", "addr": 4096, "victim": {"cpu": 0, "rip_lo": 1, "rip_hi": 2,
                                                           "rdi": 3}},  # not the bank's CPU
    {"id": "x", "flavour": "srar", "addr": 4096, "victim": {"cpu": 1, "rip_lo": 2, "rip_hi": 2,
                                                           "rdi": 3}},
])
def test_a_request_with_a_victim_where_none_belongs_or_without_one_is_refused(data) -> None:
    with pytest.raises((ValueError, TypeError)):
        mce.Request.parse(data)


# mce:mce_record as 6.1 and 6.12 print it (include/trace/events/mce.h TP_printk)
RECORD_6_1 = ("kworker/1:1-37 [001] d..1. 60.49: mce_record: CPU: 1, MCGc/s: 100010a/0, "
              "MC9: 9c0000000000009f, IPID: 0000000000000000, ADDR/MISC/SYND: "
              "0000000101445000/0000000000000086/0000000000000000, RIP: 00:<0000000000000000>, "
              "TSC: 0, PROCESSOR: 0:806f8, TIME: 1796484773, SOCKET: 0, APIC: 1")
RECORD_6_12 = ("kworker/1:2-88 [001] ..... 60.49: mce_record: CPU: 1, MCGc/s: 100010a/0, "
               "MC9: 9c0000000000009f, IPID: 0000000000000000, ADDR: 0000000101445000, "
               "MISC: 0000000000000086, SYND: 0000000000000000, RIP: 00:<0000000000000000>, "
               "TSC: 0, PPIN: 0, vendor: 0, CPUID: 806f8, time: 1796484773, socket: 0, "
               "APIC: 1, microcode: 1")


@pytest.mark.parametrize("line", [RECORD_6_1, RECORD_6_12])
def test_the_kernels_record_of_a_corrected_error_is_recognised(line) -> None:
    from mfinject.observers.mcerecord import matches
    assert matches(line, 9, mce.CORRECTED.status, 0x101445000)
    assert not matches(line, 9, mce.CORRECTED.status, 0x101446000)  # another page's
    assert not matches(line, 8, mce.CORRECTED.status, 0x101445000)  # another bank's
    assert not matches(line, 9, mce.SRAO.status, 0x101445000)  # another error


def test_a_corrected_error_is_not_broadcast() -> None:
    # QEMU's -b sends every other vCPU an uncorrected #MC (bank 1 VAL|UC): never for a CE
    assert mce.Request("r5", "corrected", 0x101445000).monitor_command() == \
        "mce 1 9 0x9c0000000000009f 0x0 0x101445000 0x86"


def test_a_failing_stop_still_lets_the_vm_run(monkeypatch) -> None:
    from mfinject.vm import relay
    from mfinject.vm.qmp import QmpError

    class Timeout(_Monitor):
        def execute(self, command: str, **args: object) -> object:
            if command == "stop":  # it may have paused the VM before timing out
                self.seen.append(command)
                raise QmpError("stop: no answer within 5 s")
            return super().execute(command, **args)

    mon = Timeout([_regs(0x7F2BAF788008, VICTIM.rdi, 3)])
    req = mce.Request("r6", "srar", 0x109403000, VICTIM)
    with pytest.raises(QmpError):
        relay.raise_in_victim(mon, req, req.monitor_command())
    assert mon.seen == ["stop", "cont"]
