"""The host half of machine-check injection: guest requests to QEMU's monitor.

While a VM runs, a thread watches the results directory's ``mce/`` for
request files the guest wrote (mfinject.mce), sends each one's ``mce``
command through QMP, and answers with a file beside it. Every answer and
what the monitor printed is also appended to ``mce/log.jsonl``, for the
report. QEMU only affects the guest: no request can reach the host's memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path

from mfinject import mce
from mfinject.vm.qmp import Qmp, QmpError

log = logging.getLogger(__name__)

POLL_S = 0.05
QMP_TIMEOUT_S = 5.0


class Relay:
    def __init__(self, directory: Path, socket_path: Path) -> None:
        self.directory = directory
        self.socket_path = socket_path
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mce-relay", daemon=True)
        self._qmp: Qmp | None = None

    def start(self) -> Relay:
        # a request left by an earlier boot (its guest crashed or gave up) is never served
        for path in self.directory.glob("request-*.json"):
            with contextlib.suppress(OSError):
                path.rename(path.with_suffix(".stale"))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            # a request being served ends within the QMP timeout
            self._thread.join(timeout=QMP_TIMEOUT_S + 5)
        if self._qmp is not None:
            self._qmp.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for path in sorted(self.directory.glob("request-*.json")):
                try:
                    self._serve(path)
                except Exception:  # noqa: BLE001 - one bad request must not end the relay
                    log.exception("machine-check request %s", path)
                    with contextlib.suppress(OSError):
                        path.rename(path.with_suffix(".bad"))
            time.sleep(POLL_S)

    def _serve(self, path: Path) -> None:
        taken = path.with_suffix(".taken")
        try:
            path.rename(taken)  # claimed: a guest that gave up can no longer withdraw it
        except FileNotFoundError:
            return  # withdrawn by its guest at its timeout
        try:
            req = mce.Request.parse(json.loads(taken.read_text()))
        except (OSError, ValueError, TypeError, KeyError) as e:
            log.warning("unreadable machine-check request %s: %s", taken, e)
            taken.rename(taken.with_suffix(".bad"))
            return
        answer = self.answer(req)
        mce.write_atomic(mce.answer_path(self.directory, req.id), asdict(answer))
        with (self.directory / "log.jsonl").open("a") as f:
            f.write(json.dumps({"t": time.time(), **asdict(answer)}) + "\n")
        taken.unlink()

    def answer(self, req: mce.Request) -> mce.Answer:
        if req.flavour not in mce.FLAVOURS:
            return mce.Answer(req.id, False, error=f"unknown flavour {req.flavour!r}")
        command = req.monitor_command()
        try:
            if self._qmp is None:
                self._qmp = Qmp(self.socket_path, QMP_TIMEOUT_S)
            if req.victim is not None:
                return raise_in_victim(self._qmp, req, command)
            said = self._qmp.hmp(command).strip()
        except (QmpError, OSError, ValueError) as e:
            if self._qmp is not None:
                self._qmp.close()
            self._qmp = None
            if req.victim is not None:
                resume(self.socket_path)
            return mce.Answer(req.id, False, error=str(e), command=command)
        # the monitor prints nothing when it took the command
        return mce.Answer(req.id, not said, monitor_said=said, command=command,
                          error=said or None)


VICTIM_TRIES = 200
VICTIM_RUN_S = 0.02  # how long the VM runs between two looks


def raise_in_victim(qmp: Qmp, req: mce.Request, command: str) -> mce.Answer:
    """Stop the VM, look at the victim's vCPU, raise the check only inside its load loop.

    The VM is let run again (``cont``) after every look, whatever happened,
    even when ``stop`` itself failed (it may have paused the VM before it
    timed out): the #MC is taken when the vCPU resumes, at the instruction
    it was stopped at.
    """
    victim = req.victim
    assert victim is not None
    seen = ""
    for attempt in range(1, VICTIM_TRIES + 1):
        try:
            qmp.execute("stop")
            regs = str(qmp.execute("human-monitor-command", **{
                "command-line": "info registers", "cpu-index": victim.cpu}))
            ok, seen = mce.caught(regs, victim)
            if ok:
                said = qmp.hmp(command).strip()
                return mce.Answer(req.id, not said, monitor_said=said, command=command,
                                  error=said or None, attempts=attempt, registers=seen)
        finally:
            qmp.execute("cont")
        time.sleep(VICTIM_RUN_S)
    return mce.Answer(req.id, False, command=command, attempts=VICTIM_TRIES, registers=seen,
                      error=f"vCPU {victim.cpu} was never seen in the victim's load loop in "
                      f"{VICTIM_TRIES} looks (last: {seen}); nothing was raised")


def resume(socket_path: Path) -> None:
    """``cont`` on a fresh connection: after a failure amid stop/cont, never leave the VM
    stopped (a guest that never runs again would look like a hung kernel)."""
    try:
        with Qmp(socket_path, QMP_TIMEOUT_S) as qmp:
            qmp.execute("cont")
    except (QmpError, OSError, ValueError) as e:
        log.error("could not let the VM run again after a failed machine-check request: %s", e)
