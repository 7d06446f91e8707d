"""The undo stack restores what it changed, in reverse, and reports what it could not."""

import pytest

from mfinject.undo import UndoError, UndoStack


def test_knobs_restored_in_reverse(tmp_path):
    knob = tmp_path / "memory_failure_early_kill"
    knob.write_text("1\n")
    order = []
    stack = UndoStack()
    stack.write(str(knob), "0")
    stack.push("first", lambda: order.append("first"))
    stack.write(str(knob), "7")
    assert knob.read_text() == "7"
    stack.push("last", lambda: order.append("last"))
    stack.flush()
    assert knob.read_text() == "1"
    assert order == ["last", "first"]


def test_failed_undo_is_reported_and_the_rest_still_runs(tmp_path):
    done = []
    stack = UndoStack()
    stack.push("ok", lambda: done.append("ok"))
    stack.push("broken", lambda: (_ for _ in ()).throw(OSError("read-only")))
    with pytest.raises(UndoError, match="broken: read-only"):
        stack.flush()
    assert done == ["ok"]
