"""Kernel log capture through /dev/kmsg (Documentation/ABI/testing/dev-kmsg).

Records carry sequence numbers, so a capture knows which ones it never saw:
commit e11fea92e13f ("kmsg: export printk records to the /dev/kmsg
interface", v3.5): "In case records get overwritten while /dev/kmsg is held
open, or records get faster overwritten than they are read, the next read()
will return -EPIPE and the current reading position gets updated to the next
available record. The passed sequence numbers allow the log consumer to
calculate the amount of lost messages."
"""

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


@dataclass(frozen=True)
class Lost:
    """Records a capture never read: ``count`` from sequence number ``first``
    (``count`` None: an unknown number before ``first``)."""

    first: int
    count: int | None

    def describe(self) -> str:
        if self.count is None:
            return f"kernel log records lost before seq {self.first}"
        last = self.first + self.count - 1
        where = f"seq {self.first}" if self.count == 1 else f"seq {self.first}-{last}"
        return f"{self.count} kernel log record{'s' if self.count > 1 else ''} lost ({where})"


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


class Cursor:
    """Which records were missed, from the sequence numbers of those read.

    A record that could not be parsed counts as missed too: nothing was read
    of it.
    """

    def __init__(self, next_seq: int | None = None) -> None:
        self.next_seq = next_seq  # the sequence number the next record should have
        self.lost: list[Lost] = []
        self._overrun = False

    def overrun(self) -> None:
        """read() returned EPIPE: records were overwritten before they were read."""
        self._overrun = True

    def saw(self, rec: KmsgRecord) -> None:
        if self.next_seq is not None and rec.seq > self.next_seq:
            self.lost.append(Lost(self.next_seq, rec.seq - self.next_seq))
        elif self.next_seq is None and self._overrun:
            self.lost.append(Lost(rec.seq, None))
        self._overrun = False
        self.next_seq = rec.seq + 1


class KmsgCapture:
    """Records what the kernel logs between construction and :meth:`read`.

    ``lost`` lists the records logged since then that it could not read.
    """

    def __init__(self) -> None:
        self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        # Start after the last record (SEEK_END), rather than read the whole log to
        # learn its sequence number: that read grew with the session's log and cost
        # 0.13 s per test under TCG (6.8 s of a 51-test run). The first record read
        # gives the sequence number; a loss before it shows as EPIPE (count unknown).
        os.lseek(self._fd, 0, os.SEEK_END)
        self._seq = Cursor()

    @property
    def lost(self) -> list[Lost]:
        return self._seq.lost

    def read(self) -> list[KmsgRecord]:
        records = []
        for rec in self._records(self._seq):
            self._seq.saw(rec)
            records.append(rec)
        return records

    def _records(self, seq: Cursor) -> Iterator[KmsgRecord]:
        while True:
            try:
                chunk = os.read(self._fd, 8192)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    return
                if e.errno == errno.EPIPE:  # overwritten: the reader moved on to the oldest
                    seq.overrun()
                    continue
                raise
            if not chunk:
                return
            rec = parse_record(chunk.decode("utf-8", "replace"))
            if rec is not None:
                yield rec

    def close(self) -> None:
        os.close(self._fd)


@contextlib.contextmanager
def capture() -> Iterator[KmsgCapture]:
    cap = KmsgCapture()
    try:
        yield cap
    finally:
        cap.close()
