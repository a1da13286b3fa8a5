"""GroupCommit: when each durability policy fsyncs and what it lets be acknowledged."""

from __future__ import annotations

import pytest

from wal import Durability, GroupCommit


def test_always_syncs_every_append_and_acks_only_synced() -> None:
    group = GroupCommit("always")
    assert group.appended(1, 3, now_ms=0.0) is True
    assert group.acknowledged_index == 0
    assert group.synced(3, now_ms=0.1) == 3
    assert group.deadline_ms() is None
    assert group.appended(4, 4, now_ms=0.2) is True


def test_group_syncs_at_most_once_per_interval() -> None:
    group = GroupCommit(Durability.GROUP, interval_ms=5.0)
    assert group.appended(1, 1, now_ms=100.0) is True  # first ever append: at once
    assert group.synced(1, now_ms=100.0) == 1
    assert group.appended(2, 2, now_ms=101.0) is False
    assert group.deadline_ms() == 105.0
    assert group.appended(3, 7, now_ms=103.0) is False
    assert group.acknowledged_index == 1  # nothing acknowledged before its fsync
    assert group.sync_due(104.9) is False
    assert group.sync_due(105.0) is True
    assert group.synced(7, now_ms=105.0) == 7
    assert group.appended(8, 8, now_ms=200.0) is True  # after a quiet spell: at once


def test_group_configuration_entry_is_due_immediately() -> None:
    group = GroupCommit("group", interval_ms=50.0)
    group.appended(1, 1, now_ms=0.0)
    group.synced(1, now_ms=0.0)
    assert group.appended(2, 3, now_ms=1.0, configuration=True) is True
    assert group.deadline_ms() == float("-inf")
    group.synced(3, now_ms=1.0)
    assert group.appended(4, 4, now_ms=2.0) is False


def test_never_acks_at_once_except_around_configuration() -> None:
    group = GroupCommit("never")
    assert group.appended(1, 5, now_ms=0.0) is False
    assert group.acknowledged_index == 5 and group.deadline_ms() is None
    assert group.appended(6, 8, now_ms=1.0, configuration=True) is True
    assert group.appended(9, 9, now_ms=1.0) is True  # the configuration batch is still unsynced
    assert group.acknowledged_index == 5  # nothing from the configuration batch on
    assert group.synced(9, now_ms=2.0) == 9
    assert group.appended(10, 10, now_ms=3.0) is False


def test_truncation_lowers_both_marks() -> None:
    group = GroupCommit("always")
    group.appended(1, 10, now_ms=0.0)
    group.synced(10, now_ms=0.0)
    group.appended(11, 12, now_ms=0.0, configuration=True)
    group.truncated(8)
    assert (group.last_appended, group.durable_index, group.pending) == (8, 8, False)
    assert group.appended(9, 9, now_ms=1.0) is True
    group.synced(9, 1.0)
    # Re-appending over durable entries (a conflict) also truncates implicitly.
    group.appended(5, 6, now_ms=2.0)
    assert (group.last_appended, group.durable_index) == (6, 4)


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError):
        GroupCommit("sometimes")
    with pytest.raises(ValueError, match="interval_ms"):
        GroupCommit("group", interval_ms=-1)
    group = GroupCommit("always", durable_index=10)
    with pytest.raises(ValueError, match="does not follow"):
        group.appended(12, 12, 0.0)
    with pytest.raises(ValueError, match="empty range"):
        group.appended(11, 10, 0.0)
    with pytest.raises(ValueError, match="beyond the last append"):
        group.synced(11, 0.0)
