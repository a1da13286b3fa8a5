"""SnapshotFiles: a node's snapshots on disk, as the shell uses them.

It wraps the WAL's :class:`~wal.snapshot.SnapshotStore` (``<data_dir>/snapshots``: temp file,
fsync, rename, keep the newest K) with what the Raft shell needs:

* :meth:`save`: write a state machine's snapshot, the core's header
  (``consensus.snapshots.encode_header``) first, streamed to the file in chunks, fsynced and
  published; returns the :class:`~consensus.snapshots.SnapshotInfo` to report.
* :meth:`read_chunk`: one chunk of a snapshot at an offset (the leader's InstallSnapshot
  reads); only that chunk is ever in memory.
* :class:`Receiver`: the follower's side of a transfer, chunk by chunk into a partial file,
  checkpointed (durable) after each chunk so an interrupted transfer resumes, finished with
  the size and checksum the leader announced.
* :meth:`latest` and :meth:`read_body`: restart and install read the header, then the state
  machine's bytes into one buffer (the snapshot is in memory once, never twice).

Content offsets are those of the core: byte 0 is the first byte of the header. Every error
names the file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

from google_crc32c import extend as crc32c_extend

from consensus.snapshots import (
    HEADER_PREFIX,
    ChunkWrite,
    SnapshotInfo,
    decode_header,
    encode_header,
    header_length,
)
from wal.errors import WalCorruption
from wal.fsutil import read_exact
from wal.snapshot import HEADER_SIZE, SnapshotMeta, SnapshotMismatch, SnapshotStore, SnapshotWriter

SNAPSHOT_DIR = "snapshots"
WRITE_CHUNK = 1 << 20  # bytes per write when saving a local snapshot


class SnapshotFiles:
    """The snapshots kept in ``directory`` (created if missing)."""

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 2) -> None:
        self.store = SnapshotStore(directory, keep=keep)
        self.directory = pathlib.Path(directory)

    # ------------------------------------------------------------------ finding

    def find(self, index: int, term: int) -> SnapshotMeta | None:
        for meta in reversed(self.store.list()):
            if (meta.index, meta.term) == (index, term):
                return meta
        return None

    def latest(self) -> tuple[SnapshotInfo, SnapshotMeta] | None:
        """The newest complete snapshot and what its header says, or None."""
        meta = self.store.latest()
        if meta is None:
            return None
        return self.info_of(meta), meta

    def info_of(self, meta: SnapshotMeta) -> SnapshotInfo:
        fd = os.open(meta.path, os.O_RDONLY)
        try:
            prefix = read_exact(fd, min(HEADER_PREFIX, meta.size), HEADER_SIZE)
            try:
                length = header_length(prefix)
                if length > meta.size:
                    raise ValueError(f"header of {length} bytes in {meta.size} bytes of content")
                info, _ = decode_header(read_exact(fd, length, HEADER_SIZE), meta.size, meta.crc)
            except ValueError as exc:
                raise WalCorruption(meta.path, HEADER_SIZE, str(exc)) from exc
        finally:
            os.close(fd)
        if (info.index, info.term) != (meta.index, meta.term):
            raise WalCorruption(
                meta.path,
                HEADER_SIZE,
                f"header names ({info.index}, {info.term}), the file ({meta.index}, {meta.term})",
            )
        return info

    # ------------------------------------------------------------------ taking one

    def save(self, point: SnapshotInfo, state: bytes | bytearray | memoryview) -> SnapshotInfo:
        """Write the snapshot ``point`` (from ``RaftNode.snapshot_point``) holding the state
        machine's bytes ``state``; durable and published on return."""
        header = encode_header(point.index, point.term, point.timestamp, point.membership)
        writer = self.store.begin(point.index, point.term)
        if writer.offset:  # a partial one of ours from before a crash: start over
            writer.abort()
            writer = self.store.begin(point.index, point.term)
        try:
            writer.write(header)
            view = memoryview(state)
            for start in range(0, len(view), WRITE_CHUNK):
                writer.write(view[start : start + WRITE_CHUNK])
            meta = writer.finish()
        except BaseException:
            writer.abort()
            raise
        return dataclasses.replace(point, size=meta.size, crc=meta.crc)

    # ------------------------------------------------------------------ sending one

    def read_chunk(self, index: int, term: int, offset: int, max_bytes: int) -> bytes | None:
        """At most ``max_bytes`` of snapshot (index, term) from content ``offset``; None if
        that snapshot is gone (pruned) or the offset lies outside it."""
        meta = self.find(index, term)
        if meta is None or not 0 <= offset <= meta.size or max_bytes < 1:
            return None
        try:
            fd = os.open(meta.path, os.O_RDONLY)
        except FileNotFoundError:
            return None  # pruned between the listing and the open
        try:
            size = min(max_bytes, meta.size - offset)
            data = read_exact(fd, size, HEADER_SIZE + offset)
        finally:
            os.close(fd)
        if len(data) != size:
            raise WalCorruption(meta.path, HEADER_SIZE + offset + len(data), "snapshot truncated")
        return data

    # ------------------------------------------------------------------ restoring

    def read_body(self, index: int, term: int) -> bytearray:
        """The state machine's bytes of snapshot (index, term), checked against the content
        checksum while read."""
        meta = self.find(index, term)
        if meta is None:
            raise FileNotFoundError(
                f"{self.directory}: no complete snapshot at index {index}, term {term}"
            )
        info_length = self._header_length(meta)
        body = bytearray(meta.size - info_length)
        view = memoryview(body)
        fd = os.open(meta.path, os.O_RDONLY)
        try:
            crc = crc32c_extend(0, read_exact(fd, info_length, HEADER_SIZE))
            position = 0
            while position < len(body):
                end = min(len(body), position + WRITE_CHUNK)
                got = os.preadv(fd, [view[position:end]], HEADER_SIZE + info_length + position)
                if got <= 0:
                    raise WalCorruption(meta.path, HEADER_SIZE + info_length + position, "short")
                # crc32c takes bytes only: one chunk is copied at a time, never the whole
                crc = crc32c_extend(crc, bytes(view[position : position + got]))
                position += got
        finally:
            view.release()
            os.close(fd)
        if crc != meta.crc:
            raise WalCorruption(meta.path, HEADER_SIZE, "snapshot content checksum mismatch")
        return body

    def _header_length(self, meta: SnapshotMeta) -> int:
        fd = os.open(meta.path, os.O_RDONLY)
        try:
            prefix = read_exact(fd, min(HEADER_PREFIX, meta.size), HEADER_SIZE)
        finally:
            os.close(fd)
        try:
            length = header_length(prefix)
        except ValueError as exc:
            raise WalCorruption(meta.path, HEADER_SIZE, str(exc)) from exc
        if length > meta.size:
            raise WalCorruption(meta.path, HEADER_SIZE, f"header longer than {meta.size} bytes")
        return length


