"""The O_DIRECT pin's delayed device: its table, and one device for a session."""

from __future__ import annotations

import contextlib

from mfinject import pin


def test_only_the_window_of_the_pinned_read_is_delayed():
    table = pin.delay_table("/dev/loop3", pin.DEVICE_SIZE, 1500).splitlines()
    a, b = pin.DELAYED_OFFSET // 512, (pin.DELAYED_OFFSET + pin.DELAYED_LENGTH) // 512
    assert table == [f"0 {a} linear /dev/loop3 0",
                     f"{a} {b - a} delay /dev/loop3 {a} 1500",
                     f"{b} {pin.DEVICE_SIZE // 512 - b} linear /dev/loop3 {b}"]


def test_a_session_makes_its_device_once_on_first_use_and_removes_it_at_the_end(monkeypatch):
    made, removed = [], []

    @contextlib.contextmanager
    def fake(delay_ms):
        made.append(delay_ms)
        try:
            yield f"/dev/mapper/d{len(made)}"
        finally:
            removed.append(len(made))
    monkeypatch.setattr(pin, "delayed_device", fake)
    with contextlib.closing(pin.SessionDevice(1500)) as device:
        assert made == []  # a session with no O_DIRECT pin makes none
        assert device.get() == device.get() == "/dev/mapper/d1"
        assert made == [1500] and removed == []
    assert removed == [1]


def test_a_session_that_never_asked_removes_nothing(monkeypatch):
    monkeypatch.setattr(pin, "delayed_device", lambda ms: (_ for _ in ()).throw(AssertionError))
    pin.SessionDevice(1500).close()
