"""SegmentedLog: the write-ahead log API over a directory of segment files.

Theory of operation
-------------------
The log is the ordered list of its segments (`wal.segment`); only the last one is open for
appends. An append encodes the batch (entry frames plus one commit record, `wal.format`) and
writes it with a single ``pwritev`` at the open segment's data end; when the batch would
overflow the segment size, the open segment is first *sealed* (fsynced, its preallocated tail
cut off, its index written to a sidecar) and a new preallocated segment is created. Sealing
before creating keeps the invariant recovery relies on: every segment but the last is whole
and durable.

Durability is the caller's choice per append (``sync=True`` fsyncs before returning); the
sans-IO :class:`wal.durability.GroupCommit` decides when a log-writer actor should call
:meth:`SegmentedLog.sync`. A batch holding a configuration entry is fsynced regardless.

Indexes: ``first_index`` is one past the *compaction base* (the last index covered by a
snapshot, kept in ``wal.meta``); ``last_index`` is the last appended index, or the base when
the log is empty. Term lookups never touch the disk: each segment keeps its term runs.

Suffix truncation deletes whole later segments (newest first, so a crash leaves a prefix)
and cuts the segment holding the boundary. Cutting in the middle of a batch first writes a
commit record flagged ``TRUNCATES`` right after the kept entries, fsyncs, then cuts the file:
at every instant the kept entries are committed. Prefix compaction records the new base first
and then deletes whole segments; the segment holding the boundary stays, its older entries
simply fall below ``first_index``.

Logs compacted by key (`wal.kv_compaction`) have holes: ``get`` returns None for an index in
``[first_index, last_index]`` whose entry was compacted away, ``read_range`` skips it, and
``term_at`` answers the term of the nearest surviving entry before it (a lower bound of the
removed entry's term; exact unless the term changed right there).

A ``SegmentedLog`` is not thread-safe: one owner (the log-writer actor) calls it. Any write or
fsync error poisons the log, since the state of the page cache after a failed fsync is unknown;
it must be closed and reopened, which runs recovery.
"""

from __future__ import annotations

import bisect
import collections
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import structlog
from google_crc32c import value as crc32c

from wal.entry import Entry
from wal.errors import LogInUse, NotAWal, WalCorruption, WalError
from wal.format import (
    COMMIT_FLAG_TRUNCATES,
    COMMIT_SIZE,
    ENTRY_OVERHEAD,
    HEADER_SIZE,
    PREFIX,
    encode_batch,
    encode_commit,
)
from wal.fsutil import (
    DirectoryLock,
    datasync,
    fsync_dir,
    preallocate,
    read_exact,
    remove_if_exists,
    write_all,
)
from wal.meta import META_NAME, LogMeta, read_meta, write_meta
from wal.recovery import recover, sidecar_bytes
from wal.scan import TailDamage
from wal.segment import (
    Segment,
    SegmentInfo,
    SegmentRange,
    iter_entries,
    iter_raw,
    parse_segment_name,
    sidecar_path,
)
from wal.sidecar import read_sidecar_head, write_sidecar

log = structlog.get_logger(__name__)

DEFAULT_SEGMENT_SIZE = 64 << 20
LOCK_NAME = "wal.lock"
MAX_OPEN_READERS = 16  # sealed segments with an open read descriptor
MAX_LOADED_INDEXES = 8  # sealed segments whose offset arrays stay in memory


class Appended(NamedTuple):
    """What an append wrote; `configuration` tells the durability policy to sync now."""

    first_index: int
    last_index: int
    configuration: bool
    size: int