class Receiver:
    """The follower's side of InstallSnapshot: carries out each ``ChunkWrite`` (see
    ``consensus.snapshots.ChunkWrite``) into one partial snapshot file at a time."""

    def __init__(self, files: SnapshotFiles) -> None:
        self.files = files
        self.writer: SnapshotWriter | None = None
        self.last_chunk_at = 0.0  # monotonic seconds of the last chunk (for abandoning)

    @property
    def receiving(self) -> bool:
        return self.writer is not None

    def write(self, write: ChunkWrite) -> tuple[int, bool]:
        """Carry out one chunk; returns (durable offset, complete)."""
        self.last_chunk_at = time.monotonic()
        writer = self.writer
        if writer is None or (writer.index, writer.term) != (write.index, write.term):
            if writer is not None:
                writer.close()
            writer = self.writer = self.files.store.begin(write.index, write.term)
        if write.data and write.offset == writer.offset:
            writer.write(write.data, write.offset)
        if write.done and writer.offset == write.size:
            self.writer = None
            try:
                writer.finish(expected_size=write.size, expected_crc=write.crc)
            except SnapshotMismatch:
                return 0, False  # finish() threw the file away; the leader starts over
            return write.size, True
        return writer.checkpoint(), False

    def abandon(self) -> None:
        """Stop receiving (the checkpointed prefix stays on disk, resumable)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
