"""A directory of snapshots: streamed in and out in chunks, published atomically, last K kept.

Theory of operation
-------------------
A snapshot is one file ``snap-<index>-<term>.snap`` (20-digit numbers): a 64-byte header
(magic, version, flags, the last included index and term, content size, crc32c of the
content, crc32c of the header) followed by the content.

A :class:`SnapshotWriter` builds the file as ``snap-<index>-<term>.partial``. Chunks are
appended in order; :meth:`SnapshotWriter.checkpoint` fsyncs them and then records the size and
running checksum in the header, which makes the written prefix a *resume point*: after a
crash, :meth:`SnapshotStore.begin` for the same index and term reopens the partial file,
re-checks the prefix against the checkpoint and continues at that byte offset (a follower can
ask the leader to resume an InstallSnapshot there). :meth:`SnapshotWriter.finish` writes the
final header, fsyncs, renames the file to its ``.snap`` name and fsyncs the directory, so a
crash at any moment leaves the previous snapshots untouched and the new one either complete
or absent. Older snapshots beyond the newest `keep` are then deleted.

Reading streams chunks from any offset; a read from offset 0 verifies the content checksum at
the end and raises if it does not match, so a consumer must apply a snapshot only after the
whole stream was read without error.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import struct
from collections.abc import Iterable, Iterator

import structlog
from google_crc32c import extend as crc32c_extend
from google_crc32c import value as crc32c

from wal.errors import WalCorruption, WalError
from wal.fsutil import TMP_SUFFIX, datasync, fsync_dir, read_exact, remove_if_exists, write_all

log = structlog.get_logger(__name__)

SNAPSHOT_MAGIC = b"\x89CTSNP\r\n"
SNAPSHOT_VERSION = 1
HEAD = struct.Struct("<8sHHIQQQI")
HEAD_CRC = struct.Struct("<I")
HEADER_SIZE = 64
FLAG_COMPLETE = 0x1
COMPLETE_SUFFIX = ".snap"
PARTIAL_SUFFIX = ".partial"
NAME = re.compile(r"snap-(\d{20})-(\d{20})\.(snap|partial)")
DEFAULT_CHUNK = 1 << 20


class SnapshotMismatch(WalError):
    """A finished snapshot's size or checksum differs from what its sender announced."""


@dataclasses.dataclass(frozen=True)
class SnapshotMeta:
    index: int  # last log index the snapshot includes
    term: int  # term of that entry
    size: int  # content bytes
    crc: int  # crc32c of the content
    path: pathlib.Path


def snapshot_name(index: int, term: int, suffix: str) -> str:
    return f"snap-{index:020d}-{term:020d}{suffix}"


def _encode_head(index: int, term: int, size: int, crc: int, flags: int) -> bytes:
    head = HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, flags, 0, index, term, size, crc)
    header = head + HEAD_CRC.pack(crc32c(head))
    return header + bytes(HEADER_SIZE - len(header))


def _decode_head(data: bytes, path: pathlib.Path) -> tuple[int, int, int, int, int]:
    """(index, term, size, crc, flags) of a snapshot header; WalCorruption if invalid."""
    if len(data) < HEAD.size + HEAD_CRC.size:
        raise WalCorruption(path, 0, f"snapshot header truncated ({len(data)} bytes)")
    magic, version, flags, _reserved, index, term, size, crc = HEAD.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise WalCorruption(path, 0, f"not a snapshot file (magic {magic!r})")
    if crc32c(data[: HEAD.size]) != HEAD_CRC.unpack_from(data, HEAD.size)[0]:
        raise WalCorruption(path, HEAD.size, "snapshot header checksum mismatch")
    if version != SNAPSHOT_VERSION:
        raise WalCorruption(path, 8, f"unsupported snapshot version {version}")
    return index, term, size, crc, flags


