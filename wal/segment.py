"""One segment file: its metadata, its in-memory offset index and term runs, and reads from it.

The on-disk format is described in `wal.format`. A :class:`Segment` is either *open* (the last
segment of a writable log, preallocated, receiving appends; its index is always in memory) or
*sealed* (immutable until a truncation reopens it or kv compaction replaces it; its index is
loaded from the sidecar on first use and may be dropped again to bound memory).

Entries of a segment are addressed by *position* (0-based rank within the segment). In a dense
segment the entry with index ``i`` sits at position ``i - first_index``; a kv-compacted
(sparse) segment also keeps the index of each position and is searched by bisection.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import pathlib
from array import array
from collections.abc import Iterator

from google_crc32c import value as crc32c

from wal.entry import Entry
from wal.errors import CorruptRecord, WalCorruption
from wal.format import (
    COMMIT_MARKER,
    COMMIT_SIZE,
    ENTRY_BODY_HEAD,
    HEADER_SIZE,
    MARKER_BIT,
    MIN_ENTRY_LENGTH,
    PREFIX,
    SEGMENT_SUFFIX,
    WORD,
    SegmentHeader,
    decode_header,
    decode_record,
    encode_header,
    header_crc_of,
)
from wal.fsutil import TMP_SUFFIX, fsync_dir, preallocate, read_exact
from wal.scan import SegmentScan, scan_segment
from wal.sidecar import SIDECAR_SUFFIX, SidecarHead, StaleSidecar, read_sidecar_arrays

READ_CHUNK = 1 << 20
NAME_DIGITS = 20


def segment_name(first_index: int) -> str:
    return f"{first_index:0{NAME_DIGITS}d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    stem, dot, suffix = name.partition(".")
    if dot and "." + suffix == SEGMENT_SUFFIX and len(stem) == NAME_DIGITS and stem.isdigit():
        return int(stem)
    return None


def sidecar_path(segment_path: pathlib.Path) -> pathlib.Path:
    return segment_path.with_suffix(SIDECAR_SUFFIX)


def create_segment_file(
    directory: pathlib.Path, first_index: int, size: int, *, prealloc: bool, flags: int = 0
) -> tuple[pathlib.Path, int, bytes]:
    """Create a segment holding only its header; returns (path, read-write fd, header bytes).

    The file is built under a temporary name and renamed, so a segment file that exists
    always has a whole, durable header.
    """
    path = directory / segment_name(first_index)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    header = encode_header(first_index, flags)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, header, 0)
        if prealloc:
            preallocate(fd, size)
        os.fsync(fd)
        os.replace(tmp, path)
        fsync_dir(directory)
    except BaseException:
        os.close(fd)
        raise
    return path, fd, header


@dataclasses.dataclass(frozen=True)
class SegmentRange:
    """Bytes of one segment that kv compaction may read from another thread."""

    path: pathlib.Path
    first_index: int
    read_end: int  # file offset where the stable entries end
    target: bool  # sealed and wholly covered: kv compaction may rewrite it
    identity: tuple[int, int, int]  # Segment.identity when the range was taken


@dataclasses.dataclass(frozen=True)
class SegmentInfo:
    path: pathlib.Path
    first_index: int
    last_index: int  # last index present; first_index - 1 when the segment holds none
    count: int
    size: int  # bytes of header and records
    sealed: bool
    kv_compacted: bool


class Segment:
    """Metadata and index of one segment file. Owned and mutated by `SegmentedLog` only."""

    def __init__(
        self,
        path: pathlib.Path,
        header: SegmentHeader,
        *,
        header_crc: int,
        data_end: int,
        last_index: int,
        count: int,
        run_starts: array,
        run_terms: array,
        last_commit_crc: int,
        offsets: array | None,
        indexes: array | None,
        sidecar: SidecarHead | None = None,
    ) -> None:
        self.path = path
        self.header = header
        self.first_index = header.first_index
        self.sparse = header.kv_compacted
        self.header_crc = header_crc
        self.data_end = data_end
        self.last_index = last_index  # last present index; first_index - 1 when empty
        self.count = count
        self.run_starts = run_starts
        self.run_terms = run_terms
        self.last_commit_crc = last_commit_crc
        self._offsets = offsets
        self._indexes = indexes
        self._sidecar = sidecar
        self.sealed = True
        self.fd: int | None = None  # read-write for the open segment, read-only otherwise

    @classmethod
    def create(
        cls, directory: pathlib.Path, first_index: int, size: int, *, prealloc: bool
    ) -> Segment:
        """A new, empty, open segment (see create_segment_file)."""
        path, fd, header = create_segment_file(directory, first_index, size, prealloc=prealloc)
        segment = cls(
            path,
            decode_header(header),
            header_crc=header_crc_of(header),
            data_end=HEADER_SIZE,
            last_index=first_index - 1,
            count=0,
            run_starts=array("Q"),
            run_terms=array("Q"),
            last_commit_crc=0,
            offsets=array("Q"),
            indexes=None,
        )
        segment.sealed = False
        segment.fd = fd
        return segment

    @classmethod
    def from_scan(cls, path: pathlib.Path, scan: SegmentScan, header_crc: int) -> Segment:
        return cls(
            path,
            scan.header,
            header_crc=header_crc,
            data_end=scan.data_end,
            last_index=scan.last_index,
            count=scan.count,
            run_starts=scan.run_starts,
            run_terms=scan.run_terms,
            last_commit_crc=scan.last_commit_crc,
            offsets=scan.offsets,
            indexes=scan.indexes,
        )

    @classmethod
    def from_sidecar(
        cls, path: pathlib.Path, header: SegmentHeader, header_crc: int, head: SidecarHead
    ) -> Segment:
        return cls(
            path,
            header,
            header_crc=header_crc,
            data_end=head.data_end,
            last_index=head.last_index,
            count=head.count,
            run_starts=head.run_starts,
            run_terms=head.run_terms,
            last_commit_crc=head.last_commit_crc,
            offsets=None,
            indexes=None,
            sidecar=head,
        )

    def __repr__(self) -> str:
        state = "sealed" if self.sealed else "open"
        return f"<Segment {self.path.name} {state} {self.first_index}..{self.last_index}>"

    @property
    def last_term(self) -> int | None:
        return self.run_terms[-1] if self.run_terms else None

    @property
    def identity(self) -> tuple[int, int, int]:
        """Identifies one version of the file (truncation and kv compaction change it)."""
        return (self.header_crc, self.data_end, self.last_commit_crc)

    # -- index ---------------------------------------------------------------------------

    @property
    def index_loaded(self) -> bool:
        return self._offsets is not None

    def offsets(self) -> array:
        if self._offsets is None:
            self._load_index()
        assert self._offsets is not None
        return self._offsets

    def _load_index(self) -> None:
        if self._sidecar is not None:
            try:
                self._offsets, self._indexes = read_sidecar_arrays(
                    sidecar_path(self.path), self._sidecar
                )
                return
            except StaleSidecar:
                pass
        # The sidecar went bad after the log was opened: the segment itself is the truth.
        fd = os.open(self.path, os.O_RDONLY)
        try:
            scan = scan_segment(fd, self.path, file_size=os.fstat(fd).st_size)
        finally:
            os.close(fd)
        if scan.damage is not None:
            raise WalCorruption(self.path, scan.damage.damage_offset, scan.damage.reason)
        if scan.count != self.count or scan.data_end != self.data_end:
            raise WalCorruption(self.path, scan.data_end, "segment changed under an open log")
        self._offsets, self._indexes = scan.offsets, scan.indexes

    def sparse_indexes(self) -> array | None:
        """The index of each position (sparse segments only; None for dense ones)."""
        self.offsets()
        return self._indexes

    def unload_index(self) -> None:
        """Drop a sealed segment's arrays to bound memory; they reload from the sidecar."""
        if self.sealed and self._sidecar is not None:
            self._offsets = None
            self._indexes = None

    def attach_sidecar(self, head: SidecarHead) -> None:
        self._sidecar = head

    def position_of(self, index: int) -> int | None:
        """Position of the entry with `index`, or None if this segment does not hold it."""
        if index < self.first_index or index > self.last_index:
            return None
        if not self.sparse:
            return index - self.first_index
        self.offsets()
        assert self._indexes is not None
        position = bisect.bisect_left(self._indexes, index)
        if position < self.count and self._indexes[position] == index:
            return position
        return None

    def lower_bound(self, index: int) -> int:
        """Position of the first entry whose index is >= `index` (count if none)."""
        if index <= self.first_index:
            return 0
        if index > self.last_index:
            return self.count
        if not self.sparse:
            return index - self.first_index
        self.offsets()
        assert self._indexes is not None
        return bisect.bisect_left(self._indexes, index)

    def index_at(self, position: int) -> int:
        if not self.sparse:
            return self.first_index + position
        self.offsets()
        assert self._indexes is not None
        return self._indexes[position]

    def frame_span(self, position: int) -> tuple[int, int]:
        """(start, end) file offsets of the frame at `position`; `end` may include a commit."""
        offsets = self.offsets()
        start = offsets[position]
        end = offsets[position + 1] if position + 1 < self.count else self.data_end
        return start, end

    def term_at(self, index: int) -> int | None:
        """Term of the run covering `index`, or None if `index` precedes this segment's runs."""
        run = bisect.bisect_right(self.run_starts, index) - 1
        return self.run_terms[run] if run >= 0 else None

    # -- mutation by the log --------------------------------------------------------------

    def add_batch(
        self,
        first_index: int,
        last_index: int,
        offsets: list[int],
        runs: list[tuple[int, int]],
        start: int,
        end: int,
        commit_crc: int,
    ) -> None:
        """Record a batch just written at [start, end): its frames start at `start` plus
        `offsets`, its term runs are `runs` (see wal.format.EncodedBatch)."""
        index = self.offsets()
        index.extend([start + offset for offset in offsets])
        if self._indexes is not None:
            self._indexes.extend(range(first_index, last_index + 1))
        last_term = self.last_term
        for run_start, term in runs:
            if term != last_term:
                self.run_starts.append(run_start)
                self.run_terms.append(term)
                last_term = term
        self.count += len(offsets)
        self.last_index = last_index
        self.data_end = end
        self.last_commit_crc = commit_crc

    def drop_from(self, position: int, data_end: int, commit_crc: int) -> None:
        """Forget entries at `position` and after (the file was cut by the caller)."""
        offsets = self.offsets()
        del offsets[position:]
        if self._indexes is not None:
            del self._indexes[position:]
        self.count = position
        self.last_index = self.index_at(position - 1) if position else self.first_index - 1
        keep = bisect.bisect_right(self.run_starts, self.last_index)
        del self.run_starts[keep:]
        del self.run_terms[keep:]
        self.data_end = data_end
        self.last_commit_crc = commit_crc

    def batch_start(self, position: int) -> int:
        """Position of the first entry of the batch holding the entry at `position`.

        Walks back frame by frame (a few bytes read each); only truncation needs it.
        """
        while position > 0 and not self._commit_precedes(position):
            position -= 1
        return position

    def _commit_precedes(self, position: int) -> bool:
        """Whether a commit record sits between frame `position - 1` and frame `position`.

        Decided by the previous frame's length word, which recovery already validated, so
        payload bytes that happen to look like a commit record cannot fool it.
        """
        assert self.fd is not None
        previous_start, next_start = self.frame_span(position - 1)[0], self.offsets()[position]
        (length,) = WORD.unpack(read_exact(self.fd, WORD.size, previous_start))
        return previous_start + PREFIX.size + length != next_start

    def commit_crc_before(self, offset: int) -> int:
        """Stored checksum of the commit record ending at `offset` (0 at the data start)."""
        if offset <= HEADER_SIZE:
            return 0
        assert self.fd is not None
        return PREFIX.unpack(read_exact(self.fd, PREFIX.size, offset - COMMIT_SIZE))[1]

    # -- reads ----------------------------------------------------------------------------

    def read_entry(self, fd: int, position: int) -> Entry:
        start, end = self.frame_span(position)
        data = read_exact(fd, end - start, start)
        try:
            decoded = decode_record(data, 0)
        except CorruptRecord as exc:
            raise WalCorruption(self.path, start, exc.reason) from None
        if not isinstance(decoded, tuple) or not isinstance(decoded[0], Entry):
            raise WalCorruption(self.path, start, "no entry frame where the index points")
        return decoded[0]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def iter_frames(
    fd: int,
    path: pathlib.Path,
    start: int,
    end: int,
) -> Iterator[tuple[bytes, int, int, int, int]]:
    """Walk the entry frames in the file range [start, end), skipping commit records.

    Yields ``(buffer, pos, frame_end, crc, base)`` where ``base + pos`` is the frame's file
    offset, so callers slice what they need without a copy per field. Reads in large chunks,
    so memory stays flat however long the range is.
    """
    buf = b""
    base = start  # file offset of buf[0]
    pos = 0
    unpack_prefix = PREFIX.unpack_from
    while base + pos < end:
        available = len(buf) - pos
        size = 0
        if available >= PREFIX.size:
            word, crc = unpack_prefix(buf, pos)
            if word == COMMIT_MARKER:
                size = COMMIT_SIZE
            elif word & MARKER_BIT or word < MIN_ENTRY_LENGTH:
                raise WalCorruption(path, base + pos, f"invalid record length word 0x{word:08x}")
            else:
                size = PREFIX.size + word
        if available < max(size, PREFIX.size):
            need = max(size, PREFIX.size)
            if base + pos + need > end:
                raise WalCorruption(path, base + pos, "record runs past the end of segment data")
            fetch = min(max(READ_CHUNK, need - available), end - base - len(buf))
            chunk = read_exact(fd, fetch, base + len(buf))
            if len(chunk) < need - available:
                raise WalCorruption(path, base + len(buf), "segment file shorter than its index")
            buf = buf[pos:] + chunk
            base += pos
            pos = 0
            continue
        if word != COMMIT_MARKER:
            yield buf, pos, pos + size, crc, base
        pos += size


