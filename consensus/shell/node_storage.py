"""NodeStorage: a node's log and hard state on disk, shared by the log writer and the core.

The log writer actor (``wal.writer_actor``) is the only writer; the Raft core, in the active
role actor, reads the same log (terms for consistency checks, entries to stream to a lagging
follower). Two threads touch one ``SegmentedLog``, so :class:`SharedLog` serialises them with
a lock: the writer's calls take it, and the core reads through :class:`LockedLogReader`, which
reads a bounded batch under it. ``sync`` (the fsync of ``group`` commit) runs outside the
lock: it only flushes the open segment and raises the durable index, so reads need not wait
for the disk. Each ``sync`` is timed for the node's ``coterie_wal_fsync_seconds`` histogram.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from actors import Props
from consensus.messages import Entry
from consensus.ready import HardState
from consensus.shell.settings import NodeSettings
from consensus.wal_storage import WalLogStorage
from wal.hardstate import HardStateStore
from wal.log import SegmentedLog
from wal.writer_actor import HARD_STATE_NAME, LogWriter, WriterConfig

_UNLOCKED = frozenset({"sync"})


class SharedLog:
    """A ``SegmentedLog`` proxy whose methods run under one lock (``sync`` excepted)."""

    def __init__(
        self,
        opener: Callable[[], SegmentedLog],
        on_sync: Callable[[float], None] | None = None,
    ) -> None:
        self._opener = opener
        self.lock = threading.RLock()
        self._log = opener()
        self._on_sync = on_sync

    def reopen(self, *_args: Any, **_kwargs: Any) -> SharedLog:
        """The writer's ``open_log``: the open log, or a fresh open after it was closed (a
        restarted writer), which runs recovery again."""
        with self.lock:
            if self.closed:
                self._log = self._opener()
        return self

    @property
    def closed(self) -> bool:
        return bool(self._log._closed)  # the log has no public flag for it

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._log, name)
        if name == "sync" and self._on_sync is not None:
            return self._timed_sync
        if not callable(attribute) or name in _UNLOCKED:
            return attribute
        lock = self.lock

        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return attribute(*args, **kwargs)

        return locked

    def _timed_sync(self) -> int:
        started = time.perf_counter()
        durable = self._log.sync()
        assert self._on_sync is not None
        self._on_sync(time.perf_counter() - started)
        return int(durable)


class LockedLogReader:
    """The core's view (``consensus.log.LogReader``) of a :class:`SharedLog`."""

    def __init__(self, shared: SharedLog) -> None:
        self._shared = shared
        self._storage = WalLogStorage(shared)  # type: ignore[arg-type]

    @property
    def first_index(self) -> int:
        with self._shared.lock:
            return self._storage.first_index

    @property
    def last_index(self) -> int:
        with self._shared.lock:
            return self._storage.last_index

    @property
    def last_term(self) -> int:
        with self._shared.lock:
            return self._storage.last_term

    def term_at(self, index: int) -> int | None:
        with self._shared.lock:
            return self._storage.term_at(index)

    def entries(self, start: int, stop: int, max_bytes: int) -> Iterator[Entry]:
        # Read the whole (bounded) batch under the lock: a lazy read interleaved with the
        # writer's truncation could otherwise see a cut segment.
        with self._shared.lock:
            batch = list(self._storage.entries(start, stop, max_bytes))
        return iter(batch)


class NodeStorage:
    def __init__(self, settings: NodeSettings, shared: SharedLog, hard_state: HardState) -> None:
        self.settings = settings
        self.shared = shared
        self.log = LockedLogReader(shared)
        self.hard_state = hard_state

    @classmethod
    def open(
        cls, settings: NodeSettings, on_sync: Callable[[float], None] | None = None
    ) -> NodeStorage:
        directory = settings.data_dir / "log"
        directory.mkdir(parents=True, exist_ok=True)
        shared = SharedLog(
            lambda: SegmentedLog.open(directory, segment_size=settings.segment_bytes), on_sync
        )
        saved = HardStateStore(directory / HARD_STATE_NAME).load()
        return cls(settings, shared, HardState(saved.current_term, saved.voted_for))

    def writer_props(self, report_to: Any) -> Props:
        settings = self.settings
        config = WriterConfig(
            directory=str(settings.data_dir / "log"),
            policy=settings.durability,
            group_interval_ms=settings.group_commit_ms,
            segment_size=settings.segment_bytes,
            open_log=self.shared.reopen,  # type: ignore[arg-type]
        )
        return Props(LogWriter, config, report_to)

    def close(self) -> None:
        with self.shared.lock:
            if not self.shared.closed:
                self.shared.close()
