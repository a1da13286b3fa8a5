"""MemoryLog (the storage model) and RaftLog (storage plus the unstable tail): durability
boundary, writes handed out as effects, persisted reports, term searches."""

from __future__ import annotations

import pytest
from raft_helpers import entries

from consensus.errors import SafetyViolation
from consensus.log import MemoryLog
from consensus.raftlog import RaftLog


def test_memory_log_checks_what_the_wal_checks() -> None:
    log = MemoryLog(entries(1, 1, 2))
    assert (log.first_index, log.last_index, log.last_term) == (1, 3, 2)
    with pytest.raises(ValueError, match="expected index 4"):
        log.append(entries(2, start=5))
    log.compact_through(2)
    assert (log.first_index, log.term_at(2), log.term_at(1)) == (3, 1, None)
    with pytest.raises(ValueError, match="compacted"):
        log.truncate_after(1)
    with pytest.raises(IndexError):
        list(log.entries(1, 4, 100))


def test_memory_log_entries_respect_max_bytes_but_yield_at_least_one() -> None:
    log = MemoryLog(entries(*[1] * 10))
    size = log.get(1).size
    assert len(list(log.entries(1, 11, 3 * size))) == 3
    assert len(list(log.entries(1, 11, 1))) == 1


def test_unstable_entries_are_visible_at_once_and_handed_out_once() -> None:
    storage = MemoryLog(entries(1, 1))
    log = RaftLog(storage)
    log.append(entries(2, 2, start=3), commit_index=0)
    assert (log.last_index, log.durable_index, log.last_term) == (4, 2, 2)
    assert log.take_writes() == (None, entries(2, 2, start=3))
    assert log.take_writes() == (None, [])
    storage.append(entries(2, 2, start=3))
    assert log.persisted(4, 2)
    assert log.durable_index == 4 and log.unstable == []


def test_a_conflict_below_the_durable_boundary_makes_the_suffix_unstable() -> None:
    storage = MemoryLog(entries(1, 1, 1, 1))
    log = RaftLog(storage)
    log.append(entries(3, 3, start=3), commit_index=2)
    assert log.durable_index == 2
    assert [log.term_at(i) for i in range(1, 5)] == [1, 1, 3, 3]  # stale storage is shadowed
    assert log.take_writes() == (2, entries(3, 3, start=3))


def test_appending_over_a_committed_entry_is_a_safety_violation() -> None:
    log = RaftLog(MemoryLog(entries(1, 1, 1)))
    with pytest.raises(SafetyViolation, match="committed"):
        log.append(entries(2, start=2), commit_index=2)
    with pytest.raises(SafetyViolation, match="gap"):
        log.append(entries(2, start=9), commit_index=0)


def test_persisted_reports_that_do_not_match_change_nothing() -> None:
    storage = MemoryLog()
    log = RaftLog(storage)
    log.append(entries(1, 1), commit_index=0)
    log.take_writes()
    assert not log.persisted(2, 7)  # wrong term
    assert not log.persisted(5, 1)  # never handed out
    assert log.durable_index == 0


def test_slices_read_storage_then_the_unstable_tail() -> None:
    storage = MemoryLog(entries(1, 1, 1))
    log = RaftLog(storage)
    log.append(entries(2, 2, start=4), commit_index=0)
    assert [e.index for e in log.slice(2, 6, 10, 1 << 20)] == [2, 3, 4, 5]
    assert [e.index for e in log.slice(2, 6, 2, 1 << 20)] == [2, 3]


def test_term_searches_are_binary_searches_over_monotone_terms() -> None:
    log = RaftLog(MemoryLog(entries(*([1] * 500 + [3] * 500 + [4] * 10))))
    assert log.last_index_of_term(3, 1010) == 1000
    assert log.last_index_of_term(2, 1010) is None
    assert log.last_index_of_term(3, 700) == 700
    assert log.first_index_of_term(800) == 501
    assert log.first_index_of_term(1005) == 1001
