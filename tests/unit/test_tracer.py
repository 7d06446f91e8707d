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
        p.call("mce_kill_get")  # serving: its SIGBUS is at SIG_DFL, faulthandler off
        os.kill(p.pid, signal.SIGBUS)
        assert p.call("mce_kill_get") is not None  # still answering
        (ev,) = [e for e in p.log.signals if e.signo == signal.SIGBUS]
        assert ev.delivered is False and ev.tid == p.pid
        assert p.alive


def test_sigbus_of_any_other_thread_is_delivered():
    tracer = Tracer()
    with cast(tracer) as people:
        p = people["T"] = Participant("T", tracer, timeout_s=10)
        p.call("mce_kill_get")  # serving: its SIGBUS is at SIG_DFL, faulthandler off
        os.kill(p.pid, signal.SIGBUS)
        assert p.request("mce_kill_get") is None  # died
        assert p.log.exit_status == -signal.SIGBUS
        assert [e.delivered for e in p.log.signals if e.signo == signal.SIGBUS] == [True]


def test_settle_waits_for_a_queued_signal_whatever_the_quiet():
    """A signal queued before settle() is taken before it returns, even with no quiet at
    all: the tracee's SigPnd/ShdPnd say it has not reached its delivery-stop yet."""
    tracer = Tracer()
    with cast(tracer) as people:
        p = people["T"] = Participant("T", tracer, timeout_s=10)
        p.call("mce_kill_get")  # serving: its SIGBUS is at SIG_DFL, faulthandler off
        os.kill(p.pid, signal.SIGBUS)
        tracer.settle(0.0, 10.0)
        assert [e.signo for e in p.log.signals] == [signal.SIGBUS]
        assert tracer.unsettled() == []
        # delivered, and SIGBUS ends it: settle waited for the exit too
        assert p.log.exit_status == -signal.SIGBUS


def test_pending_signals_read_from_proc_status():
    from mfinject.observers.tracer import deliverable_pending
    status = ("Name:\tpython3\nSigQ:\t1/94\nSigPnd:\t0000000000000080\n"
              "ShdPnd:\t0000000000000100\nSigBlk:\t0000000000000100\nSigIgn:\t0\n")
    assert deliverable_pending(status) == 0x80  # SIGBUS (7) queued; SIGKILL's bit blocked
    assert deliverable_pending(status.replace("SigBlk:\t0000000000000100",
                                              "SigBlk:\t0000000000000000")) == 0x180
    assert deliverable_pending("Name:\tx\n") == 0


def test_settle_waits_for_a_sigkilled_tracee_to_end():
    """SIGKILL stops nobody: the tracer sees it only pending, or the thread in its exit."""
    tracer = Tracer()
    with cast(tracer) as people:
        p = people["T"] = Participant("T", tracer, timeout_s=10)
        p.call("mce_kill_get")
        os.kill(p.pid, signal.SIGKILL)
        tracer.settle(0.0, 10.0)
        assert p.log.exit_status == -signal.SIGKILL


def test_a_thread_in_do_exit_is_told_from_stat():
    from mfinject.observers.tracer import exiting
    # pid (comm) state ppid pgrp session tty tpgid flags ...
    running = "77 (python3 x) R 1 77 77 0 -1 4194560 0 0"
    assert not exiting(running)
    assert exiting(running.replace("4194560", str(4194560 | 0x4)))
    assert not exiting(running.replace(") R", ") Z").replace("4194560", "4194564"))


def test_settle_sees_a_second_signal_queued_behind_the_first():
    """Two signals queued before settle(): both are recorded, with no quiet at all (the
    second is pending while the first is handled). SIGWINCH, ignored by default, still
    stops a traced thread."""
    tracer = Tracer()
    with cast(tracer) as people:
        p = people["T"] = Participant("T", tracer, timeout_s=10)
        tracer.keep_alive(p.pid, p.pid)
        p.call("mce_kill_get")
        os.kill(p.pid, signal.SIGBUS)
        os.kill(p.pid, signal.SIGWINCH)
        tracer.settle(0.0, 10.0)
        assert sorted(e.signo for e in p.log.signals) == [signal.SIGBUS, signal.SIGWINCH]
        assert p.alive and tracer.unsettled() == []
