"""coterie's write-ahead log: segmented, crash-safe storage of log entries, hard state and
snapshots. It knows nothing of Raft and nothing of actors; the log-writer actor that owns a log
in a running node lives in `wal.writer_actor` (import it explicitly, it pulls in `actors`)::

    from wal import Entry, EntryKind, SegmentedLog

    with SegmentedLog.open("data/log") as log:
        log.append([Entry(log.last_index + 1, 1, EntryKind.COMMAND, 0, b"hello")])
        for entry in log.read_range(log.first_index, log.last_index + 1):
            ...

Everything not exported here is an implementation module.
"""

from wal.durability import Durability, GroupCommit
from wal.entry import Entry, EntryKind
from wal.errors import CorruptRecord, LogInUse, NotAWal, WalCorruption, WalError
from wal.hardstate import HardState, HardStateStore
from wal.log import Appended, SegmentedLog, SegmentInfo
from wal.snapshot import SnapshotMeta, SnapshotMismatch, SnapshotStore, SnapshotWriter

__all__ = [
    "Appended",
    "CorruptRecord",
    "Durability",
    "Entry",
    "EntryKind",
    "GroupCommit",
    "HardState",
    "HardStateStore",
    "LogInUse",
    "NotAWal",
    "SegmentInfo",
    "SegmentedLog",
    "SnapshotMeta",
    "SnapshotMismatch",
    "SnapshotStore",
    "SnapshotWriter",
    "WalCorruption",
    "WalError",
]
