"""SegmentedLog API: appends, reads, truncation, compaction, reset, reopen, misuse errors."""

from __future__ import annotations

import itertools
import os
import pathlib

import pytest
from wal_helpers import as_tuples, make_entries, segment_files

from wal import Entry, EntryKind, LogInUse, NotAWal, SegmentedLog, WalError
from wal.format import decode_entry_frame


def fill(log: SegmentedLog, batches: int, per_batch: int, term: int = 1, size: int = 40) -> None:
    for _ in range(batches):
        log.append(make_entries(log.last_index + 1, per_batch, term, size=size), sync=False)


def test_empty_log_positions(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir) as log:
        assert (log.first_index, log.last_index, log.last_term) == (1, 0, 0)
        assert log.term_at(0) == 0
        assert list(log.read_range(1, 10)) == []
        with pytest.raises(IndexError):
            log.get(1)
        with pytest.raises(IndexError):
            log.term_at(1)


def test_append_get_and_stream_across_segments(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        written = []
        for term in (1, 1, 2, 3, 3):
            batch = make_entries(log.last_index + 1, 7, term, size=33)
            log.append(batch, sync=False)
            written.extend(batch)
        assert len(log.segments()) > 3
        assert log.last_index == 35 and log.last_term == 3
        assert [log.get(i) for i in range(1, 36)] == written
        assert list(log.read_range(1, 36)) == written
        assert list(log.read_range(10, 20)) == written[9:19]
        assert list(log.read_range(30, 1000)) == written[29:]  # stop is clamped
        assert [log.term_at(i) for i in (7, 8, 14, 15, 21, 22, 35)] == [1, 1, 1, 2, 2, 3, 3]
        raw = list(log.read_range_raw(5, 9))
        assert [i for i, _ in raw] == [5, 6, 7, 8]
        assert [decode_entry_frame(frame) for _, frame in raw] == written[4:8]
        infos = log.segments()
        assert infos[0].first_index == 1 and all(i.sealed for i in infos[:-1])
        assert not infos[-1].sealed
        for before, after in itertools.pairwise(infos):
            assert before.last_index + 1 == after.first_index


def test_reopen_reads_the_same_log(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir, segment_size=2048) as log:
        fill(log, 20, 5)
        expected = as_tuples(log.read_range(1, 101))
    assert any(p.with_suffix(".idx").exists() for p in segment_files(logdir))
    with SegmentedLog.open(logdir, segment_size=2048) as log:
        assert log.tail_damage is None
        assert (log.first_index, log.last_index) == (1, 100)
        assert as_tuples(log.read_range(1, 101)) == expected
        assert log.get(57) is not None and log.get(57).index == 57
        log.append(make_entries(101, 1))
    with SegmentedLog.open(logdir, segment_size=2048) as log:
        assert log.last_index == 101


def test_append_misuse_is_a_value_error(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir) as log:
        log.append(make_entries(1, 2, term=3))
        with pytest.raises(ValueError, match=r"expected 3\); last_index is 2|\(expected 3\)"):
            log.append(make_entries(4, 1, term=3))
        with pytest.raises(ValueError, match="term 2 below 3"):
            log.append(make_entries(3, 1, term=2))
        with pytest.raises(ValueError, match="at least one"):
            log.append([])
        with pytest.raises(ValueError, match="kind must be"):
            log.append([Entry(3, 3, 999, 0, b"")])
        assert log.last_index == 2  # nothing of a rejected batch was written
        log.append(make_entries(3, 1, term=3))


def test_truncate_after_in_the_middle_of_a_batch_and_across_segments(
    logdir: pathlib.Path,
) -> None:
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        fill(log, 10, 6)
        log.sync()
        segments_before = len(log.segments())
        log.truncate_after(23)  # inside the 4th batch (19..24)
        assert log.last_index == 23 and log.durable_index == 23
        assert len(log.segments()) < segments_before
        assert [e.index for e in log.read_range(1, 100)] == list(range(1, 24))
        log.append(make_entries(24, 3, term=2))
        assert log.last_term == 2 and log.term_at(23) == 1
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        assert log.tail_damage is None
        assert [(e.index, e.term) for e in log.read_range(20, 100)] == [
            (20, 1), (21, 1), (22, 1), (23, 1), (24, 2), (25, 2), (26, 2)
        ]  # fmt: skip


def test_truncate_into_a_sealed_segment_then_append(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir, segment_size=600) as log:
        fill(log, 12, 3)
        first_sealed = log.segments()[0]
        log.truncate_after(first_sealed.last_index)
        assert len(log.segments()) == 1 and not log.segments()[0].sealed
        assert not first_sealed.path.with_suffix(".idx").exists()
        fill(log, 6, 3, term=4)
        total = log.last_index
    with SegmentedLog.open(logdir, segment_size=600) as log:
        assert log.last_index == total and log.last_term == 4
        assert [e.index for e in log.read_range(1, total + 1)] == list(range(1, total + 1))


def test_truncate_bounds(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir) as log:
        fill(log, 2, 5)
        log.truncate_after(50)  # beyond the end: nothing to do
        assert log.last_index == 10
        log.compact_through(4)
        with pytest.raises(ValueError, match="compacted"):
            log.truncate_after(3)
        log.truncate_after(4)  # down to the base: the log is empty after it
        assert (log.first_index, log.last_index, log.last_term) == (5, 4, 1)
        log.append(make_entries(5, 1, term=2))
        assert log.last_term == 2


def test_compact_through_deletes_whole_segments_and_keeps_the_boundary_term(
    logdir: pathlib.Path,
) -> None:
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        fill(log, 8, 5, term=1)
        fill(log, 8, 5, term=2)
        files_before = len(segment_files(logdir))
        log.compact_through(47)
        assert (log.first_index, log.base_index, log.base_term) == (48, 47, 2)
        assert log.term_at(47) == 2
        assert len(segment_files(logdir)) < files_before
        with pytest.raises(IndexError):
            log.get(47)
        with pytest.raises(IndexError, match="compacted"):
            list(log.read_range(40, 50))
        assert [e.index for e in log.read_range(48, 51)] == [48, 49, 50]
        with pytest.raises(ValueError, match="past last_index"):
            log.compact_through(81)
        log.compact_through(30)  # at or below the base: nothing to do
        assert log.first_index == 48
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        assert (log.first_index, log.last_index, log.term_at(47)) == (48, 80, 2)


def test_compact_everything_then_append(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        fill(log, 6, 5)
        log.compact_through(30)
        assert (log.first_index, log.last_index, log.last_term) == (31, 30, 1)
        log.append(make_entries(31, 2, term=5))
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        assert [(e.index, e.term) for e in log.read_range(31, 40)] == [(31, 5), (32, 5)]


def test_reset_after_a_snapshot_install(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        fill(log, 6, 5)
        log.reset(1000, 7)
        assert (log.first_index, log.last_index, log.last_term) == (1001, 1000, 7)
        assert log.durable_index == 1000
        with pytest.raises(IndexError):
            log.get(10)
        log.append(make_entries(1001, 2, term=7))
        with pytest.raises(ValueError, match="below the compaction base"):
            log.reset(500, 7)
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        assert (log.first_index, log.last_index, log.term_at(1000)) == (1001, 1002, 7)
        assert [p.name for p in segment_files(logdir)] == [f"{1001:020d}.wal"]


def test_sync_policy_and_configuration_entries(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir) as log:
        log.append(make_entries(1, 3), sync=False)
        assert log.durable_index == 0
        appended = log.append(make_entries(4, 1, kind=EntryKind.CONFIGURATION), sync=False)
        assert appended.configuration and log.durable_index == 4
        log.append(make_entries(5, 1), sync=False)
        assert log.sync() == 5 and log.durable_index == 5


def test_read_range_is_lazy_and_notices_truncation(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir, segment_size=1024) as log:
        fill(log, 10, 5)
        stream = log.read_range(1, 51)
        assert next(stream).index == 1
        log.truncate_after(20)
        with pytest.raises(WalError, match="truncated"):
            list(stream)
        with pytest.raises(ValueError, match="stop is before start"):
            log.read_range(5, 4)


def test_a_second_writer_is_refused_and_readonly_needs_a_log(
    logdir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    with SegmentedLog.open(logdir) as log:
        log.append(make_entries(1, 2))
        with pytest.raises(LogInUse):
            SegmentedLog.open(logdir)
        with SegmentedLog.open(logdir, readonly=True) as reader:
            assert reader.last_index == 2
            with pytest.raises(WalError, match="read-only"):
                reader.append(make_entries(3, 1))
    with pytest.raises(NotAWal, match="no such log directory"):
        SegmentedLog.open(tmp_path / "missing", readonly=True)
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAWal, match="not a coterie write-ahead log"):
        SegmentedLog.open(tmp_path / "plain", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotAWal, match="not a directory"):
        SegmentedLog.open(tmp_path / "file")


def test_closed_log_refuses_use(logdir: pathlib.Path) -> None:
    log = SegmentedLog.open(logdir)
    log.append(make_entries(1, 1))
    log.close()
    log.close()  # idempotent
    with pytest.raises(WalError, match="closed"):
        log.get(1)


def test_a_failed_write_poisons_the_log(logdir: pathlib.Path) -> None:
    log = SegmentedLog.open(logdir)
    log.append(make_entries(1, 1))
    segment = log._segments[-1]
    os.close(segment.fd)  # the next pwritev fails with EBADF
    segment.fd = os.open(os.devnull, os.O_RDONLY)
    with pytest.raises(WalError, match="append failed"):
        log.append(make_entries(2, 1))
    with pytest.raises(WalError, match="reopen the log"):
        log.append(make_entries(2, 1))
    log.close()
    with SegmentedLog.open(logdir) as again:
        assert again.last_index == 1


def test_preallocation_is_cut_when_a_segment_seals(logdir: pathlib.Path) -> None:
    with SegmentedLog.open(logdir, segment_size=4096) as log:
        fill(log, 25, 4)
        infos = log.segments()
        assert len(infos) > 1
        for info in infos[:-1]:
            assert info.path.stat().st_size == info.size < 4096
        assert infos[-1].path.stat().st_size == 4096 > infos[-1].size


def test_appending_past_many_segments_keeps_a_bounded_number_of_indexes_in_memory(
    tmp_path: pathlib.Path,
) -> None:
    # Regression: a segment sealed while appending kept its offset array for the life of the
    # log (only segments *read* later went through the LRU), so a follower appending a long log
    # grew by 8 bytes per entry. Every sealed segment must be evictable.
    from wal.log import MAX_LOADED_INDEXES

    with SegmentedLog.open(tmp_path / "log", segment_size=1024) as log:
        for start in range(1, 2001, 50):
            log.append(make_entries(start, 50))
        segments = log._segments
        assert len(segments) > 4 * MAX_LOADED_INDEXES
        loaded = [s for s in segments if s.sealed and s.index_loaded]
        assert len(loaded) <= MAX_LOADED_INDEXES
        assert as_tuples(log.read_range(1, 2001)) == as_tuples(make_entries(1, 2000))
