"""A QEMU Machine Protocol client: the host side of machine-check injection.

QMP is line-delimited JSON on a socket (docs/interop/qmp-spec.rst): the
server greets, the client sends ``qmp_capabilities``, then commands, each
answered by ``{"return": ...}`` or ``{"error": ...}``; asynchronous events
(``{"event": ...}``) may arrive between them and are set aside. The monitor's
``mce`` command has no QMP form, so it goes through
``human-monitor-command``, whose answer is the text the monitor printed
(empty when it said nothing).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from mfinject.errors import MfinjectError


class QmpError(MfinjectError):
    pass


class Qmp:
    """One connection to a QEMU monitor's unix socket; every read has a timeout."""

    def __init__(self, path: Path, timeout_s: float = 10.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        self._buf = b""
        try:
            self._sock.connect(str(path))
            greeting = self._message()
            if "QMP" not in greeting:
                raise QmpError(f"{path}: not a QMP greeting: {greeting}")
            self.execute("qmp_capabilities")
        except OSError as e:
            self._sock.close()
            raise QmpError(f"QMP socket {path}: {e}") from e
        except BaseException:
            self._sock.close()
            raise

    def execute(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            answer = self._message()
            if "event" in answer:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise QmpError(f"{command}: {answer['error'].get('desc', answer['error'])}")
            return answer.get("return")

    def hmp(self, command_line: str) -> str:
        """A human monitor command; returns what the monitor printed."""
        return str(self.execute("human-monitor-command", **{"command-line": command_line}))

    def _message(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while b"\n" not in self._buf:
            if time.monotonic() > deadline:
                raise QmpError(f"{self.path}: no answer within {self.timeout_s:.0f} s")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise QmpError(f"{self.path}: QEMU closed the monitor")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
