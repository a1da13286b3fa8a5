"""Snapshots as the core sees them: what a snapshot is (:class:`SnapshotInfo`), the effects a
Ready asks the caller to carry out for one (read a chunk, write a chunk, install), the header
every snapshot file starts with, and the start-up rule that reconciles a log with the latest
snapshot.

Theory of operation
-------------------
The core never holds a snapshot's content. The caller writes snapshots to its store (the WAL's
``SnapshotStore``) and tells the core about them; the core only ever passes one chunk through.

* **Taking one.** When the applied log passes ``snapshot_threshold_entries`` /
  ``snapshot_threshold_bytes`` the Ready says ``snapshot_wanted``. The caller asks
  ``node.snapshot_point(index)`` for the term, timestamp and configuration at an applied
  index, writes :func:`encode_header` + the state machine's snapshot to its store, and
  reports :meth:`RaftNode.snapshot_taken`. The core then hands out ``compact_through`` (the
  log prefix the snapshot covers, less ``snapshot_trailing_entries`` kept for followers only a
  little behind, and never past what is durable).
* **Sending one** (leader). A follower whose next index is compacted away gets the latest
  snapshot. The leader first sends an empty chunk at offset 0: the follower answers with the
  offset it already holds of that snapshot (a transfer interrupted earlier resumes there).
  Each answer makes the core ask the caller for the next chunk (:class:`ChunkRead`); the
  caller reads it from the store and hands it back (``node.snapshot_chunk``), and the core
  sends it. One chunk is in flight per follower; a silent follower is probed again after
  ``snapshot_retry_interval``.
* **Receiving one** (follower). Every chunk becomes a :class:`ChunkWrite`: the caller writes
  it to the partial snapshot at its offset (or skips it if its file is elsewhere), makes it
  durable, and reports the durable offset (``node.snapshot_written``), which goes back to the
  leader. When the last chunk completes the file the core installs it: the Ready's
  :class:`SnapshotInstall` tells the caller to restore the state machine from the file and, if
  the log does not continue the snapshot, to reset it; commit and apply indexes jump to the
  snapshot.
* **Restart.** The node is built from the latest snapshot's :class:`SnapshotInfo` and the log;
  :func:`reconcile_log` first discards a log that does not continue the snapshot (a crash
  between finishing an installed snapshot and resetting the log).
"""

from __future__ import annotations

import dataclasses
import struct

import msgpack

from consensus.configuration import Membership
from consensus.log import LogStorage


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot the caller holds: it covers the log through (``index``, ``term``); the
    configuration then was ``membership``; ``timestamp`` is the leader timestamp of entry
    ``index`` (the state machine's clock); ``size`` and ``crc`` (crc32c) describe its
    content, as the WAL's ``SnapshotMeta`` does."""

    index: int
    term: int
    membership: Membership
    size: int = 0
    crc: int = 0
    timestamp: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkRead:
    """Leader: read at most ``max_bytes`` of the snapshot (``index``, ``term``) from byte
    ``offset`` and hand them to ``node.snapshot_chunk(read, data, now)`` (``data=None`` if
    that snapshot can no longer be read: the core then starts over with the latest)."""

    peer: str
    index: int
    term: int
    offset: int
    max_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkWrite:
    """Follower: add ``data`` at byte ``offset`` to the partial snapshot (``index``, ``term``)
    (open or resume it; any other partial one is discarded), make it durable, and call
    ``node.snapshot_written(write, durable_offset, complete, now)`` with the bytes it now
    holds durably. Skip data whose offset is not where the file ends (still report the
    offset). ``done``: the last chunk; finish the file, checking ``size`` and ``crc``, and
    report ``complete=True`` (or ``False`` with offset 0 if the check failed: the leader then
    starts over)."""

    leader: str
    index: int
    term: int
    size: int
    crc: int
    timestamp: int
    membership: Membership
    offset: int
    data: bytes
    done: bool
    round: int


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotInstall:
    """Follower: the snapshot ``info`` (complete in the store) replaces the state machine and
    the log prefix. Before applying anything else, restore the state machine from it. When
    ``reset_log``, the log does not continue the snapshot: ``storage.reset(index, term)``,
    after (or instead of) any log write handed out earlier, and report no ``persisted`` for
    those earlier writes (the core ignores them by index and term, but a write completed
    before the reset must not be reported after it: drop every ``persisted`` until the reset
    is done). Otherwise the log holds the snapshot's last entry and goes on as it is; its
    prefix is dropped later through ``compact_through`` once durable."""

    info: SnapshotInfo
    reset_log: bool


# ---------------------------------------------------------------------------- file header

HEADER_MAGIC = b"CTRAFTS1"
_HEAD = struct.Struct("<8sI")  # magic, length of the msgpack body that follows
HEADER_PREFIX = _HEAD.size


def encode_header(index: int, term: int, timestamp: int, membership: Membership) -> bytes:
    """The bytes every snapshot content starts with: what the core needs to restart from it
    (the state machine's own bytes follow)."""
    body = msgpack.packb(
        {"i": index, "t": term, "ts": timestamp, "m": membership.encode()}, use_bin_type=True
    )
    return _HEAD.pack(HEADER_MAGIC, len(body)) + body


def header_length(prefix: bytes) -> int:
    """The header's total length, from its first :data:`HEADER_PREFIX` bytes."""
    if len(prefix) < HEADER_PREFIX:
        raise ValueError(f"snapshot header: need {HEADER_PREFIX} bytes, got {len(prefix)}")
    magic, length = _HEAD.unpack_from(prefix)
    if magic != HEADER_MAGIC:
        raise ValueError(f"snapshot header: bad magic {magic!r}")
    return HEADER_PREFIX + length


def decode_header(data: bytes, size: int = 0, crc: int = 0) -> tuple[SnapshotInfo, int]:
    """The :class:`SnapshotInfo` a snapshot content starts with (``data`` holds at least the
    whole header) and the offset where the state machine's bytes begin."""
    length = header_length(data)
    if len(data) < length:
        raise ValueError(f"snapshot header: {length} bytes long, only {len(data)} given")
    try:
        body = msgpack.unpackb(data[HEADER_PREFIX:length], raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ValueError(f"snapshot header does not decode: {exc}") from exc
    if (
        type(body) is not dict
        or not all(type(body.get(k)) is int for k in ("i", "t", "ts"))
        or type(body.get("m")) is not bytes
    ):
        raise ValueError("snapshot header lacks index, term, timestamp or configuration")
    info = SnapshotInfo(body["i"], body["t"], Membership.decode(body["m"]), size, crc, body["ts"])
    return info, length


# ---------------------------------------------------------------------------- restart


def reconcile_log(storage: LogStorage, info: SnapshotInfo) -> bool:
    """Make ``storage`` continue the snapshot ``info`` before the core is built on them:
    a log that does not hold (index, term) is reset to start right after it. Returns True if
    the log was reset. A log compacted beyond the snapshot cannot be recovered from it."""
    if storage.first_index - 1 > info.index:
        raise ValueError(
            f"the log is compacted through {storage.first_index - 1}, past the latest "
            f"snapshot at {info.index}: entries in between are lost"
        )
    if storage.term_at(info.index) == info.term:
        return False
    storage.reset(info.index, info.term)
    return True
