"""The on-disk format of a segment file: header, entry frames and commit records.

Theory of operation
-------------------
A log is a directory of *segment* files named ``<first index, 20 digits>.wal``. Every segment
starts with a 32-byte header, then holds *records* back to back (all integers little-endian)::

    header   magic "\\x89CTWAL\\r\\n" | version u16 | flags u16 | reserved u32 |
             first_index u64 | crc32c(previous 24 bytes) u32 | reserved u32

    entry    length u32 | crc32c u32 | index u64 | term u64 | kind u8 | timestamp u64 | payload
             length counts the bytes after the crc (25 + len(payload)) and is below 2**31;
             the crc covers exactly those bytes. `timestamp` (the leader's wall-clock time
             in ms when it accepted the entry) is an addition to the architecture's frame:
             state machines need a deterministic notion of time that every replica agrees
             on, the HTTP follower reports it, and kv compaction ages tombstones by it.

    commit   marker u32 = 0xC07A11ED | crc32c u32 | first_index u64 | count u32 | flags u32 |
             batch_crc u32 | synced_through u64;  the crc covers the 28 bytes after it.

Entries are written in *batches*, one ``write`` per batch, and each batch is closed by a commit
record naming the batch's first index and entry count and carrying ``batch_crc``, the crc32c of
all the batch's entry frames back to back. A batch whose commit record is missing or does not
match is a half-written batch, and recovery drops it whole. Because the batch checksum covers
every byte, recovery validates a batch with a single C-speed checksum instead of one per entry.

``synced_through`` is the highest index known to be fsynced when the batch was written. It
lets recovery tell a torn tail (damage followed at most by batches written after the last
fsync, none of them ever acknowledged) from real corruption (damage followed by a batch whose
commit says the damaged entries had already been made durable).

Commit flag ``TRUNCATES`` marks a commit written by a suffix truncation in the middle of a
batch: everything after it in the file is stale by design and is cut without complaint.

A length word of zero marks space that was never written: segments are preallocated, so the
tail of the open segment reads as zeros. Header flag ``KV_COMPACTED`` marks a segment rewritten
by key-value compaction, whose entries are increasing but no longer contiguous.

Decoding follows h11's style: :func:`decode_record` returns :data:`NEED_MORE` when the buffer
ends inside a record (so a torn tail is "need more" at end of file), :data:`UNWRITTEN` at a
zero length word, and raises :class:`~wal.errors.CorruptRecord` with the offset on garbage.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add
from typing import Literal, NamedTuple

from google_crc32c import extend as crc32c_extend
from google_crc32c import value as crc32c

from wal.entry import Entry, EntryKind
from wal.errors import CorruptRecord

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"\x89CTWAL\r\n"
SEGMENT_SUFFIX = ".wal"

HEADER = struct.Struct("<8sHHIQ")
HEADER_CRC = struct.Struct("<II")
HEADER_SIZE = HEADER.size + HEADER_CRC.size  # data starts here
FLAG_KV_COMPACTED = 0x1

# Frame prefix shared by both record types: a length (entries) or a marker (commit records).
PREFIX = struct.Struct("<II")
WORD = struct.Struct("<I")
ENTRY_BODY_HEAD = struct.Struct("<QQBQ")  # index, term, kind, timestamp
ENTRY_HEAD = struct.Struct("<IIQQBQ")  # prefix + body head, for parsing in one call
ENTRY_OVERHEAD = ENTRY_HEAD.size
MIN_ENTRY_LENGTH = ENTRY_BODY_HEAD.size
MARKER_BIT = 0x8000_0000
MAX_ENTRY_LENGTH = MARKER_BIT - 1

COMMIT_MARKER = 0xC07A11ED
COMMIT_MARKER_BYTES = WORD.pack(COMMIT_MARKER)
COMMIT = struct.Struct("<IIQIIIQ")
COMMIT_BODY = struct.Struct("<QIIIQ")
COMMIT_SIZE = COMMIT.size
COMMIT_FLAG_TRUNCATES = 0x1
CONFIGURATION_KIND = int(EntryKind.CONFIGURATION)


class Marker(enum.Enum):
    """Non-record outcomes of :func:`decode_record`."""

    NEED_MORE = "need more data"
    UNWRITTEN = "unwritten (zero-filled) space"


NEED_MORE = Marker.NEED_MORE
UNWRITTEN = Marker.UNWRITTEN


class SegmentHeader(NamedTuple):
    version: int
    flags: int
    first_index: int

    @property
    def kv_compacted(self) -> bool:
        return bool(self.flags & FLAG_KV_COMPACTED)


class CommitRecord(NamedTuple):
    first_index: int
    count: int
    flags: int
    batch_crc: int
    synced_through: int

    @property
    def last_index(self) -> int:
        return self.first_index + self.count - 1

    @property
    def truncates(self) -> bool:
        return bool(self.flags & COMMIT_FLAG_TRUNCATES)


def encode_header(first_index: int, flags: int = 0) -> bytes:
    head = HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, flags, 0, first_index)
    return head + HEADER_CRC.pack(crc32c(head), 0)


def header_crc_of(header: bytes) -> int:
    """The checksum stored in an encoded header (it identifies one version of a segment)."""
    return HEADER_CRC.unpack_from(header, HEADER.size)[0]


def decode_header(data: bytes) -> SegmentHeader:
    """Parse a segment header; raises CorruptRecord(offset 0) when it is not a valid one."""
    if len(data) < HEADER_SIZE:
        raise CorruptRecord(0, f"segment header is {len(data)} bytes, expected {HEADER_SIZE}")
    magic, version, flags, _reserved, first_index = HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise CorruptRecord(0, f"bad segment magic {magic!r}")
    (stored_crc, _pad) = HEADER_CRC.unpack_from(data, HEADER.size)
    if crc32c(data[: HEADER.size]) != stored_crc:
        raise CorruptRecord(0, "segment header checksum mismatch")
    if version != FORMAT_VERSION:
        raise CorruptRecord(0, f"unsupported segment format version {version}")
    return SegmentHeader(version, flags, first_index)


class EncodedBatch(NamedTuple):
    """One batch ready to write, with what the in-memory index needs to know about it."""

    frames: bytes  # the entry frames back to back
    commit: bytes  # the commit record closing them
    offsets: list[int]  # where each frame starts within `frames`
    runs: list[tuple[int, int]]  # (first index, term) of each term run, the first included
    configuration: bool  # whether any entry is a configuration entry


def encode_batch(
    entries: Sequence[Entry],
    synced_through: int,
    *,
    first_index: int | None = None,
    previous_term: int = 0,
) -> EncodedBatch:
    """Encode and check a batch in one pass: indexes must run contiguously from
    `first_index` (default: the first entry's), terms never drop below `previous_term`.

    One loop does the checking, the framing and the bookkeeping, because at ~100-byte
    entries the per-entry Python work is what separates an append from a raw write.
    """
    if not entries:
        raise ValueError("a batch needs at least one entry")
    first = entries[0]
    expected = first.index if first_index is None else first_index
    last_term = previous_term
    parts: list[bytes] = []
    runs: list[tuple[int, int]] = []
    configuration = False
    pack_head = ENTRY_BODY_HEAD.pack
    pack_prefix = PREFIX.pack
    entry: object = first
    try:
        if first.term < last_term:
            raise ValueError(f"entry {first.index} has term {first.term} below {last_term}")
        last_term = first.term
        runs.append((first.index, last_term))
        for entry in entries:
            index = entry.index
            term = entry.term
            payload = entry.payload
            kind = entry.kind
            if index != expected:
                raise ValueError(
                    f"entry index {index} does not continue the log (expected {expected})"
                )
            if term != last_term:
                if term < last_term:
                    raise ValueError(f"entry {index} has term {term} below {last_term}")
                runs.append((index, term))
                last_term = term
            if kind == CONFIGURATION_KIND:
                configuration = True
            head = pack_head(index, term, kind, entry.timestamp)
            # extend() chains the checksum over head and payload without concatenating them.
            parts += (
                pack_prefix(MIN_ENTRY_LENGTH + len(payload), crc32c_extend(crc32c(head), payload)),
                head,
                payload,
            )
            expected += 1
    except (struct.error, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot encode {entry!r}: {_field_problem(entry)}") from exc
    # Frame sizes and offsets by C-level iteration rather than per entry in the loop.
    payload_sizes = list(map(len, parts[2::3]))
    if max(payload_sizes) > MAX_ENTRY_LENGTH - MIN_ENTRY_LENGTH:
        big = payload_sizes.index(max(payload_sizes))
        raise ValueError(f"entry {first.index + big}: payload is too big")
    frame_sizes = map(add, payload_sizes, repeat(ENTRY_OVERHEAD))
    offsets = list(accumulate(frame_sizes, initial=0))
    offsets.pop()
    frames = b"".join(parts)
    commit = encode_commit(first.index, len(entries), crc32c(frames), synced_through)
    return EncodedBatch(frames, commit, offsets, runs, configuration)


def encode_entries(entries: Sequence[Entry]) -> bytes:
    """The frames of `entries` (contiguous indexes) back to back, without a commit record."""
    return encode_batch(entries, 0).frames


def _field_problem(entry: object) -> str:
    if not isinstance(entry, Entry):
        return f"expected an Entry, got {type(entry).__name__}"
    for name, upper in (("index", 2**64), ("term", 2**64), ("timestamp", 2**64), ("kind", 256)):
        number = getattr(entry, name)
        if not isinstance(number, int) or not 0 <= number < upper:
            return f"{name} must be an int in [0, {upper}), got {number!r}"
    if type(entry.payload) is not bytes:
        return f"payload must be bytes, got {type(entry.payload).__name__}"
    return "unencodable field"


def encode_commit(
    first_index: int, count: int, batch_crc: int, synced_through: int, flags: int = 0
) -> bytes:
    body = COMMIT_BODY.pack(first_index, count, flags, batch_crc, synced_through)
    return PREFIX.pack(COMMIT_MARKER, crc32c(body)) + body


def decode_commit(buf: bytes, pos: int) -> CommitRecord:
    """Parse the commit record at `pos` (the caller checked the marker and the length)."""
    _marker, stored_crc, *fields = COMMIT.unpack_from(buf, pos)
    if crc32c(buf[pos + PREFIX.size : pos + COMMIT_SIZE]) != stored_crc:
        raise CorruptRecord(pos, "commit record checksum mismatch")
    return CommitRecord(*fields)


Decoded = tuple[Entry | CommitRecord, int] | Literal[Marker.NEED_MORE, Marker.UNWRITTEN]


def decode_record(buf: bytes, pos: int) -> Decoded:
    """Decode the record starting at `buf[pos]`.

    Returns ``(record, next_pos)``, :data:`NEED_MORE` if `buf` ends inside the record, or
    :data:`UNWRITTEN` at a zero length word. Raises CorruptRecord on anything invalid.
    """
    available = len(buf) - pos
    if available < WORD.size:
        return NEED_MORE
    (word,) = WORD.unpack_from(buf, pos)
    if word == 0:
        return UNWRITTEN
    if word & MARKER_BIT:
        if word != COMMIT_MARKER:
            raise CorruptRecord(pos, f"unknown record marker 0x{word:08x}")
        if available < COMMIT_SIZE:
            return NEED_MORE
        return decode_commit(buf, pos), pos + COMMIT_SIZE
    if word < MIN_ENTRY_LENGTH:
        raise CorruptRecord(pos, f"entry length {word} is shorter than an entry header")
    end = pos + PREFIX.size + word
    if end > len(buf):
        return NEED_MORE
    return decode_entry_at(buf, pos, end), end


def decode_entry_at(buf: bytes, pos: int, end: int) -> Entry:
    """Decode the entry frame occupying ``buf[pos:end]``, checking its crc."""
    body = buf[pos + PREFIX.size : end]
    (_length, stored_crc) = PREFIX.unpack_from(buf, pos)
    if crc32c(body) != stored_crc:
        raise CorruptRecord(pos, "entry checksum mismatch")
    index, term, kind, timestamp = ENTRY_BODY_HEAD.unpack_from(body)
    return Entry(index, term, kind, timestamp, body[MIN_ENTRY_LENGTH:])


def decode_entry_frame(frame: bytes) -> Entry:
    """Decode one entry frame as yielded by ``SegmentedLog.read_range_raw`` (crc checked)."""
    decoded = decode_record(frame, 0)
    if not isinstance(decoded, tuple) or decoded[1] != len(frame):
        raise CorruptRecord(0, f"not exactly one entry frame ({len(frame)} bytes)")
    record = decoded[0]
    if not isinstance(record, Entry):
        raise CorruptRecord(0, "a commit record, not an entry frame")
    return record