class SnapshotStore:
    """The snapshots kept in `directory` (created if missing); keeps the newest `keep`."""

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = pathlib.Path(directory)
        self.keep = keep
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            fsync_dir(self.directory.parent)

    def list(self) -> list[SnapshotMeta]:
        """Complete snapshots, oldest first. A damaged one raises WalCorruption naming it."""
        found = []
        for name in os.listdir(self.directory):
            match = NAME.fullmatch(name)
            if match is None or match.group(3) != "snap":
                continue
            path = self.directory / name
            with open(path, "rb") as file:
                index, term, size, crc, flags = _decode_head(file.read(HEADER_SIZE), path)
                actual = os.fstat(file.fileno()).st_size - HEADER_SIZE
            if (index, term) != (int(match.group(1)), int(match.group(2))):
                raise WalCorruption(path, 0, f"header says index {index} term {term}")
            if not flags & FLAG_COMPLETE or actual != size:
                raise WalCorruption(path, HEADER_SIZE + min(size, actual), "snapshot incomplete")
            found.append(SnapshotMeta(index, term, size, crc, path))
        return sorted(found, key=lambda meta: (meta.index, meta.term))

    def latest(self) -> SnapshotMeta | None:
        snapshots = self.list()
        return snapshots[-1] if snapshots else None

    def begin(self, index: int, term: int) -> SnapshotWriter:
        """A writer for the snapshot ending at (index, term), resuming a partial one if any.

        Any other partial snapshot is discarded: one snapshot is written at a time.
        """
        own = snapshot_name(index, term, PARTIAL_SUFFIX)
        for name in os.listdir(self.directory):
            if name.endswith((PARTIAL_SUFFIX, TMP_SUFFIX)) and name != own:
                remove_if_exists(self.directory / name)
        path = self.directory / own
        if path.exists():
            resumed = self._resume(path, index, term)
            if resumed is not None:
                return resumed
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(fd, _encode_head(index, term, 0, 0, 0), 0)
        os.fsync(fd)
        fsync_dir(self.directory)
        return SnapshotWriter(self, index, term, path, fd, offset=0, crc=0)

    def _resume(self, path: pathlib.Path, index: int, term: int) -> SnapshotWriter | None:
        fd = os.open(path, os.O_RDWR)
        try:
            got_index, got_term, size, crc, _flags = _decode_head(
                read_exact(fd, HEADER_SIZE, 0), path
            )
            if (got_index, got_term) != (index, term):
                raise WalCorruption(path, 0, "header does not match the file name")
            if _content_crc(fd, size) != crc:
                raise WalCorruption(path, HEADER_SIZE, "checkpointed prefix does not check out")
        except WalCorruption as exc:
            os.close(fd)
            log.warning("wal.snapshot_restart", path=str(path), why=str(exc))
            return None
        os.ftruncate(fd, HEADER_SIZE + size)
        log.info("wal.snapshot_resumed", path=str(path), offset=size)
        return SnapshotWriter(self, index, term, path, fd, offset=size, crc=crc)

    def write(self, index: int, term: int, chunks: Iterable[bytes]) -> SnapshotMeta:
        """Write a whole snapshot from `chunks` (a local state-machine snapshot)."""
        writer = self.begin(index, term)
        if writer.offset:
            writer.abort()
            writer = self.begin(index, term)
        for chunk in chunks:
            writer.write(chunk)
        return writer.finish()

    def read(
        self, meta: SnapshotMeta, offset: int = 0, chunk_size: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]:
        """Yield the content of `meta` from byte `offset` in chunks of `chunk_size`."""
        if not 0 <= offset <= meta.size:
            raise ValueError(f"offset {offset} outside the snapshot's {meta.size} bytes")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return self._read(meta, offset, chunk_size)

    def _read(self, meta: SnapshotMeta, offset: int, chunk_size: int) -> Iterator[bytes]:
        fd = os.open(meta.path, os.O_RDONLY)
        try:
            crc = 0
            position = offset
            while position < meta.size:
                chunk = read_exact(
                    fd, min(chunk_size, meta.size - position), HEADER_SIZE + position
                )
                if not chunk:
                    raise WalCorruption(meta.path, HEADER_SIZE + position, "snapshot truncated")
                crc = crc32c_extend(crc, chunk)
                position += len(chunk)
                yield chunk
            if offset == 0 and crc != meta.crc:
                raise WalCorruption(meta.path, HEADER_SIZE, "snapshot content checksum mismatch")
        finally:
            os.close(fd)

    def _prune(self) -> None:
        snapshots = self.list()
        for old in snapshots[: -self.keep]:
            remove_if_exists(old.path)
            log.info("wal.snapshot_pruned", path=str(old.path))
        if len(snapshots) > self.keep:
            fsync_dir(self.directory)