class SegmentedLog:
    """A segmented, crash-safe write-ahead log in one directory. Use :meth:`open`."""

    def __init__(
        self,
        directory: pathlib.Path,
        meta: LogMeta,
        segments: list[Segment],
        *,
        readonly: bool,
        segment_size: int,
        prealloc: bool,
        lock: DirectoryLock | None,
        tail_damage: TailDamage | None,
        gaps: list[tuple[int, int]] | None = None,
    ) -> None:
        self.directory = directory
        self.readonly = readonly
        self.segment_size = segment_size
        self.tail_damage = tail_damage
        self.gaps = gaps or []  # read-only opens: index ranges of missing segments
        self._prealloc = prealloc
        self._lock = lock
        self._base_index = meta.base_index
        self._base_term = meta.base_term
        self._segments = segments
        self._firsts = [segment.first_index for segment in segments]
        self._version = 0  # bumped when entries vanish from the end (truncate, reset)
        self._failed: BaseException | None = None
        self._closed = False
        self._readers: collections.OrderedDict[int, Segment] = collections.OrderedDict()
        self._loaded: collections.OrderedDict[int, Segment] = collections.OrderedDict()
        self._durable_index = self.last_index

    # -- opening and closing ----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        readonly: bool = False,
        create: bool = True,
        preallocate: bool = True,
    ) -> SegmentedLog:
        """Open (recovering it) or create the log in `directory`.

        `readonly` modifies nothing and takes no lock (for inspection tools); a damaged tail
        is then reported in :attr:`tail_damage` and ignored rather than cut, and missing
        segments in :attr:`gaps`, their indexes reading as holes, rather than refused.
        """
        if segment_size < HEADER_SIZE + ENTRY_OVERHEAD + COMMIT_SIZE:
            raise ValueError(f"segment_size {segment_size} is too small to hold an entry")
        path = pathlib.Path(directory)
        if not path.is_dir():
            if path.exists():
                raise NotAWal(f"{path} is not a directory")
            if readonly or not create:
                raise NotAWal(f"{path}: no such log directory")
            path.mkdir(parents=True)
            fsync_dir(path.parent)
        lock = None
        if not readonly:
            lock = DirectoryLock(path / LOCK_NAME)
            if not lock.acquire():
                raise LogInUse(f"{path}: the log is open in another process")
        try:
            meta = read_meta(path)
            if meta is None:
                if any(parse_segment_name(name) is not None for name in os.listdir(path)):
                    raise WalCorruption(
                        path / META_NAME, 0, "segment files without the log's metadata"
                    )
                if readonly or not create:
                    raise NotAWal(f"{path} is not a coterie write-ahead log (no {META_NAME})")
                meta = LogMeta(0, 0)
                write_meta(path, meta)
            recovered = recover(
                path, meta, readonly=readonly, segment_size=segment_size, prealloc=preallocate
            )
            wal = cls(
                path,
                meta,
                recovered.segments,
                readonly=readonly,
                segment_size=segment_size,
                prealloc=preallocate,
                lock=lock,
                tail_damage=recovered.tail_damage,
                gaps=recovered.gaps,
            )
            if not readonly and not wal._segments:
                wal._add_segment(meta.base_index + 1)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        log.debug("wal.opened", path=str(path), first=wal.first_index, last=wal.last_index)
        return wal

    def close(self) -> None:
        """Fsync what is pending (writable logs), release file descriptors and the lock."""
        if self._closed:
            return
        try:
            if not self.readonly and self._failed is None:
                self.sync()
        finally:
            self._closed = True
            for segment in self._segments:
                segment.close()
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> SegmentedLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- positions --------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        """The first index not compacted away (last_index + 1 when the log is empty)."""
        return self._base_index + 1

    @property
    def last_index(self) -> int:
        if not self._segments:
            return self._base_index
        return max(self._base_index, self._segments[-1].last_index)

    @property
    def last_term(self) -> int:
        return self.term_at(self.last_index)

    @property
    def base_index(self) -> int:
        """The last compacted index (covered by a snapshot); 0 if nothing was compacted."""
        return self._base_index

    @property
    def base_term(self) -> int:
        return self._base_term

    @property
    def durable_index(self) -> int:
        """Every entry up to this index has been fsynced."""
        return min(self._durable_index, self.last_index)

    def term_at(self, index: int) -> int:
        """Term of the entry at `index`, for base_index <= index <= last_index (no disk read)."""
        if index == self._base_index:
            return self._base_term
        if not self._base_index < index <= self.last_index:
            raise IndexError(
                f"term_at({index}): the log holds terms for {self._base_index}..{self.last_index}"
            )
        for position in range(bisect.bisect_right(self._firsts, index) - 1, -1, -1):
            term = self._segments[position].term_at(index)
            if term is not None:
                return term
        return self._base_term

    # -- appending --------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry], *, sync: bool = True) -> Appended:
        """Append a batch whose indexes continue `last_index` contiguously.

        With ``sync=False`` the batch reaches the page cache only; call :meth:`sync` (as the
        durability policy says). A batch holding a configuration entry is always fsynced.
        """
        self._check_writable()
        if not entries:
            raise ValueError("append() needs at least one entry")
        try:
            batch = encode_batch(
                entries,
                self.durable_index,
                first_index=self.last_index + 1,
                previous_term=self.last_term,
            )
        except ValueError as exc:
            raise ValueError(f"append: {exc} (last_index is {self.last_index})") from None
        frames, commit = batch.frames, batch.commit
        size = len(frames) + len(commit)
        segment = self._segments[-1]
        try:
            if segment.count and segment.data_end + size > self.segment_size:
                self._seal(segment)
                segment = self._add_segment(entries[0].index)
            start = segment.data_end
            write_all(segment.fd, (frames, commit), start)  # type: ignore[arg-type]
        except OSError as exc:
            raise self._fail(exc, "append") from exc
        first, last = entries[0].index, entries[-1].index
        commit_crc = PREFIX.unpack_from(commit)[1]
        segment.add_batch(first, last, batch.offsets, batch.runs, start, start + size, commit_crc)
        configuration = batch.configuration
        if sync or configuration:
            self.sync()
        return Appended(first, last, configuration, size)

    def sync(self) -> int:
        """Fsync appended entries; returns the durable index (no syscall if nothing pending)."""
        self._check_writable()
        if self._durable_index < self.last_index:
            try:
                datasync(self._segments[-1].fd)  # type: ignore[arg-type]
            except OSError as exc:
                raise self._fail(exc, "fsync") from exc
            self._durable_index = self.last_index
        return self.durable_index

    # -- reading ----------------------------------------------------------------------------

    def get(self, index: int) -> Entry | None:
        """The entry at `index`; None if kv compaction removed it. IndexError outside the log."""
        self._check_open()
        if not self.first_index <= index <= self.last_index:
            raise IndexError(f"get({index}): the log holds {self.first_index}..{self.last_index}")
        segment, position = self._position(index)
        if position is None:
            return None
        entry = segment.read_entry(self._reader_fd(segment), position)
        self._note_index_use(segment)
        return entry

    def _position(self, index: int) -> tuple[Segment, int | None]:
        """The segment covering `index` (first_index <= index <= last_index) and its position
        there, None for a hole left by kv compaction."""
        number = bisect.bisect_right(self._firsts, index) - 1
        if number < 0:  # a read-only log whose first segment is missing
            return self._segments[0], None
        segment = self._segments[number]
        return segment, segment.position_of(index)

    def read_range(self, start: int, stop: int) -> Iterator[Entry]:
        """Lazily yield the entries with start <= index < stop, streaming from disk.

        `stop` is clamped to ``last_index + 1``; a `start` below `first_index` (compacted)
        is an IndexError. Memory stays flat however long the range.
        """
        return self._stream(*self._checked_range(start, stop), iter_entries)

    def read_range_raw(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """Like :meth:`read_range` but yields ``(index, frame)`` with each entry's encoded
        frame exactly as stored (checksum included), for sending without re-encoding;
        `wal.format.decode_entry_frame` decodes one."""
        return self._stream(*self._checked_range(start, stop), iter_raw)

    def _checked_range(self, start: int, stop: int) -> tuple[int, int]:
        self._check_open()
        if stop < start:
            raise ValueError(f"read_range({start}, {stop}): stop is before start")
        if start < self.first_index:
            raise IndexError(
                f"read_range({start}, ...): entries up to {self._base_index} were compacted"
            )
        return start, min(stop, self.last_index + 1)

    def _stream(self, start: int, stop: int, reader: Callable[..., Iterator[Any]]) -> Iterator[Any]:
        version = self._version
        next_index = start
        while next_index < stop:
            if self._version != version or self._closed:
                raise WalError("the log was truncated or closed while being read")
            if next_index < self.first_index:
                raise WalError(f"entries from {next_index} were compacted while being read")
            # max(0, ...): a read-only log may miss its first segment (see gaps).
            number = max(0, bisect.bisect_right(self._firsts, next_index) - 1)
            segment = self._segments[number]
            following = self._firsts[number + 1] if number + 1 < len(self._firsts) else None
            position = segment.lower_bound(next_index)
            if position < segment.count:
                begin = HEADER_SIZE if position == 0 else segment.frame_span(position)[0]
                self._note_index_use(segment)
                fd = os.open(segment.path, os.O_RDONLY)
                try:
                    for item in reader(fd, segment.path, begin, segment.data_end, next_index, stop):
                        if self._version != version:
                            raise WalError("the log was truncated while being read")
                        yield item
                finally:
                    os.close(fd)
            if following is None:
                break
            next_index = following

    # -- removing entries -------------------------------------------------------------------

    def truncate_after(self, index: int) -> None:
        """Remove every entry after `index` (a Raft log conflict); durable on return."""
        self._check_writable()
        if index >= self.last_index:
            return
        if index < self._base_index:
            raise ValueError(
                f"truncate_after({index}): entries up to {self._base_index} are compacted"
            )
        if index > self._base_index and self._position(index)[1] is None:
            # The log would end below `index`: kv compaction only removes committed entries,
            # and Raft never truncates those.
            raise ValueError(f"truncate_after({index}): entry {index} was removed by kv compaction")
        self._version += 1
        try:
            while len(self._segments) > 1 and self._segments[-1].first_index > index:
                self._delete_segment(self._segments[-1])
                fsync_dir(self.directory)  # one at a time: a crash leaves a prefix
            self._cut_after(self._segments[-1], index)
        except OSError as exc:
            raise self._fail(exc, "truncate") from exc
        self._durable_index = min(self._durable_index, index)

    def _cut_after(self, segment: Segment, index: int) -> None:
        if segment.sealed:
            self._reopen_for_append(segment)
        position = segment.lower_bound(index + 1)
        if position >= segment.count:
            return
        fd = segment.fd
        assert fd is not None
        cut = segment.frame_span(position)[0]
        batch_first = segment.batch_start(position)
        if batch_first == position:
            new_end, commit_crc = cut, segment.commit_crc_before(cut)
        else:
            # Mid-batch: commit the kept part of the batch before cutting, so the kept entries
            # are never without a commit record (see the module docstring).
            start = segment.frame_span(batch_first)[0]
            kept = read_exact(fd, cut - start, start)
            commit = encode_commit(
                segment.index_at(batch_first),
                position - batch_first,
                crc32c(kept),
                min(self._durable_index, index),
                COMMIT_FLAG_TRUNCATES,
            )
            write_all(fd, (commit,), cut)
            datasync(fd)
            new_end, commit_crc = cut + COMMIT_SIZE, PREFIX.unpack_from(commit)[1]
        os.ftruncate(fd, new_end)
        if self._prealloc:
            preallocate(fd, self.segment_size)
        os.fsync(fd)
        segment.drop_from(position, new_end, commit_crc)

    def compact_through(self, index: int) -> None:
        """Forget entries up to `index` (a snapshot now covers them).

        Whole segments below the new base are deleted; the segment holding the boundary
        stays, with its older entries below `first_index`.
        """
        self._check_writable()
        if index <= self._base_index:
            return
        if index > self.last_index:
            raise ValueError(
                f"compact_through({index}): past last_index {self.last_index}; use reset()"
            )
        term = self.term_at(index)
        try:
            write_meta(self.directory, LogMeta(index, term))
            self._base_index, self._base_term = index, term
            while len(self._segments) > 1 and self._firsts[1] - 1 <= index:
                self._delete_segment(self._segments[0])
            fsync_dir(self.directory)
        except OSError as exc:
            raise self._fail(exc, "compact") from exc

    def reset(self, index: int, term: int) -> None:
        """Discard the whole log and continue after a snapshot ending at (index, term).

        For an InstallSnapshot whose last entry the log does not hold with the same term.
        """
        self._check_writable()
        if index < self._base_index:
            raise ValueError(f"reset({index}): below the compaction base {self._base_index}")
        self._version += 1
        try:
            while self._segments:
                self._delete_segment(self._segments[-1])
                fsync_dir(self.directory)
            write_meta(self.directory, LogMeta(index, term))
            self._base_index, self._base_term = index, term
            self._add_segment(index + 1)
        except OSError as exc:
            raise self._fail(exc, "reset") from exc
        self._durable_index = index

    # -- key-value compaction (see wal.kv_compaction) ----------------------------------------

    def compaction_view(self, through_index: int) -> list[SegmentRange]:
        """The stable bytes of every segment holding entries up to `through_index`.

        `through_index` must never be truncated later (a committed index): the bytes up to
        it do not change while appends go on, so another thread may read them. Segments
        that are sealed and end at or before it are marked as rewrite targets.
        """
        self._check_writable()
        through = min(through_index, self.last_index)
        ranges = []
        for segment in self._segments:
            if segment.first_index > through:
                break
            position = segment.lower_bound(through + 1)
            if position == 0:
                continue
            whole = position == segment.count
            ranges.append(
                SegmentRange(
                    path=segment.path,
                    first_index=segment.first_index,
                    read_end=segment.data_end if whole else segment.frame_span(position)[0],
                    target=whole and segment.sealed,
                    identity=segment.identity,
                )
            )
        return ranges

    def replace_sealed(self, old: SegmentRange, new: Segment, tmp_path: pathlib.Path) -> bool:
        """Swap a sealed segment for its rewritten version built at `tmp_path` (fsynced).

        Refused (False, the temporary removed) if the segment changed or went away since
        `old` was taken. The rename is atomic: a crash leaves the old or the new file.
        """
        self._check_writable()
        number = bisect.bisect_right(self._firsts, old.first_index) - 1
        segment = self._segments[number] if number >= 0 else None
        if (
            segment is None
            or segment.first_index != old.first_index
            or not segment.sealed
            or segment.identity != old.identity
        ):
            remove_if_exists(tmp_path)
            return False
        try:
            sidecar = sidecar_path(segment.path)
            remove_if_exists(sidecar)  # never a moment where a stale sidecar looks current
            os.replace(tmp_path, segment.path)
            write_sidecar(sidecar, sidecar_bytes(new))
            fsync_dir(self.directory)
        except OSError as exc:
            raise self._fail(exc, "kv compaction swap") from exc
        new.attach_sidecar(read_sidecar_head(sidecar))
        segment.close()
        self._readers.pop(segment.first_index, None)
        self._loaded.pop(segment.first_index, None)
        self._segments[number] = new
        return True

    # -- inspection -------------------------------------------------------------------------

    def segments(self) -> list[SegmentInfo]:
        return [
            SegmentInfo(
                path=segment.path,
                first_index=segment.first_index,
                last_index=segment.last_index,
                count=segment.count,
                size=segment.data_end,
                sealed=segment.sealed,
                kv_compacted=segment.sparse,
            )
            for segment in self._segments
        ]

    # -- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise WalError(f"{self.directory}: the log is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise WalError(f"{self.directory}: the log was opened read-only")
        if self._failed is not None:
            raise WalError(
                f"{self.directory}: an earlier write failed ({self._failed}); reopen the log"
            )

    def _fail(self, exc: OSError, operation: str) -> WalError:
        self._failed = exc
        log.error("wal.io_failed", path=str(self.directory), operation=operation, error=str(exc))
        return WalError(f"{self.directory}: {operation} failed: {exc}; the log must be reopened")

    def _add_segment(self, first_index: int) -> Segment:
        segment = Segment.create(
            self.directory, first_index, self.segment_size, prealloc=self._prealloc
        )
        self._segments.append(segment)
        self._firsts.append(first_index)
        return segment

    def _seal(self, segment: Segment) -> None:
        fd = segment.fd
        assert fd is not None
        os.ftruncate(fd, segment.data_end)  # drop the preallocated tail
        os.fsync(fd)  # whole and durable before any later segment exists
        self._durable_index = max(self._durable_index, segment.last_index)
        path = sidecar_path(segment.path)
        write_sidecar(path, sidecar_bytes(segment))  # the next segment's creation fsyncs the dir
        segment.attach_sidecar(read_sidecar_head(path))
        segment.sealed = True
        self._readers[segment.first_index] = segment
        self._trim_readers()
        # Into the LRU like any segment read later: otherwise every segment sealed while
        # appending keeps its offsets for the life of the log (8 bytes per entry, unbounded).
        self._note_index_use(segment)

    def _reopen_for_append(self, segment: Segment) -> None:
        segment.offsets()  # the open segment keeps its index in memory
        self._loaded.pop(segment.first_index, None)
        self._readers.pop(segment.first_index, None)
        segment.close()
        segment.fd = os.open(segment.path, os.O_RDWR)
        segment.sealed = False
        os.unlink(sidecar_path(segment.path))
        fsync_dir(self.directory)

    def _delete_segment(self, segment: Segment) -> None:
        segment.close()
        self._readers.pop(segment.first_index, None)
        self._loaded.pop(segment.first_index, None)
        number = self._segments.index(segment)
        del self._segments[number]
        del self._firsts[number]
        os.unlink(segment.path)
        remove_if_exists(sidecar_path(segment.path))

    def _reader_fd(self, segment: Segment) -> int:
        if segment.fd is None:
            segment.fd = os.open(segment.path, os.O_RDONLY)
        if segment.sealed:
            self._readers[segment.first_index] = segment
            self._readers.move_to_end(segment.first_index)
            self._trim_readers()
        return segment.fd

    def _trim_readers(self) -> None:
        while len(self._readers) > MAX_OPEN_READERS:
            _, oldest = self._readers.popitem(last=False)
            oldest.close()

    def _note_index_use(self, segment: Segment) -> None:
        if not segment.sealed:
            return
        self._loaded[segment.first_index] = segment
        self._loaded.move_to_end(segment.first_index)
        while len(self._loaded) > MAX_LOADED_INDEXES:
            _, oldest = self._loaded.popitem(last=False)
            oldest.unload_index()
