"""The leader's side of a snapshot transfer: probe a follower behind the compacted log, ask
the caller for the chunk at the offset the follower holds, send it, one chunk in flight, and
probe again after ``snapshot_retry_interval`` of silence.

A mixin of :class:`~consensus.leader.Leader` (which holds the state it uses); see
``consensus.snapshots`` for the whole flow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consensus.errors import LocalProtocolError, RemoteProtocolError
from consensus.messages import InstallSnapshot, InstallSnapshotResponse
from consensus.progress import Progress, ProgressState
from consensus.snapshots import ChunkRead

if TYPE_CHECKING:
    from consensus.node import RaftNode
    from consensus.reads import ReadTracker


class SnapshotSender:
    __slots__ = ()
    if TYPE_CHECKING:
        node: RaftNode
        progress: dict[str, Progress]
        reads: ReadTracker
        snapshot_peers: set[str]

        def _heard(self, progress: Progress, round_: int) -> None: ...
        def send_append(self, peer: str, *, allow_empty: bool = False) -> None: ...

    @property
    def snapshot_deadline(self) -> int | None:
        """When the next snapshot probe is due, if a transfer is under way."""
        if not self.snapshot_peers:
            return None
        due = [
            p.snapshot_sent_at + self.node.config.snapshot_retry_interval
            for peer, p in self.progress.items()
            if p.state is ProgressState.SNAPSHOT and peer in self.snapshot_peers
        ]
        return min(due) if due else None

    def retry_snapshots(self) -> None:
        """Probe every follower in a transfer that has been silent for the retry interval."""
        now = self.node.now
        retry = self.node.config.snapshot_retry_interval
        for peer in sorted(self.snapshot_peers):
            progress = self.progress.get(peer)
            if progress is None or progress.state is not ProgressState.SNAPSHOT:
                self.snapshot_peers.discard(peer)
            elif not progress.reading and (
                progress.chunk_in_flight is None or now - progress.snapshot_sent_at >= retry
            ):
                self._send_snapshot_probe(peer, progress)

    def _start_snapshot(self, peer: str, progress: Progress) -> None:
        node = self.node
        node.note_need_snapshot(peer)
        if node.snapshot is None:
            return  # unreachable: a compacted log always has its snapshot
        progress.become_snapshot(node.snapshot)
        self.snapshot_peers.add(peer)
        self._send_snapshot_probe(peer, progress)

    def _send_snapshot_probe(self, peer: str, progress: Progress) -> None:
        """An empty chunk: the follower answers with the offset it holds."""
        self._send_chunk(peer, progress, progress.snapshot_offset, b"")

    def _send_chunk(self, peer: str, progress: Progress, offset: int, data: bytes) -> None:
        node = self.node
        snapshot = progress.snapshot
        assert snapshot is not None
        node.send(
            peer,
            InstallSnapshot(
                node.term,
                node.id,
                snapshot.index,
                snapshot.term,
                snapshot.size,
                snapshot.crc,
                snapshot.timestamp,
                snapshot.membership.encode(),
                offset,
                data,
                bool(data or snapshot.size == 0) and offset + len(data) >= snapshot.size,
                self.reads.round,
            ),
        )
        progress.chunk_in_flight = offset
        progress.snapshot_sent_at = node.now

    def _on_snapshot_response(self, msg: InstallSnapshotResponse) -> None:
        progress = self.progress.get(msg.source)
        if progress is None:
            return
        self._heard(progress, msg.round)
        snapshot = progress.snapshot
        if (
            progress.state is not ProgressState.SNAPSHOT
            or snapshot is None
            or (msg.last_index, msg.last_term) != (snapshot.index, snapshot.term)
            or msg.chunk_offset != progress.chunk_in_flight
        ):
            return  # an answer to a chunk or probe we no longer wait for
        progress.chunk_in_flight = None
        if msg.done:
            progress.snapshot_done(msg.last_index)
            self.send_append(msg.source)
            return
        if not 0 <= msg.offset <= snapshot.size:
            raise RemoteProtocolError(
                f"holds {msg.offset} bytes of a {snapshot.size}-byte snapshot"
            )
        progress.snapshot_offset = msg.offset
        progress.reading = True
        self.node.queue_snapshot_read(
            ChunkRead(
                msg.source,
                snapshot.index,
                snapshot.term,
                msg.offset,
                self.node.config.snapshot_chunk_bytes,
            )
        )

    def snapshot_chunk(self, read: ChunkRead, data: bytes | None) -> None:
        progress = self.progress.get(read.peer)
        snapshot = progress.snapshot if progress is not None else None
        if (
            progress is None
            or snapshot is None
            or not progress.reading
            or (read.index, read.term, read.offset)
            != (snapshot.index, snapshot.term, progress.snapshot_offset)
        ):
            return  # the transfer moved on (finished, restarted, or the peer left)
        progress.reading = False
        if data is None:
            # That snapshot is gone from the store: start over with the latest one.
            progress.become_probe()
            self.send_append(read.peer)
            return
        if len(data) > read.max_bytes or read.offset + len(data) > snapshot.size:
            raise LocalProtocolError(
                f"chunk of {len(data)} bytes at {read.offset} does not fit the read "
                f"({read.max_bytes} max) or the snapshot ({snapshot.size} bytes)"
            )
        if not data and read.offset < snapshot.size:
            raise LocalProtocolError(f"empty chunk read at {read.offset} of {snapshot.size}")
        self._send_chunk(read.peer, progress, read.offset, data)