class SnapshotWriter:
    """Appends the content of one snapshot; see the module docstring for resuming."""

    def __init__(
        self,
        store: SnapshotStore,
        index: int,
        term: int,
        path: pathlib.Path,
        fd: int,
        *,
        offset: int,
        crc: int,
    ) -> None:
        self.store = store
        self.index = index
        self.term = term
        self.path = path
        self.offset = offset  # content bytes written; where the next chunk goes
        self._fd: int | None = fd
        self._crc = crc

    def write(self, chunk: bytes, offset: int | None = None) -> None:
        """Append `chunk`; if `offset` is given it must equal :attr:`offset` (in-order chunks)."""
        fd = self._require_fd()
        if offset is not None and offset != self.offset:
            raise ValueError(
                f"chunk at offset {offset}, but the snapshot continues at {self.offset}"
            )
        data = bytes(chunk)
        write_all(fd, (data,), HEADER_SIZE + self.offset)
        self._crc = crc32c_extend(self._crc, data)
        self.offset += len(data)

    def checkpoint(self) -> int:
        """Make the bytes written so far a durable resume point; returns its offset."""
        fd = self._require_fd()
        datasync(fd)  # content first, so the header never names bytes that are not on disk
        os.pwrite(fd, _encode_head(self.index, self.term, self.offset, self._crc, 0), 0)
        datasync(fd)
        return self.offset

    def finish(
        self, *, expected_size: int | None = None, expected_crc: int | None = None
    ) -> SnapshotMeta:
        """Publish the snapshot atomically and prune old ones; returns its metadata."""
        fd = self._require_fd()
        if (expected_size is not None and expected_size != self.offset) or (
            expected_crc is not None and expected_crc != self._crc
        ):
            self.abort()
            raise SnapshotMismatch(
                f"{self.path.name}: received {self.offset} bytes with crc {self._crc:#010x}, "
                f"expected {expected_size} bytes with crc {expected_crc}"
            )
        os.pwrite(fd, _encode_head(self.index, self.term, self.offset, self._crc, FLAG_COMPLETE), 0)
        os.fsync(fd)
        self.close()
        final = self.path.with_name(snapshot_name(self.index, self.term, COMPLETE_SUFFIX))
        os.replace(self.path, final)
        fsync_dir(final.parent)
        self.store._prune()
        return SnapshotMeta(self.index, self.term, self.offset, self._crc, final)

    def abort(self) -> None:
        """Throw the partial snapshot away."""
        self.close()
        if remove_if_exists(self.path):
            fsync_dir(self.path.parent)

    def close(self) -> None:
        """Release the file; a checkpointed prefix stays resumable."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require_fd(self) -> int:
        if self._fd is None:
            raise WalError(f"{self.path.name}: the snapshot writer is closed")
        return self._fd


def _content_crc(fd: int, size: int) -> int:
    crc = 0
    position = 0
    while position < size:
        chunk = read_exact(fd, min(DEFAULT_CHUNK, size - position), HEADER_SIZE + position)
        if not chunk:
            return -1
        crc = crc32c_extend(crc, chunk)
        position += len(chunk)
    return crc
