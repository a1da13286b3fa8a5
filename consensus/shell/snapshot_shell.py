"""SnapshotShell: how a role actor carries out the snapshot fields of a ``Ready`` and feeds
the answers back to the core. One per node, shared by every role actor (it outlives role
changes, like the book).

In ``consensus.ready`` order:

* ``install_snapshot`` (before the Ready's log writes): the state machine actor is told to
  restore from the file (:class:`RestoreSnapshot`, queued before any later ``Apply``); when
  the install resets the log, the log writer is told ``InstallSnapshotReset`` (queued before
  any later append) and every ``Persisted`` is dropped until its ``LogReset`` comes back: those
  acknowledge writes handed out before the reset, which the contract says must not be reported
  after it.
* ``compact_through``: ``CompactThrough`` to the log writer, the one owner of the log, so a
  compaction never races an append.
* ``snapshot_reads`` / ``snapshot_writes``: to the snapshot-IO actor
  (``consensus.shell.snapshot_io``), whose answers come back through the supervisor. These
  three go out after the Ready's ``Apply`` (their order against the rest does not matter).
* ``snapshot_wanted`` (after the Ready's ``Apply``): the state machine actor serialises itself
  at its applied index (:class:`TakeSnapshot`); the bytes come back (:class:`SnapshotState`,
  after the ``Applied`` covering them), the core names the snapshot point, the IO actor writes
  it (:class:`SaveSnapshot`) and its :class:`SnapshotSaved` becomes ``snapshot_taken``. One
  snapshot is taken at a time: a request that comes meanwhile is served as soon as the one in
  progress ends (the core asks only once per threshold, so dropping it could leave the log
  uncompacted until the next threshold); the core asks again later if one is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consensus.errors import LocalProtocolError
from consensus.shell.snapshot_files import SnapshotFiles
from consensus.shell.snapshot_io import (
    SNAPSHOT_REPORTS,
    ChunkLoaded,
    ChunkStored,
    ReadChunk,
    RestoreSnapshot,
    SaveSnapshot,
    SnapshotSaved,
    SnapshotState,
    TakeSnapshot,
    WriteChunk,
)
from consensus.snapshots import SnapshotInfo, reconcile_log
from consensus.wal_storage import WalLogStorage
from wal.writer_messages import CompactThrough, InstallSnapshotReset, LogCompacted, LogReset

if TYPE_CHECKING:
    from actors import ActorRef
    from consensus.node import RaftNode
    from consensus.ready import Ready
    from consensus.shell.metrics import NodeMetrics

# Everything a role actor hands to SnapshotShell.on_input.
SNAPSHOT_INPUTS = (*SNAPSHOT_REPORTS, LogCompacted, LogReset)


class SnapshotShell:
    def __init__(
        self,
        io: ActorRef,
        state_machine: ActorRef,
        writer: ActorRef,
        supervisor: ActorRef,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.io = io
        self.state_machine = state_machine
        self.writer = writer
        self.supervisor = supervisor
        self.taking = False  # a snapshot is being serialised or written
        self.wanted = False  # the core asked for another while one was being taken
        self.resets = 0  # log resets sent to the writer and not yet confirmed
        self.taken = 0  # snapshots taken since start (for logs and tests)
        self.installed = 0  # snapshots installed since start

    @property
    def drop_persisted(self) -> bool:
        """Is every ``Persisted`` now for a write handed out before a log reset?"""
        return self.resets > 0

    # ------------------------------------------------------------------ carrying out

    def before_writes(self, ready: Ready) -> None:
        install = ready.install_snapshot
        if install is None:
            return
        info = install.info
        self.installed += 1
        if self.metrics is not None:
            self.metrics.snapshot_held(info.index, info.size, installed=True)
        self.state_machine.tell(RestoreSnapshot(info))
        if install.reset_log:
            self.resets += 1
            self.writer.tell(InstallSnapshotReset(info.index, info.term), sender=self.supervisor)

    def after_apply(self, ready: Ready) -> None:
        """After the Ready's ``Apply`` went to the state machine: compaction and chunk IO (their
        order against the rest does not matter), then a snapshot if one is wanted (it must
        follow the ``Apply``, so the state machine serialises what it was just handed)."""
        if ready.compact_through is not None:
            self.writer.tell(CompactThrough(ready.compact_through), sender=self.supervisor)
        for read in ready.snapshot_reads:
            self.io.tell(ReadChunk(read))
        for write in ready.snapshot_writes:
            self.io.tell(WriteChunk(write))
        if ready.snapshot_wanted:
            if self.taking:
                self.wanted = True
            else:
                self._take()

    def _take(self) -> None:
        self.taking, self.wanted = True, False
        self.state_machine.tell(TakeSnapshot())

    def _done(self) -> None:
        """The snapshot in progress ended (taken, refused or dropped)."""
        self.taking = False
        if self.wanted:
            self._take()

    # ------------------------------------------------------------------ answers

    def on_input(self, core: RaftNode, message: Any, now: int, log: Any) -> Ready | None:
        """Feed one answer (any of :data:`SNAPSHOT_INPUTS`) to the core."""
        match message:
            case ChunkLoaded(read, data):
                return core.snapshot_chunk(read, data, now)
            case ChunkStored(write, offset, complete):
                return core.snapshot_written(write, offset, complete, now)
            case SnapshotState(index, data):
                return self._state(core, index, data, log)
            case SnapshotSaved(info, error):
                self._done()
                if info is None:
                    log.info("snapshot not taken", reason=error)
                    return None
                try:
                    ready = core.snapshot_taken(info, now)
                except LocalProtocolError as exc:  # a reset or install overtook it
                    log.warning("snapshot not reported", index=info.index, reason=str(exc))
                    return None
                self.taken += 1
                if self.metrics is not None:
                    self.metrics.snapshot_held(info.index, info.size, installed=False)
                log.info("snapshot taken", index=info.index, term=info.term, bytes=info.size)
                return ready
            case LogReset(index, term):
                self.resets = max(0, self.resets - 1)
                log.info("log reset after a snapshot install", index=index, term=term)
            case LogCompacted(first_index):
                log.debug("log compacted", first_index=first_index)
        return None

    def _state(
        self, core: RaftNode, index: int, data: bytes | bytearray | None, log: Any
    ) -> Ready | None:
        snapshot = core.snapshot
        if data is None:
            self._done()  # the state machine's snapshot() raised (it logged why)
            return None
        if index == 0 or (snapshot is not None and index <= snapshot.index):
            self._done()  # nothing newer than what we hold (an install overtook it)
            return None
        try:
            point = core.snapshot_point(index)
        except LocalProtocolError as exc:
            self._done()
            log.warning("snapshot point refused", index=index, reason=str(exc))
            return None
        self.io.tell(SaveSnapshot(point, data))
        return None


def prepare_restart(files: SnapshotFiles, shared: Any) -> SnapshotInfo | None:
    """Start-up: the latest snapshot (None if there is none), with the log made to continue
    it (``consensus.snapshots.reconcile_log``: a crash between finishing an installed snapshot
    and resetting the log leaves a log that does not). ``shared`` is the node's log, before
    the log writer opens it. The state machine is then restored from the snapshot and the core
    built on it, so only the log after the snapshot is replayed."""
    latest = files.latest()
    if latest is None:
        return None
    info, meta = latest
    try:
        reconcile_log(WalLogStorage(shared), info)
    except ValueError as exc:
        raise ValueError(f"{meta.path}: {exc}") from exc
    return info
