"""WalLogStorage: the core's LogStorage over a real wal.SegmentedLog in a temporary directory,
including a node that restarts from the WAL."""

from __future__ import annotations

import pathlib
import random
import types

from raft_helpers import commands, entries

from consensus.config import RaftConfig
from consensus.messages import Entry, EntryKind
from consensus.node import RaftNode
from consensus.ready import HardState, Ready
from consensus.wal_storage import WalLogStorage, from_wal, to_wal
from wal.log import SegmentedLog


def test_entry_kinds_are_the_wals() -> None:
    import wal.entry

    assert EntryKind is wal.entry.EntryKind
    assert (EntryKind.COMMAND, EntryKind.NOOP, EntryKind.CONFIGURATION) == (0, 1, 2)
    entry = Entry(3, 2, int(EntryKind.NOOP), 99, b"x")
    assert from_wal(to_wal(entry)) == entry


def test_the_adapter_reads_and_writes_a_segmented_log(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path / "log", segment_size=4096) as wal:
        storage = WalLogStorage(wal)
        assert (storage.first_index, storage.last_index, storage.last_term) == (1, 0, 0)
        assert storage.term_at(0) == 0 and storage.term_at(1) is None
        items = [Entry(i, 1 + i // 50, 0, i, bytes(100)) for i in range(1, 201)]
        for start in range(0, 200, 10):
            storage.append(items[start : start + 10])
        assert len(wal.segments()) > 1  # spread over several segment files
        assert (storage.last_index, storage.last_term, storage.term_at(60)) == (200, 5, 2)
        assert storage.term_at(201) is None
        assert list(storage.read_range(1, 201)) == items
        assert storage.get(77) == items[76]
        # Streaming: a generator that stops at max_bytes (at least one entry).
        stream = storage.entries(10, 201, max_bytes=5 * items[0].size)
        assert isinstance(stream, types.GeneratorType)
        assert [e.index for e in stream] == [10, 11, 12, 13, 14]
        assert [e.index for e in storage.entries(10, 201, max_bytes=1)] == [10]
        storage.truncate_after(120)
        assert storage.last_index == 120
        storage.compact_through(50)
        assert storage.first_index == 51 and storage.term_at(50) == 2
    with SegmentedLog.open(tmp_path / "log", segment_size=4096) as wal:
        storage = WalLogStorage(wal)
        assert (storage.first_index, storage.last_index) == (51, 120)
        assert list(storage.read_range(51, 121)) == items[50:120]


def carry_out(node: RaftNode, storage: WalLogStorage, ready: Ready, now: int) -> Ready:
    """A single-node caller: write, report persisted, apply; until there is nothing left."""
    applied: list[Entry] = []
    while True:
        if ready.truncate_after is not None:
            storage.truncate_after(ready.truncate_after)
        if ready.entries:
            storage.append(ready.entries)
            ready = node.persisted(ready.entries[-1].index, ready.entries[-1].term, now)
            continue
        if ready.committed:
            applied.extend(ready.committed)
            ready = node.applied(ready.committed[-1].index, {}, now)
            continue
        ready.committed = applied
        return ready


def test_a_node_on_the_wal_restarts_from_it(tmp_path: pathlib.Path) -> None:
    config = RaftConfig("n1", ("n1",))
    with SegmentedLog.open(tmp_path / "log") as wal:
        storage = WalLogStorage(wal)
        node = RaftNode(config, storage, HardState(), random.Random(1), 0)
        carry_out(node, storage, node.tick(1000), 1000)
        assert node.is_leader and node.term == 1
        done = carry_out(node, storage, node.propose(commands("a", "b", "c"), 1001), 1001)
        assert [e.payload for e in done.committed] == [b"a", b"b", b"c"]
        hard = node.hard_state
    with SegmentedLog.open(tmp_path / "log") as wal:
        storage = WalLogStorage(wal)
        node = RaftNode(config, storage, hard, random.Random(2), 5000)
        assert node.log.last_index == 4 and node.term == 1
        done = carry_out(node, storage, node.tick(6000), 6000)
        assert node.is_leader and node.term == 2
        # Everything is committed again (through the new no-op) and re-applied in order.
        assert [e.index for e in done.committed] == [1, 2, 3, 4, 5]
        assert [e.payload for e in done.committed[1:4]] == [b"a", b"b", b"c"]
        assert done.committed[4].timestamp >= done.committed[3].timestamp


def test_the_adapter_stores_what_the_core_hands_out(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path / "log") as wal:
        storage = WalLogStorage(wal, sync=False)
        storage.append(entries(1, 1, 2))
        assert storage.sync() == 3
        assert [e.term for e in storage.read_range(1, 4)] == [1, 1, 2]
