"""Parsers of what the kernel hands back: pagemap entries and /dev/kmsg records."""

import struct

from mfinject.observers.kmsg import parse_record
from mfinject.observers.pagemap import parse_entry


def test_pagemap_present_entry_carries_pfn():
    e = parse_entry(struct.pack("<Q", (1 << 63) | (1 << 61) | 0x101218))
    assert e.present and e.file and not e.swapped
    assert e.pfn == 0x101218
    assert e.describe() == "present pfn=0x101218"


def test_pagemap_absent_entry_has_no_pfn():
    e = parse_entry(struct.pack("<Q", 0x1234))  # stale bits without PM_PRESENT
    assert not e.present
    assert e.pfn is None
    assert e.describe() == "not present"


def test_kmsg_record_parsed():
    rec = parse_record("3,1042,52330355,-;Memory failure: 0x101218: Sending SIGBUS to python3:282"
                       " due to hardware memory corruption\n")
    assert rec is not None
    assert (rec.level, rec.seq, rec.usec) == (3, 1042, 52330355)
    assert rec.text.startswith("Memory failure: 0x101218")
    assert str(rec).startswith("[   52.330355]")


def test_kmsg_continuation_dictionary_dropped():
    rec = parse_record("6,7,100,-;hello\n SUBSYSTEM=block\n DEVICE=b259:0\n")
    assert rec is not None and rec.text == "hello"


def test_kmsg_facility_bits_masked():
    rec = parse_record("14,1,1,-;user message")  # facility 1 (user), level 6
    assert rec is not None and rec.level == 6


def test_kmsg_garbage_rejected():
    assert parse_record("no separator") is None
    assert parse_record("x,y,z;text") is None
