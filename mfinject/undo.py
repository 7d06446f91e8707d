"""An undo stack for global state the suite changes (sysctls, modules, knobs).

Like pytest's monkeypatch: every change pushes its inverse, and the stack is
replayed in reverse when the scope ends, whatever happened inside it.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

from mfinject.errors import MfinjectError

log = logging.getLogger(__name__)


class UndoError(MfinjectError):
    pass


MODPROBE_TIMEOUT_S = 60.0  # a module's init or exit can hang in the kernel under test


def _modprobe(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["modprobe", *args], capture_output=True, text=True, check=False,
                              timeout=MODPROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UndoError(f"modprobe {' '.join(args)} did not return within "
                        f"{MODPROBE_TIMEOUT_S:.0f} s") from None


def _unload(module: str) -> None:
    """Unload what was loaded; a module still in use stays, and the log says so."""
    proc = _modprobe("-r", module)
    if proc.returncode != 0:
        log.warning("modprobe -r %s failed: %s", module, proc.stderr.strip())


class UndoStack:
    def __init__(self) -> None:
        self._stack: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, undo: Callable[[], None]) -> None:
        self._stack.append((what, undo))

    def write(self, path: str, value: str) -> None:
        """Write a sysfs/procfs/debugfs knob and restore its old value later."""
        p = Path(path)
        old = p.read_text().strip()
        p.write_text(value)
        log.info("%s: %s -> %s", path, old, value)
        self.push(f"restore {path}={old}", lambda: p.write_text(old))

    def sysctl(self, name: str, value: str) -> None:
        self.write("/proc/sys/" + name.replace(".", "/"), value)

    def modprobe(self, module: str) -> None:
        if Path(f"/sys/module/{module}").exists():
            return
        proc = _modprobe(module)
        if proc.returncode != 0:
            raise UndoError(f"modprobe {module} failed: {proc.stderr.strip()}")
        self.push(f"rmmod {module}", lambda: _unload(module))

    def __enter__(self) -> UndoStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

    def flush(self) -> None:
        errors = []
        while self._stack:
            what, undo = self._stack.pop()
            try:
                undo()
            except Exception as e:  # noqa: BLE001 - collected and raised below
                errors.append(f"{what}: {e}")
        if errors:
            raise UndoError("cleanup failed: " + "; ".join(errors))
