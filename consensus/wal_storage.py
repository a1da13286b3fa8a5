"""WalLogStorage: a ``wal.SegmentedLog`` seen through the core's :class:`~consensus.log.LogStorage`
interface, converting ``wal.Entry`` (the log's record) to and from ``consensus.messages.Entry``
(the wire message) at the boundary.

The two entry classes have the same fields (index, term, kind, timestamp, payload) and the
same kind values; they stay separate classes because one is a registered wire message and the
other a storage record that knows nothing of actors.

What the adapter relies on from ``SegmentedLog``: ``first_index``, ``last_index``,
``last_term``, ``term_at`` (raises IndexError outside ``[first_index - 1, last_index]``),
``get``, ``read_range`` (lazy, streamed from the segment files), ``append(entries, sync=)``,
``sync``, ``truncate_after``, ``compact_through`` and ``reset``.

A log compacted by key (``wal.kv_compaction``) has holes; Raft replication cannot send such a
log, so :meth:`entries` raises :class:`LogGap` naming the log directory and the missing index
rather than sending a follower a batch with a hole in it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from consensus.errors import ConsensusError
from consensus.messages import Entry
from wal.entry import Entry as WalEntry
from wal.log import SegmentedLog


class LogGap(ConsensusError):
    """The WAL lacks an entry inside its index range (a key-compacted log)."""


def to_wal(entry: Entry) -> WalEntry:
    return WalEntry(entry.index, entry.term, entry.kind, entry.timestamp, entry.payload)


def from_wal(entry: WalEntry) -> Entry:
    return Entry(entry.index, entry.term, entry.kind, entry.timestamp, entry.payload)


class WalLogStorage:
    """The core's log storage over a ``SegmentedLog``. ``sync`` is passed to every append:
    True makes each append durable on return; False leaves durability to the caller's group
    commit (:meth:`sync`), after which it reports ``persisted`` to the core."""

    __slots__ = ("sync_appends", "wal")

    def __init__(self, wal: SegmentedLog, *, sync: bool = True) -> None:
        self.wal = wal
        self.sync_appends = sync

    # ------------------------------------------------------------------ LogReader

    @property
    def first_index(self) -> int:
        return self.wal.first_index

    @property
    def last_index(self) -> int:
        return self.wal.last_index

    @property
    def last_term(self) -> int:
        return self.wal.last_term

    def term_at(self, index: int) -> int | None:
        wal = self.wal
        if not wal.first_index - 1 <= index <= wal.last_index:
            return None
        return wal.term_at(index)

    def entries(self, start: int, stop: int, max_bytes: int) -> Iterator[Entry]:
        """Stream ``start <= index < stop`` from the segment files, converting each entry and
        stopping before ``max_bytes`` would be passed (at least one entry always comes)."""
        budget = max_bytes
        expected = start
        for record in self.wal.read_range(start, stop):
            if record.index != expected:
                raise LogGap(f"{self.wal.directory}: entry {expected} is missing from the log")
            entry = from_wal(record)
            budget -= entry.size
            if budget < 0 and expected != start:
                return
            yield entry
            expected += 1

    # ------------------------------------------------------------------ LogStorage

    def get(self, index: int) -> Entry:
        record = self.wal.get(index)
        if record is None:
            raise LogGap(f"{self.wal.directory}: entry {index} is missing from the log")
        return from_wal(record)

    def read_range(self, start: int, stop: int) -> Iterator[Entry]:
        return self.entries(start, stop, max_bytes=1 << 62)

    def append(self, entries: Sequence[Entry]) -> None:
        if entries:
            self.wal.append([to_wal(entry) for entry in entries], sync=self.sync_appends)

    def sync(self) -> int:
        """Make every appended entry durable; returns the durable index."""
        return self.wal.sync()

    def truncate_after(self, index: int) -> None:
        self.wal.truncate_after(index)

    def compact_through(self, index: int) -> None:
        self.wal.compact_through(index)

    def reset(self, index: int, term: int) -> None:
        """Discard the log and continue after a snapshot ending at (index, term)."""
        self.wal.reset(index, term)

    def __repr__(self) -> str:
        return f"WalLogStorage({self.wal.directory}, {self.first_index}..{self.last_index})"
