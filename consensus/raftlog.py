"""RaftLog: the core's view of its log, i.e. durable storage plus the *unstable* tail of entries
the core has handed to the caller for writing but the caller has not yet reported durable.

Theory of operation
-------------------
The core never writes storage. When it appends (a leader's proposals, a follower's accepted
entries) the entries go to the unstable tail, visible to every read at once, and are handed to
the caller by :meth:`take_writes` as a Ready's ``truncate_after`` + ``entries``. The caller
writes them (in Ready order), syncs, and reports ``persisted(index, term)``; only then does
:meth:`persisted` move the boundary (``durable_index``) and drop them from memory. A leader
counts itself in a commit majority only up to ``durable_index``; a follower acknowledges
entries only up to it.

A conflict below the boundary (a follower overwriting a stale suffix it had already made
durable) moves the boundary down at once: everything from the conflict on is unstable again,
and the stale storage suffix is shadowed until the caller truncates it.

An installed snapshot resets the log (:meth:`reset`): everything is dropped, and until the
caller has reset its storage the core answers for the snapshot boundary itself (the *floor*),
so no stale storage entry is ever seen.

``persisted(index, term)`` names the term as well as the index, so a late acknowledgement of a
write whose entries were since truncated is recognised and ignored: two entries with the same
index and term are the same entry, with the same prefix (log matching).
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.errors import SafetyViolation
from consensus.log import LogReader
from consensus.messages import Entry


class RaftLog:
    __slots__ = (
        "_handed_out",
        "_write_from",
        "floor_index",
        "floor_term",
        "offset",
        "storage",
        "unstable",
    )

    def __init__(self, storage: LogReader) -> None:
        self.storage = storage
        # Everything storage holds at start-up is durable: it is what survived.
        self.offset = storage.last_index + 1  # index of unstable[0]
        self.unstable: list[Entry] = []
        self._handed_out = storage.last_index  # the last index the caller was told to write
        self._write_from: int | None = None  # lowest index changed since take_writes
        # The boundary of the last installed snapshot (-1: none); see reset().
        self.floor_index = -1
        self.floor_term = 0

    # ------------------------------------------------------------------ reads

    @property
    def first_index(self) -> int:
        return max(self.storage.first_index, self.floor_index + 1)

    @property
    def last_index(self) -> int:
        return self.offset + len(self.unstable) - 1

    @property
    def last_term(self) -> int:
        if self.unstable:
            return self.unstable[-1].term
        term = self.term_at(self.offset - 1)
        assert term is not None, "storage lost the entry at the durable boundary"
        return term

    @property
    def durable_index(self) -> int:
        """Entries up to here are known to be durable (reported by the caller)."""
        return self.offset - 1

    def term_at(self, index: int) -> int | None:
        """The term at ``index``; None if compacted away or beyond the end."""
        if index >= self.offset:
            position = index - self.offset
            return self.unstable[position].term if position < len(self.unstable) else None
        if index <= self.floor_index:
            return self.floor_term if index == self.floor_index else None
        return self.storage.term_at(index)

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at (last_index, last_term) at least as up to date as this one?"""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def slice(self, start: int, stop: int, max_entries: int, max_bytes: int) -> list[Entry]:
        """Entries ``start <= index < stop``, at most ``max_entries`` and about ``max_bytes``
        (always at least one entry when the range is not empty)."""
        stop = min(stop, self.last_index + 1, start + max_entries)
        if start >= stop:
            return []
        out: list[Entry] = []
        budget = max_bytes
        if start < self.offset:
            for entry in self.storage.entries(start, min(stop, self.offset), max_bytes):
                out.append(entry)
                budget -= entry.size
            if budget <= 0 or out[-1].index + 1 < min(stop, self.offset):
                return out
        position = max(start, self.offset) - self.offset
        end = stop - self.offset
        while position < end:
            entry = self.unstable[position]
            budget -= entry.size
            if budget < 0 and out:
                break
            out.append(entry)
            position += 1
        return out

    def last_index_of_term(self, term: int, at_or_below: int) -> int | None:
        """The last index <= ``at_or_below`` holding ``term``, or None. Terms never decrease
        along a log, so this is a binary search: a leader finds where a follower's
        conflicting term ends in O(log n) reads, not a scan of thousands of entries."""
        lo, hi = self.first_index - 1, min(at_or_below, self.last_index)
        if hi < lo:
            return None
        first = self.term_at(lo)
        if first is None or first > term:
            return None
        # invariant: term_at(lo) <= term; find the largest such index
        while lo < hi:
            mid = (lo + hi + 1) // 2
            mid_term = self.term_at(mid)
            assert mid_term is not None
            if mid_term <= term:
                lo = mid
            else:
                hi = mid - 1
        return lo if self.term_at(lo) == term else None

    def first_index_of_term(self, index: int) -> int:
        """The first index of the term that ``index`` holds (within what is not compacted)."""
        term = self.term_at(index)
        assert term is not None
        lo, hi = self.first_index, index
        while lo < hi:
            mid = (lo + hi) // 2
            mid_term = self.term_at(mid)
            assert mid_term is not None
            if mid_term >= term:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # ------------------------------------------------------------------ writes (as effects)

    def append(self, entries: Sequence[Entry], commit_index: int) -> None:
        """Put ``entries`` (contiguous) in the log, replacing whatever is at and after the
        first one. The caller has checked they conflict with nothing committed; this
        re-checks, since cutting a committed entry would break state-machine safety."""
        if not entries:
            return
        start = entries[0].index
        if start > self.last_index + 1:
            raise SafetyViolation(f"append at {start} leaves a gap after {self.last_index}")
        if start <= commit_index:
            raise SafetyViolation(f"append at {start} would overwrite committed {commit_index}")
        if start >= self.offset:
            del self.unstable[start - self.offset :]
            self.unstable.extend(entries)
        else:
            self.offset = start
            self.unstable = list(entries)
        if self._write_from is None or start < self._write_from:
            self._write_from = start

    def take_writes(self) -> tuple[int | None, list[Entry]]:
        """What the caller must write: (truncate after this index or None, entries to append)."""
        start = self._write_from
        if start is None:
            return None, []
        truncate_after = start - 1 if start <= self._handed_out else None
        entries = self.unstable[start - self.offset :]
        self._handed_out = self.last_index
        self._write_from = None
        return truncate_after, entries

    def persisted(self, index: int, term: int) -> bool:
        """The caller made entries up to (index, term) durable. False for a late or unknown
        acknowledgement, which changes nothing."""
        if index < self.offset or index > self._handed_out:
            return False
        if self._write_from is not None and index >= self._write_from:
            return False
        if self.term_at(index) != term:
            return False
        del self.unstable[: index - self.offset + 1]
        self.offset = index + 1
        return True

    def reset(self, index: int, term: int) -> None:
        """An installed snapshot ending at (index, term) replaces the whole log."""
        self.floor_index, self.floor_term = index, term
        self.offset = index + 1
        self.unstable = []
        self._handed_out = index
        self._write_from = None

    def __repr__(self) -> str:
        return (
            f"RaftLog(first={self.first_index}, durable={self.durable_index}, "
            f"last={self.last_index}, last_term={self.last_term})"
        )