def iter_entries(
    fd: int,
    path: pathlib.Path,
    start: int,
    end: int,
    lo: int,
    hi: int,
) -> Iterator[Entry]:
    """Entries with lo <= index < hi found in the file range [start, end), checksums checked."""
    unpack_head = ENTRY_BODY_HEAD.unpack_from
    for buf, pos, frame_end, crc, base in iter_frames(fd, path, start, end):
        body = buf[pos + PREFIX.size : frame_end]
        if crc32c(body) != crc:
            raise WalCorruption(path, base + pos, "entry checksum mismatch")
        index, term, kind, timestamp = unpack_head(body)
        if index >= hi:
            return
        if index >= lo:
            yield Entry(index, term, kind, timestamp, body[MIN_ENTRY_LENGTH:])


def iter_raw(
    fd: int,
    path: pathlib.Path,
    start: int,
    end: int,
    lo: int,
    hi: int,
) -> Iterator[tuple[int, bytes]]:
    """(index, frame bytes) for entries with lo <= index < hi; checksums checked."""
    index_at = ENTRY_BODY_HEAD.unpack_from
    for buf, pos, frame_end, crc, base in iter_frames(fd, path, start, end):
        frame = buf[pos:frame_end]
        if crc32c(frame[PREFIX.size :]) != crc:
            raise WalCorruption(path, base + pos, "entry checksum mismatch")
        index = index_at(frame, PREFIX.size)[0]
        if index >= hi:
            return
        if index >= lo:
            yield index, frame
