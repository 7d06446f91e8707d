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
