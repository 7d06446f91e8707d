"""The ptrace tracer on real processes of the host (no poison: a SIGBUS sent with kill()).

Tracer.keep_alive() records a thread's SIGBUS and suppresses it: the process
must live on, the signal still recorded as the kernel queued it; without it,
SIGBUS is delivered and ends the process.
"""

from __future__ import annotations

import os
import signal

import pytest

from mfinject.observers.tracer import Tracer
from mfinject.participant import Participant, cast

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ptrace of a forked child: run as root")


def test_a_kept_thread_records_its_sigbus_and_lives_on():
    tracer = Tracer()
    with cast(tracer) as people:
        p = people["T"] = Participant("T", tracer, timeout_s=10)
        tracer.keep_alive(p.pid, p.pid)
        os.kill(p.pid, signal.SIGBUS)
        assert p.call("mce_kill_get") is not None  # still answering
        (ev,) = [e for e in p.log.signals if e.signo == signal.SIGBUS]
        assert ev.delivered is False and ev.tid == p.pid
        assert p.alive


def test_sigbus_of_any_other_thread_is_delivered():
    tracer = Tracer()
    with cast(tracer) as people:
        p = people["T"] = Participant("T", tracer, timeout_s=10)
        os.kill(p.pid, signal.SIGBUS)
        assert p.request("mce_kill_get") is None  # died
        assert p.log.exit_status == -signal.SIGBUS
        assert [e.delivered for e in p.log.signals if e.signo == signal.SIGBUS] == [True]
