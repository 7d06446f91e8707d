"""Kernel log capture through /dev/kmsg (Documentation/ABI/testing/dev-kmsg)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class KmsgRecord:
    level: int
    seq: int
    usec: int
    text: str

    def __str__(self) -> str:
        return f"[{self.usec / 1e6:12.6f}] {self.text}"


def parse_record(line: str) -> KmsgRecord | None:
    """Parse one /dev/kmsg record: ``prefix,seq,usec,flags[,...];text``."""
    header, sep, text = line.partition(";")
    if not sep:
        return None
    fields = header.split(",")
    if len(fields) < 3:
        return None
    try:
        prefix, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None
    # Continuation lines ("\n KEY=value") carry dictionary data; keep the message.
    return KmsgRecord(level=prefix & 7, seq=seq, usec=usec, text=text.split("\n", 1)[0])


class KmsgCapture:
    """Records what the kernel logs between construction and :meth:`read`."""

    def __init__(self) -> None:
        self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self._fd, 0, os.SEEK_END)

    def read(self) -> list[KmsgRecord]:
        records = []
        while True:
            try:
                chunk = os.read(self._fd, 8192)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    break
                if e.errno == errno.EPIPE:  # overwritten while we read: go on
                    continue
                raise
            if not chunk:
                break
            rec = parse_record(chunk.decode("utf-8", "replace"))
            if rec is not None:
                records.append(rec)
        return records

    def close(self) -> None:
        os.close(self._fd)


@contextlib.contextmanager
def capture() -> Iterator[KmsgCapture]:
    cap = KmsgCapture()
    try:
        yield cap
    finally:
        cap.close()
