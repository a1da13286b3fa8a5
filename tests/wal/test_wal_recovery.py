"""Recovery on open: torn tails are cut to the last whole batch, other damage is named."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest
from wal_helpers import as_tuples, flip_byte, make_entries, segment_files

from wal import SegmentedLog, WalCorruption
from wal.format import COMMIT_SIZE, HEADER_SIZE
from wal.meta import META_NAME

SEGMENT_SIZE = 1 << 20


def build(directory: pathlib.Path, batches: list[int], *, sync: bool = True) -> list[tuple]:
    """A one-segment log holding batches of the given sizes; returns all entries as tuples."""
    with SegmentedLog.open(directory, segment_size=SEGMENT_SIZE, preallocate=False) as log:
        for count in batches:
            log.append(make_entries(log.last_index + 1, count, size=11 + count), sync=sync)
        return as_tuples(log.read_range(1, log.last_index + 1))


def reopen_entries(directory: pathlib.Path, **options: object) -> tuple[list[tuple], object]:
    with SegmentedLog.open(directory, segment_size=SEGMENT_SIZE, **options) as log:
        entries = as_tuples(log.read_range(log.first_index, log.last_index + 1))
        return entries, log.tail_damage


def last_batch_span(directory: pathlib.Path, last_batch: int) -> tuple[pathlib.Path, int, int]:
    """(segment path, file offset where the last batch starts, file size)."""
    path = segment_files(directory)[-1]
    with SegmentedLog.open(directory, readonly=True) as log:
        segment = log._segments[-1]
        start = segment.frame_span(segment.count - last_batch)[0]
        end = segment.data_end
    assert end == path.stat().st_size
    return path, start, end


@pytest.mark.parametrize("zero_fill", [False, True], ids=["truncated", "zero-filled"])
def test_cut_at_every_byte_of_the_last_batch(tmp_path: pathlib.Path, zero_fill: bool) -> None:
    """A crash can leave any prefix of the last write; only whole batches survive."""
    pristine = tmp_path / "pristine"
    everything = build(pristine, [3, 1, 3])
    path, start, end = last_batch_span(pristine, 3)
    data = path.read_bytes()
    before_last = everything[:-3]
    work = tmp_path / "work"
    shutil.copytree(pristine, work)  # opening changes only the segment, rewritten each time
    for cut in range(start, end + 1):
        damaged = data[:cut] + (bytes(end - cut + 100) if zero_fill else b"")
        (work / path.name).write_bytes(damaged)
        entries, damage = reopen_entries(work, preallocate=zero_fill)
        if cut == end or (zero_fill and data[cut:end].count(0) == end - cut):
            # Zero-filling bytes that were zero already (high bytes of synced_through)
            # leaves the batch intact.
            assert entries == everything and damage is None, cut
            continue
        assert entries == before_last, cut
        if cut == start and zero_fill:
            assert damage is None  # indistinguishable from a preallocated, unwritten tail
        elif cut > start:
            assert damage is not None and damage.cut_offset == start, cut
        if cut % 4 and cut not in (start, start + 1, end - 1):
            continue
        # The log continues cleanly after the cut, and a second open finds nothing to cut.
        with SegmentedLog.open(work, segment_size=SEGMENT_SIZE) as log:
            log.append(make_entries(log.last_index + 1, 2, term=2))
        entries, damage = reopen_entries(work)
        assert damage is None and entries[: len(before_last)] == before_last
        assert [e[0] for e in entries] == list(range(1, len(before_last) + 3))


def test_flip_any_byte_of_the_last_batch(tmp_path: pathlib.Path) -> None:
    pristine = tmp_path / "pristine"
    everything = build(pristine, [2, 5, 3])
    path, start, end = last_batch_span(pristine, 3)
    work = tmp_path / "work"
    shutil.copytree(pristine, work)
    data = path.read_bytes()
    for offset in range(start, end):
        (work / path.name).write_bytes(data)
        flip_byte(work / path.name, offset)
        entries, damage = reopen_entries(work)
        assert entries == everything[:-3], offset
        assert damage is not None and damage.cut_offset == start, offset


@pytest.mark.parametrize("zeros", [1, 2, 3, 4, 40])
def test_a_few_zero_bytes_after_the_data_are_a_clean_end(
    tmp_path: pathlib.Path, zeros: int
) -> None:
    """Preallocated space may end less than a length word after the data."""
    everything = build(tmp_path, [2, 3])
    path = segment_files(tmp_path)[-1]
    os.truncate(path, path.stat().st_size + zeros)
    entries, damage = reopen_entries(tmp_path, preallocate=False)
    assert entries == everything and damage is None


def test_non_zero_garbage_after_the_data_is_cut(tmp_path: pathlib.Path) -> None:
    everything = build(tmp_path, [4, 4])
    path = segment_files(tmp_path)[-1]
    with open(path, "ab") as file:
        file.write(bytes(50) + b"\x01garbage")
    entries, damage = reopen_entries(tmp_path)
    assert entries == everything
    assert damage is not None and damage.reason == "non-zero bytes in unwritten space"


def test_damage_before_a_batch_that_proves_it_was_synced_is_corruption(
    tmp_path: pathlib.Path,
) -> None:
    """The batch after the damage recorded that the damaged entries had been fsynced."""
    build(tmp_path, [3, 3, 3])
    path, start, _end = last_batch_span(tmp_path, 6)  # the middle batch starts here
    flip_byte(path, start + 30)
    with pytest.raises(WalCorruption) as info:
        SegmentedLog.open(tmp_path)
    assert info.value.path == str(path)
    assert info.value.offset == start
    assert "had been fsynced" in str(info.value) and path.name in str(info.value)
    assert path.stat().st_size == _end  # nothing was cut


def test_damage_before_batches_never_synced_is_a_torn_tail(tmp_path: pathlib.Path) -> None:
    """Without an fsync in between, a later batch can reach the disk before an earlier one."""
    everything = build(tmp_path, [3, 3, 3], sync=False)
    path, start, _end = last_batch_span(tmp_path, 6)
    flip_byte(path, start + 30)
    entries, damage = reopen_entries(tmp_path)
    assert entries == everything[:3]
    assert damage is not None and damage.dropped_entries == 3


def multi_segment_log(directory: pathlib.Path) -> list[tuple]:
    with SegmentedLog.open(directory, segment_size=700) as log:
        for _ in range(12):
            log.append(make_entries(log.last_index + 1, 3, size=30), sync=False)
        assert len(log.segments()) >= 3
        return as_tuples(log.read_range(1, log.last_index + 1))


def test_corruption_in_a_sealed_segment_is_named_on_read(tmp_path: pathlib.Path) -> None:
    multi_segment_log(tmp_path)
    sealed = segment_files(tmp_path)[1]
    offset = HEADER_SIZE + 20
    flip_byte(sealed, offset)
    # The sidecar still matches (open does not read sealed data), reads check every crc.
    with SegmentedLog.open(tmp_path, segment_size=700) as log:
        first = int(sealed.stem)
        with pytest.raises(WalCorruption) as info:
            log.get(first)
        assert (info.value.path, info.value.offset) == (str(sealed), HEADER_SIZE)
        with pytest.raises(WalCorruption) as info:
            list(log.read_range(1, log.last_index + 1))
        assert info.value.path == str(sealed) and info.value.offset == HEADER_SIZE
        assert log.get(first - 1) is not None  # the neighbours are fine


def test_corruption_in_a_sealed_segment_without_sidecar_stops_the_open(
    tmp_path: pathlib.Path,
) -> None:
    multi_segment_log(tmp_path)
    sealed = segment_files(tmp_path)[1]
    size = sealed.stat().st_size
    flip_byte(sealed, size - COMMIT_SIZE - 5)
    sealed.with_suffix(".idx").unlink()
    with pytest.raises(WalCorruption) as info:
        SegmentedLog.open(tmp_path, segment_size=700)
    assert info.value.path == str(sealed)
    assert "sealed segment" in info.value.reason
    assert HEADER_SIZE <= info.value.offset < size
    assert sealed.stat().st_size == size  # never cut


def test_a_truncated_sealed_segment_is_corruption(tmp_path: pathlib.Path) -> None:
    multi_segment_log(tmp_path)
    sealed = segment_files(tmp_path)[0]
    os.truncate(sealed, sealed.stat().st_size - 3)
    with pytest.raises(WalCorruption) as info:
        SegmentedLog.open(tmp_path, segment_size=700)
    assert info.value.path == str(sealed)


def test_bad_segment_header_is_named(tmp_path: pathlib.Path) -> None:
    multi_segment_log(tmp_path)
    sealed = segment_files(tmp_path)[1]
    flip_byte(sealed, 3)
    with pytest.raises(WalCorruption, match="bad segment magic") as info:
        SegmentedLog.open(tmp_path, segment_size=700)
    assert (info.value.path, info.value.offset) == (str(sealed), 0)


def test_a_missing_middle_segment_is_a_gap(tmp_path: pathlib.Path) -> None:
    multi_segment_log(tmp_path)
    middle = segment_files(tmp_path)[1]
    middle.unlink()
    middle.with_suffix(".idx").unlink()
    with pytest.raises(WalCorruption, match="starts at"):
        SegmentedLog.open(tmp_path, segment_size=700)


def test_stale_or_damaged_sidecars_are_rebuilt(tmp_path: pathlib.Path) -> None:
    everything = multi_segment_log(tmp_path)
    sidecars = sorted(tmp_path.glob("*.idx"))
    flip_byte(sidecars[0], 10)  # head checksum
    flip_byte(sidecars[1], sidecars[1].stat().st_size - 2)  # arrays checksum
    with SegmentedLog.open(tmp_path, segment_size=700) as log:
        assert as_tuples(log.read_range(1, log.last_index + 1)) == everything
        assert [log.get(i) is not None for i in range(1, log.last_index + 1)] == [True] * len(
            everything
        )
    with SegmentedLog.open(tmp_path, segment_size=700) as log:
        assert as_tuples(log.read_range(1, log.last_index + 1)) == everything


def test_debris_is_removed_and_readonly_changes_nothing(tmp_path: pathlib.Path) -> None:
    everything = build(tmp_path, [3, 3])
    (tmp_path / "00000000000000000099.wal.tmp").write_bytes(b"half a segment")
    path = segment_files(tmp_path)[-1]
    with open(path, "ab") as file:
        file.write(b"\x10\x00\x00\x00torn")
    size = path.stat().st_size
    with SegmentedLog.open(tmp_path, readonly=True) as log:
        assert as_tuples(log.read_range(1, 7)) == everything
        assert log.tail_damage is not None
    assert path.stat().st_size == size
    assert (tmp_path / "00000000000000000099.wal.tmp").exists()
    entries, damage = reopen_entries(tmp_path)
    assert entries == everything and damage is not None
    assert not (tmp_path / "00000000000000000099.wal.tmp").exists()


def test_segments_without_metadata_are_refused(tmp_path: pathlib.Path) -> None:
    build(tmp_path, [2])
    (tmp_path / META_NAME).unlink()
    with pytest.raises(WalCorruption, match="without the log's metadata"):
        SegmentedLog.open(tmp_path)


def test_damaged_metadata_is_named(tmp_path: pathlib.Path) -> None:
    build(tmp_path, [2])
    flip_byte(tmp_path / META_NAME, 20)
    with pytest.raises(WalCorruption, match="metadata checksum") as info:
        SegmentedLog.open(tmp_path)
    assert info.value.path == str(tmp_path / META_NAME)


def test_a_compaction_interrupted_before_deleting_segments_finishes_on_open(
    tmp_path: pathlib.Path,
) -> None:
    everything = multi_segment_log(tmp_path)
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".wal", ".idx")}
    with SegmentedLog.open(tmp_path, segment_size=700) as log:
        log.compact_through(20)
    for name, data in saved.items():  # as if the crash came right after wal.meta was replaced
        if not (tmp_path / name).exists():
            (tmp_path / name).write_bytes(data)
    with SegmentedLog.open(tmp_path, segment_size=700) as log:
        assert log.first_index == 21
        assert as_tuples(log.read_range(21, log.last_index + 1)) == everything[20:]
        assert all(int(p.stem) + 0 > 0 for p in segment_files(tmp_path))
        assert segment_files(tmp_path)[0].name == log.segments()[0].path.name
        assert log.segments()[0].first_index <= 21 <= log.segments()[0].last_index


def test_readonly_open_reads_missing_segments_as_holes(tmp_path: pathlib.Path) -> None:
    everything = multi_segment_log(tmp_path)
    files = segment_files(tmp_path)
    for lost in (files[0], files[2]):
        lost.unlink()
        lost.with_suffix(".idx").unlink()
    gap_first, gap_last = int(files[2].stem), int(files[3].stem) - 1
    with SegmentedLog.open(tmp_path, readonly=True) as log:
        assert log.gaps == [(1, int(files[1].stem) - 1), (gap_first, gap_last)]
        present = {e[0] for e in as_tuples(log.read_range(1, log.last_index + 1))}
        missing = set(range(1, int(files[1].stem))) | set(range(gap_first, gap_last + 1))
        assert present == {e[0] for e in everything} - missing
        assert log.get(1) is None and log.get(gap_first) is None
        assert log.get(gap_last + 1) is not None
    with pytest.raises(WalCorruption, match="are missing"):
        SegmentedLog.open(tmp_path, segment_size=700)
