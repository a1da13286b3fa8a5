"""The log storage interface the Raft core reads through, and an in-memory implementation.

The core only *reads* storage (:class:`LogReader`); it never writes it. Writes are effects in
a ``Ready`` (truncate after an index, append entries) that the caller performs through
:class:`LogStorage`, the shape of ``wal.SegmentedLog`` (``append``, ``get``, ``read_range``,
``truncate_after``, ``compact_through``, ``reset``). Entries the caller has not yet reported
durable are held by the core itself (see ``consensus.raftlog``), so storage only ever needs
to answer for what it holds.

Indexes start at 1; index 0 is the empty log's sentinel with term 0. After compaction the
*snapshot boundary* is ``first_index - 1``: ``term_at(first_index - 1)`` still answers with
the term of the last compacted entry, since the core needs it for the consistency check of
the first entry after the boundary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from consensus.messages import Entry


class LogReader(Protocol):
    """What the core reads. ``entries`` streams, so a follower far behind is caught up from
    storage batch by batch without the log ever being loaded onto the heap."""

    @property
    def first_index(self) -> int:
        """The first index still held (the snapshot boundary + 1)."""
        ...

    @property
    def last_index(self) -> int:
        """The last index held; the snapshot boundary when no entries are held."""
        ...

    @property
    def last_term(self) -> int: ...

    def term_at(self, index: int) -> int | None:
        """The term at ``index`` for first_index - 1 <= index <= last_index, else None."""
        ...

    def entries(self, start: int, stop: int, max_bytes: int) -> Iterator[Entry]:
        """Entries ``start <= index < stop`` in order, lazily, stopping before the total
        ``Entry.size`` would pass ``max_bytes`` (but always yielding at least one)."""
        ...


class LogStorage(LogReader, Protocol):
    """What the caller writes through when it carries out a Ready (the WAL's shape)."""

    def append(self, entries: Sequence[Entry]) -> None: ...

    def get(self, index: int) -> Entry: ...

    def read_range(self, start: int, stop: int) -> Iterator[Entry]: ...

    def truncate_after(self, index: int) -> None: ...

    def compact_through(self, index: int) -> None: ...

    def reset(self, index: int, term: int) -> None:
        """Discard the whole log; it continues after a snapshot ending at (index, term)."""
        ...


class MemoryLog:
    """A :class:`LogStorage` in a Python list, for the simulator and unit tests.

    It checks what the WAL will check: appends continue the log exactly, truncation never
    cuts into the compacted prefix.
    """

    __slots__ = ("_compacted_index", "_compacted_term", "_entries")

    def __init__(
        self, entries: Sequence[Entry] = (), *, compacted_index: int = 0, compacted_term: int = 0
    ) -> None:
        self._compacted_index = compacted_index
        self._compacted_term = compacted_term
        self._entries: list[Entry] = []
        if entries:
            self.append(entries)

    @property
    def first_index(self) -> int:
        return self._compacted_index + 1

    @property
    def last_index(self) -> int:
        return self._compacted_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._compacted_term

    def term_at(self, index: int) -> int | None:
        if index == self._compacted_index:
            return self._compacted_term
        position = index - self._compacted_index - 1
        if 0 <= position < len(self._entries):
            return self._entries[position].term
        return None

    def entries(self, start: int, stop: int, max_bytes: int) -> Iterator[Entry]:
        if start < self.first_index:
            raise IndexError(f"entry {start} is compacted (first index {self.first_index})")
        stop = min(stop, self.last_index + 1)
        budget = max_bytes
        base = self._compacted_index + 1
        for position in range(start - base, stop - base):
            entry = self._entries[position]
            budget -= entry.size
            if budget < 0 and position != start - base:
                return
            yield entry

    def get(self, index: int) -> Entry:
        position = index - self._compacted_index - 1
        if not 0 <= position < len(self._entries):
            raise IndexError(f"no entry {index} (held: {self.first_index}..{self.last_index})")
        return self._entries[position]

    def read_range(self, start: int, stop: int) -> Iterator[Entry]:
        """Entries ``start <= index < stop`` with no size limit."""
        return self.entries(start, stop, max_bytes=1 << 62)

    def append(self, entries: Sequence[Entry]) -> None:
        expected = self.last_index + 1
        for entry in entries:
            if entry.index != expected:
                raise ValueError(f"append expected index {expected}, got {entry.index}")
            expected += 1
        self._entries.extend(entries)

    def truncate_after(self, index: int) -> None:
        if index < self._compacted_index:
            raise ValueError(
                f"cannot truncate after {index}: entries up to {self._compacted_index} are "
                "compacted"
            )
        del self._entries[index - self._compacted_index :]

    def compact_through(self, index: int) -> None:
        if index <= self._compacted_index:
            return
        if index > self.last_index:
            raise ValueError(f"cannot compact through {index}: last index is {self.last_index}")
        term = self.term_at(index)
        assert term is not None
        del self._entries[: index - self._compacted_index]
        self._compacted_index = index
        self._compacted_term = term

    def reset(self, index: int, term: int) -> None:
        if index < self._compacted_index:
            raise ValueError(
                f"cannot reset to {index}: below the compacted prefix {self._compacted_index}"
            )
        self._entries.clear()
        self._compacted_index = index
        self._compacted_term = term

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MemoryLog({self.first_index}..{self.last_index}, last_term={self.last_term})"
