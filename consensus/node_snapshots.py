"""The snapshot entry points of :class:`~consensus.node.RaftNode`: describe a snapshot point,
take note of a snapshot the caller made, pass chunks through (leader and follower), install a
received snapshot, and decide when to ask for a new one.

A mixin of ``RaftNode`` (which holds the state it uses); see ``consensus.snapshots`` for the
whole flow and ``consensus.ready`` for the effects.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING

from consensus.errors import LocalProtocolError
from consensus.follower import Follower
from consensus.leader import Leader
from consensus.messages import ERROR_OUTCOME_UNKNOWN, ERROR_SUPERSEDED, InstallSnapshotResponse
from consensus.snapshots import ChunkRead, ChunkWrite, SnapshotInfo, SnapshotInstall

if TYPE_CHECKING:
    from consensus.node import RaftNode
    from consensus.ready import Ready

    _Base = RaftNode
else:
    _Base = object


class SnapshotEntryPoints(_Base):
    __slots__ = ()

    def snapshot_point(self, index: int) -> SnapshotInfo:
        """What a snapshot of the state machine at applied ``index`` must record: term,
        timestamp and configuration (``size`` and ``crc`` are the caller's to fill in)."""
        low = self.snapshot.index if self.snapshot is not None else self.log.first_index - 1
        if not low <= index <= self.applied_index:
            raise LocalProtocolError(
                f"{self.id}: a snapshot point must be applied and not compacted: "
                f"{index} outside {low}..{self.applied_index}"
            )
        if self.snapshot is not None and index == self.snapshot.index:
            return dataclasses.replace(self.snapshot, size=0, crc=0)
        (entry,) = self.log.slice(index, index + 1, 1, 1 << 62)
        return SnapshotInfo(index, entry.term, self.configs.at(index), 0, 0, entry.timestamp)

    def snapshot_taken(self, info: SnapshotInfo, now: int) -> Ready:
        """The caller made a snapshot durable (from :meth:`snapshot_point`, with its size and
        crc): it becomes the one sent to followers, and the log prefix it covers may go."""
        self._advance_clock(now)
        if info.index > self.applied_index:
            raise LocalProtocolError(
                f"{self.id}: snapshot at {info.index} beyond the applied index {self.applied_index}"
            )
        if self.snapshot is not None and info.index <= self.snapshot.index:
            return self._ready()  # not newer than the one we have
        term = self.log.term_at(info.index)
        if term is not None and term != info.term:
            raise LocalProtocolError(
                f"{self.id}: snapshot at {info.index} names term {info.term}; the log has {term}"
            )
        self.snapshot = info
        self.configs.compact(info.index)
        self._compact_target = max(
            self._compact_target, info.index - self.config.snapshot_trailing_entries
        )
        self._snapshot_asked_at = None
        self._applied_bytes = 0
        return self._ready()

    def snapshot_chunk(self, read: ChunkRead, data: bytes | None, now: int) -> Ready:
        """Leader: the chunk a :class:`ChunkRead` asked for (None: that snapshot is gone)."""
        self._advance_clock(now)
        if isinstance(self.role, Leader):
            self.role.snapshot_chunk(read, data)
        return self._ready()

    def snapshot_written(self, write: ChunkWrite, offset: int, complete: bool, now: int) -> Ready:
        """Follower: after carrying out a :class:`ChunkWrite`, the store holds ``offset``
        bytes of that snapshot durably; ``complete`` once the whole file is finished."""
        self._advance_clock(now)
        role = self.role
        if complete:
            if not isinstance(role, Follower):
                return self._ready()  # no longer following that leader: keep the file only
            if write.index > self._handed_out_index:
                self._install(write)
            offset = write.size
        if write.leader != self.id:
            self.send(
                write.leader,
                InstallSnapshotResponse(
                    self.term,
                    self.id,
                    write.index,
                    write.term,
                    write.offset,
                    offset,
                    complete,
                    role.round_seen if isinstance(role, Follower) else write.round,
                ),
            )
        return self._ready()

    def _install(self, write: ChunkWrite) -> None:
        """Replace the state machine and the log prefix with a received snapshot."""
        info = SnapshotInfo(
            write.index, write.term, write.membership, write.size, write.crc, write.timestamp
        )
        index = info.index
        # A log holding the snapshot's last entry continues it (log matching): keep it, even
        # what is not yet durable, since this node may have acknowledged entries after it.
        # Any other log cannot hold an acknowledged entry past the snapshot: drop it.
        keep = self.log.term_at(index) == info.term
        # Our proposals whose entries the state machine will now never apply one by one:
        # those past what was handed out and covered by the snapshot have an unknown fate;
        # those past the snapshot on a log being reset are gone.
        kept: collections.deque[tuple[int, int, str]] = collections.deque()
        for entry_index, term, request_id in self.pending:
            if entry_index <= self._handed_out_index:
                kept.append((entry_index, term, request_id))
            elif entry_index <= index:
                self.reply(request_id, ERROR_OUTCOME_UNKNOWN)
            elif keep:
                kept.append((entry_index, term, request_id))
            else:
                self.reply(request_id, ERROR_SUPERSEDED)
        self.pending = kept
        before = self.configs.current
        if keep:
            self.configs.compact(index)
        else:
            self.log.reset(index, info.term)
            self.configs.reset(info.membership, index)
            self.last_timestamp = max(self.last_timestamp, info.timestamp)
        self.snapshot = info
        self.commit_index = max(self.commit_index, index)
        self.applied_index = self._handed_out_index = index
        if keep:  # the prefix goes once durable, through compact_through, as after our own
            self._compact_target = max(
                self._compact_target, index - self.config.snapshot_trailing_entries
            )
        else:  # the caller resets its log to start right after the snapshot
            self._compacted = self._compact_target = max(self._compacted, index)
        self._snapshot_asked_at = None
        self._applied_bytes = 0
        self.role.snapshot_installed(index, reset=not keep)
        self._out.install_snapshot = SnapshotInstall(info, reset_log=not keep)
        if self.configs.current != before:
            self._config_changed()

    def _wants_snapshot(self) -> bool:
        """Has the applied log grown past a threshold since the snapshot (or since we last
        asked, if the caller did not deliver)?"""
        config = self.config
        entries, size = config.snapshot_threshold_entries, config.snapshot_threshold_bytes
        if not entries and not size:
            return False
        base_index, base_bytes = self._snapshot_asked_at or (
            self.snapshot.index if self.snapshot is not None else self.log.first_index - 1,
            0,
        )
        if (entries and self.applied_index - base_index >= entries) or (
            size and self._applied_bytes - base_bytes >= size
        ):
            self._snapshot_asked_at = (self.applied_index, self._applied_bytes)
            return True
        return False
