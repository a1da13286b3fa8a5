"""What ``/log`` serves from: a node's WAL, read safely beside its writer, and its snapshots.

:class:`WalSource` reads a :class:`~consensus.shell.node_storage.SharedLog` (the lock the log
writer takes for every call) in bounded batches: each batch is read whole under the lock and
sent after it is released, so a slow or vanished HTTP client never holds up the writer.

Only committed entries may be served. *How far* is a callable, because it differs:

* On a Raft node it is :class:`RaftServable`: the node's commit index, but only once the
  WAL's last entry carries the node's current term. A follower's core may learn a commit
  index before its log writer has replaced a stale, uncommitted tail with the leader's
  entries; while that tail is in the WAL, reading "up to the commit index" would serve it.
  When the WAL's last entry has the current term, Raft's log matching says the WAL equals
  that term's leader's log up to there, so everything up to ``min(commit, last)`` is
  committed. The answer only ever grows: committed entries never change.
* On a follower it is the last index it applied: it only ever holds committed entries.
"""

from __future__ import annotations

import itertools
import pathlib
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from wal.snapshot import SnapshotMeta, SnapshotStore


class Bounds(NamedTuple):
    first: int  # first index in the log (one past the compaction base)
    last: int  # last index written
    commit: int  # highest index that may be served


class SharedLogLike(Protocol):
    """A SegmentedLog behind a lock (``consensus.shell.node_storage.SharedLog``)."""

    lock: Any

    def __getattr__(self, name: str) -> Any: ...


class RaftServable:
    """How far a Raft node may serve; fed the node's published (term, commit) state."""

    def __init__(self, state: Callable[[], tuple[int, int]]) -> None:
        self._state = state
        self._served = 0
        self._lock = threading.Lock()

    def __call__(self, last_index: int, last_term: int) -> int:
        term, commit = self._state()
        with self._lock:
            self._served = max(self._served, safe_limit(term, commit, last_index, last_term))
            return min(self._served, last_index)


def safe_limit(term: int, commit: int, last_index: int, last_term: int) -> int:
    """The highest WAL index known committed (0 if none can be vouched for now)."""
    if last_term != term or term == 0:
        return 0
    return min(commit, last_index)


class WalSource:
    """Reads a shared log for the server; `servable(last_index, last_term)` bounds it."""

    def __init__(
        self,
        servable: Callable[[int, int], int],
        snapshot_dir: pathlib.Path | None = None,
        shared: SharedLogLike | None = None,
    ) -> None:
        self._servable = servable
        self._snapshot_dir = snapshot_dir
        self._shared = shared

    def attach(self, shared: SharedLogLike) -> None:
        """The node (re)opened its log: read this one from now on."""
        self._shared = shared

    def bounds(self) -> Bounds:
        shared = self._require()
        with shared.lock:
            first, last = shared.first_index, shared.last_index
            last_term = shared.term_at(last)
        return Bounds(first, last, self._servable(last, last_term))

    def term_at(self, index: int) -> int | None:
        """The term at `index` (the base's term at the compaction base), None if compacted."""
        shared = self._require()
        with shared.lock:
            if index < shared.first_index - 1 or index > shared.last_index:
                return None
            return int(shared.term_at(index))

    def read_frames(self, start: int, stop: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` raw frames from `start` below `stop`, read under the lock.
        IndexError when `start` was compacted."""
        shared = self._require()
        with shared.lock:
            frames = shared.read_range_raw(start, stop)
            try:
                return list(itertools.islice(frames, limit))
            finally:
                frames.close()

    def latest_snapshot(self) -> tuple[SnapshotStore, SnapshotMeta] | None:
        if self._snapshot_dir is None or not self._snapshot_dir.is_dir():
            return None
        store = SnapshotStore(self._snapshot_dir)
        meta = store.latest()
        return None if meta is None else (store, meta)

    def _require(self) -> SharedLogLike:
        shared = self._shared
        if shared is None:
            raise SourceUnavailable("the node's log is not open yet")
        return shared


class SourceUnavailable(RuntimeError):
    """The log cannot be read right now (the node is starting or stopping)."""
