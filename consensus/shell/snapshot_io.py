"""The snapshot-IO actor (``/user/node/snapshots``) and the shell's snapshot messages.

All snapshot file work of a node happens here, on this actor's own thread, so a 100 MB
write or a chunk's fsync never stalls the role actor (elections, heartbeats, replication):

* :class:`SaveSnapshot` (role actor, after the state machine serialised itself): write the
  snapshot through :class:`~consensus.shell.snapshot_files.SnapshotFiles`, then tell the
  supervisor :class:`SnapshotSaved` (the role reports ``snapshot_taken``).
* :class:`ReadChunk` (leader): read one chunk of a ``ChunkRead`` and tell :class:`ChunkLoaded`
  (the role hands it to ``snapshot_chunk``).
* :class:`WriteChunk` (follower): carry out a ``ChunkWrite`` durably and tell
  :class:`ChunkStored` (the role reports ``snapshot_written``).

Every answer goes to the node supervisor, which forwards it to the active role actor like any
other input. Requests are handled in inbox order. One snapshot file is written at a time (the
store's rule): a local save waits for a transfer being received unless that transfer has been
silent for :data:`ABANDON_AFTER` seconds, and is refused meanwhile (the core asks again).

The messages below also include those between the role and the state machine actor
(:class:`TakeSnapshot`, :class:`SnapshotState`, :class:`RestoreSnapshot`). All are local to
one process: plain dataclasses carrying live objects.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from actors import UNHANDLED, Actor, ActorRef
from consensus.shell.snapshot_files import Receiver, SnapshotFiles
from consensus.snapshots import ChunkRead, ChunkWrite, SnapshotInfo
from wal.errors import WalError

# A transfer silent this long no longer blocks taking a local snapshot.
ABANDON_AFTER = 10.0


@dataclasses.dataclass(slots=True)
class TakeSnapshot:
    """Role -> state machine: serialise yourself at your applied index."""


@dataclasses.dataclass(slots=True)
class SnapshotState:
    """State machine -> supervisor: the state machine's bytes at applied ``index`` (sent after
    the ``Applied`` that covers it, so the core knows ``index`` applied when this arrives);
    ``data`` None if the state machine's ``snapshot()`` raised."""

    index: int
    data: bytes | bytearray | None


@dataclasses.dataclass(slots=True)
class RestoreSnapshot:
    """Role -> state machine: replace your state with the snapshot ``info`` (complete in the
    store), before applying anything after it."""

    info: SnapshotInfo


@dataclasses.dataclass(slots=True)
class SaveSnapshot:
    point: SnapshotInfo
    data: bytes | bytearray


@dataclasses.dataclass(slots=True)
class SnapshotSaved:
    """The snapshot ``info`` is durable (``info`` None: not taken, ``error`` says why)."""

    info: SnapshotInfo | None
    error: str | None = None


@dataclasses.dataclass(slots=True)
class ReadChunk:
    read: ChunkRead


@dataclasses.dataclass(slots=True)
class ChunkLoaded:
    read: ChunkRead
    data: bytes | None


@dataclasses.dataclass(slots=True)
class WriteChunk:
    write: ChunkWrite


@dataclasses.dataclass(slots=True)
class ChunkStored:
    write: ChunkWrite
    offset: int
    complete: bool


SNAPSHOT_REPORTS = (SnapshotState, SnapshotSaved, ChunkLoaded, ChunkStored)


class SnapshotIO(Actor):
    def __init__(self, files: SnapshotFiles, report_to: ActorRef) -> None:
        self.files = files
        self.report_to = report_to
        self.receiver = Receiver(files)

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        # Every request is answered, also when its file work fails (logged with the file):
        # the role waits for the answer (a snapshot being taken blocks the next one), and
        # the core knows what to do with a failed one (start the transfer over, ask again).
        match message:
            case ReadChunk(read):
                try:
                    data = self.files.read_chunk(read.index, read.term, read.offset, read.max_bytes)
                except (OSError, WalError) as exc:
                    self._failed("read a snapshot chunk", exc, index=read.index)
                    data = None  # the core starts over with its latest snapshot
                self.report_to.tell(ChunkLoaded(read, data))
            case WriteChunk(write):
                try:
                    offset, complete = self.receiver.write(write)
                except (OSError, WalError) as exc:
                    self._failed("write a snapshot chunk", exc, index=write.index)
                    self.receiver.abandon()
                    offset, complete = 0, False  # the leader starts over
                self.report_to.tell(ChunkStored(write, offset, complete))
            case SaveSnapshot(point, data):
                # Let go of the state's bytes once written: the actor runtime may keep the
                # last delivered message until the next one, and this one can be 100 MB.
                message.data = b""
                try:
                    saved = self._save(point, data)
                except Exception as exc:
                    self._failed("save a snapshot", exc, index=point.index)
                    saved = SnapshotSaved(None, f"saving failed: {exc!r}")
                del data
                self.report_to.tell(saved)
            case _:
                return UNHANDLED
        return None

    def _failed(self, what: str, exc: BaseException, **fields: Any) -> None:
        self.ctx.log.error(
            f"could not {what}", directory=str(self.files.directory), error=repr(exc), **fields
        )

    def _save(self, point: SnapshotInfo, data: bytes | bytearray) -> SnapshotSaved:
        receiver = self.receiver
        if receiver.receiving:
            if time.monotonic() - receiver.last_chunk_at < ABANDON_AFTER:
                return SnapshotSaved(None, "a snapshot transfer is being received")
            receiver.abandon()
        started = time.perf_counter()
        info = self.files.save(point, data)
        self.ctx.log.info(
            "snapshot saved",
            index=info.index,
            term=info.term,
            bytes=info.size,
            seconds=round(time.perf_counter() - started, 3),
        )
        return SnapshotSaved(info)

    def post_stop(self) -> None:
        self.receiver.abandon()
