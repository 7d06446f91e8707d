"""The KVM decision: a guest that prints nothing under KVM is a hang, told early.

The process stands for QEMU under vng (a sleep that prints nothing, or that
printed the kernel's banner): what is tested is the runner's waiting, which
is host-side logic; the kernel's own boot is tested by every VM run.
"""

from __future__ import annotations

import subprocess
import time

from mfinject.vm import runner


def _start() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "30"], start_new_session=True)


def test_no_kernel_output_is_a_hang_decided_early(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "KVM_FIRST_OUTPUT_S", 0.5)
    console = tmp_path / "console.log"
    console.write_text("qemu-system-x86_64: warning: host doesn't support requested feature\n")
    t0 = time.monotonic()
    proc = _start()
    rc, silent = runner.wait_for_boot(proc, console, tmp_path / "ok")
    assert (rc, silent) == (None, True)
    assert time.monotonic() - t0 < 5
    assert proc.poll() is not None  # killed


def test_a_kernel_that_printed_is_given_the_whole_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "KVM_FIRST_OUTPUT_S", 0.2)
    monkeypatch.setattr(runner, "KVM_PROBE_TIMEOUT_S", 1.5)
    console = tmp_path / "console.log"
    console.write_text("[    0.000000] Linux version 6.1.0-57-amd64\n")
    t0 = time.monotonic()
    rc, silent = runner.wait_for_boot(_start(), console, tmp_path / "ok")
    assert silent is False and rc is None
    assert time.monotonic() - t0 >= 1.5


def test_an_exit_is_returned_at_once(tmp_path):
    proc = subprocess.Popen(["sh", "-c", "exit 3"], start_new_session=True)
    assert runner.wait_for_boot(proc, tmp_path / "console.log", tmp_path / "ok") == (3, False)
