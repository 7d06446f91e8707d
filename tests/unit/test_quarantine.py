"""Fencing off bad sectors that outlive a reset: a test's file must never get one."""

from __future__ import annotations

import os

import pytest

from mfinject import quarantine
from mfinject.quarantine import QuarantineError


def test_badblocks_lines_are_byte_ranges_of_the_device() -> None:
    assert quarantine.bad_byte_ranges(["266264 1", "8 8"]) == [
        range(266264 * 512, 266265 * 512), range(4096, 8192)]


def test_a_bad_sector_half_inside_a_chunk_is_still_uncovered() -> None:
    bad = [range(4096, 8192)]
    assert quarantine.uncovered(bad, [range(0, 6144)]) == bad
    assert quarantine.uncovered(bad, [range(0, 6144), range(6144, 8192)]) == []
    assert quarantine.uncovered(bad, [range(0, 1 << 20)]) == []


def test_nothing_bad_nothing_fenced(tmp_path) -> None:
    assert quarantine.fence(str(tmp_path), []) == []
    assert list(tmp_path.iterdir()) == []


def test_a_bad_sector_no_chunk_can_hold_is_an_error_and_the_chunks_are_gone(tmp_path) -> None:
    # a sector far beyond anything this filesystem hands out in three chunks
    far = (1 << 50) // 512
    with pytest.raises(QuarantineError, match=f"bad sectors {far}\\+1"):
        quarantine.fence(str(tmp_path), [f"{far} 1"], limit=3 * quarantine.CHUNK)
    assert list(tmp_path.iterdir()) == []


def test_the_chunk_holding_a_bad_sector_is_kept(tmp_path) -> None:
    # where this filesystem puts a first chunk: find it, free it, call that sector bad
    path = str(tmp_path / "one")
    assert quarantine._preallocate(path)
    ranges = quarantine.file_byte_ranges(path)
    os.unlink(path)
    assert ranges, "the host filesystem placed no extent for preallocated space"
    bad_sector = ranges[0].start // 512
    kept = quarantine.fence(str(tmp_path), [f"{bad_sector} 1"], limit=8 * quarantine.CHUNK)
    assert len(kept) == 1
    assert any(bad_sector * 512 in r for r in quarantine.file_byte_ranges(kept[0]))
    # the chunks that held nothing bad were given back
    assert sorted(str(p) for p in tmp_path.glob(quarantine.PREFIX + "*")) == kept
