"""The records of a ``GET /log`` stream and their two encodings (sans-IO).

A response body is a sequence of records: one :class:`Header`, then :class:`EntryRecord`\\ s
in index order, then one :class:`Trailer`; an :class:`ErrorRecord` replaces the trailer when
the server had to stop early (the range was compacted while being read, say). A body without
a trailer was cut off: the entries before the cut are still good, each one checks on its own.

* **msgpack** (``application/msgpack``, the default): each record is one msgpack array,
  back to back: ``[0, seq, term, kind, timestamp, crc, payload]``, ``[1, prev_seq,
  prev_term, commit]``, ``[2, next_seq, commit]``, ``[3, message]``.
* **JSON lines** (``application/jsonl``): one object per line with a ``type`` of ``entry``
  (payload base64 in ``data``), ``header``, ``trailer`` or ``error``; for people and curl.

``crc`` is the WAL frame's checksum (crc32c over index, term, kind, timestamp and payload as
``wal.format`` lays them out), sent as stored, so the follower recomputes it from the fields
it received and any damage on the way (or in the source's memory) is caught.

:class:`RecordDecoder` takes bytes as they arrive and hands back whole records; anything that
is not a well-formed record raises :class:`MalformedRecord` naming the byte offset.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NamedTuple

import msgpack
from google_crc32c import extend as crc32c_extend
from google_crc32c import value as crc32c

from wal.entry import Entry
from wal.format import ENTRY_BODY_HEAD, ENTRY_HEAD, ENTRY_OVERHEAD

MSGPACK = "application/msgpack"
JSONL = "application/jsonl"
FORMATS = (MSGPACK, JSONL)
MAX_RECORD_BYTES = 64 << 20  # one entry's payload is far below this

_ENTRY, _HEADER, _TRAILER, _ERROR = 0, 1, 2, 3
_U64 = 1 << 64


class EntryRecord(NamedTuple):
    seq: int  # the log index
    term: int
    kind: int
    timestamp: int  # the leader's clock in ms when it accepted the entry
    crc: int
    payload: bytes

    def to_entry(self) -> Entry:
        return Entry(self.seq, self.term, self.kind, self.timestamp, self.payload)


class Header(NamedTuple):
    prev_seq: int  # the entry before the first one sent
    prev_term: int  # its term (the snapshot's term when it was compacted)
    commit: int  # the highest sequence the server could serve when it started


class Trailer(NamedTuple):
    next_seq: int  # where the next request should start
    commit: int


class ErrorRecord(NamedTuple):
    message: str


Record = EntryRecord | Header | Trailer | ErrorRecord


class MalformedRecord(ValueError):
    """Bytes that are not a record of this protocol; the message names the byte offset."""


def entry_crc(seq: int, term: int, kind: int, timestamp: int, payload: bytes) -> int:
    """The checksum the WAL stores for an entry with these fields."""
    return crc32c_extend(crc32c(ENTRY_BODY_HEAD.pack(seq, term, kind, timestamp)), payload)


def choose_format(accept: str | None) -> str | None:
    """The encoding to answer with for an ``Accept`` header; None if none is acceptable."""
    if not accept:
        return MSGPACK
    offered = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    for kind in offered:
        if kind in FORMATS:
            return kind
        if kind in ("application/x-ndjson", "application/json-lines"):
            return JSONL
    if any(kind in ("*/*", "application/*") for kind in offered):
        return MSGPACK
    return None


class Encoder:
    """Encodes records in one format; entries straight from WAL frames, without decoding."""

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
        self.fmt = fmt
        self._packer = msgpack.Packer(use_bin_type=True)

    def frame(self, frame: bytes) -> bytes:
        """The entry record for one raw WAL frame (as ``read_range_raw`` yields it)."""
        _length, crc, seq, term, kind, timestamp = ENTRY_HEAD.unpack_from(frame)
        payload = frame[ENTRY_OVERHEAD:]
        if self.fmt == MSGPACK:
            return self._packer.pack([_ENTRY, seq, term, kind, timestamp, crc, payload])
        return self._entry_line(seq, term, kind, timestamp, crc, payload)

    def _entry_line(
        self, seq: int, term: int, kind: int, timestamp: int, crc: int, payload: bytes
    ) -> bytes:
        return self._line(
            {
                "type": "entry",
                "seq": seq,
                "term": term,
                "kind": kind,
                "ts": timestamp,
                "crc": crc,
                "data": base64.b64encode(payload).decode("ascii"),
            }
        )

    def record(self, record: Record) -> bytes:
        """Any record (entries built from their fields, for tests and the follower's source)."""
        if isinstance(record, EntryRecord):
            if self.fmt == MSGPACK:
                return self._packer.pack([_ENTRY, *record])
            return self._entry_line(*record)
        if isinstance(record, Header):
            if self.fmt == MSGPACK:
                return self._packer.pack([_HEADER, *record])
            return self._line({"type": "header", **record._asdict()})
        if isinstance(record, Trailer):
            if self.fmt == MSGPACK:
                return self._packer.pack([_TRAILER, *record])
            return self._line({"type": "trailer", **record._asdict()})
        if self.fmt == MSGPACK:
            return self._packer.pack([_ERROR, record.message])
        return self._line({"type": "error", "message": record.message})

    @staticmethod
    def _line(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class RecordDecoder:
    """Feed bytes as they arrive; get the whole records they complete."""

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.fmt = fmt
        self.offset = 0  # bytes of the body consumed by whole records
        self._unpacker = msgpack.Unpacker(
            raw=False, max_buffer_size=2 * MAX_RECORD_BYTES, strict_map_key=True
        )
        self._pending = bytearray()
        self._fed = 0  # bytes handed to the msgpack unpacker

    def feed(self, data: bytes) -> list[Record]:
        if self.fmt == MSGPACK:
            return self._feed_msgpack(data)
        return self._feed_lines(data)

    def finish(self) -> None:
        """The body ended; raises if it ended inside a record."""
        left = len(self._pending) if self.fmt == JSONL else self._unpacker_buffered()
        if left:
            raise MalformedRecord(f"offset {self.offset}: body ends inside a record")

    def _unpacker_buffered(self) -> int:
        # Unpacker has no public "bytes buffered" query; tell() is the bytes consumed.
        return self._fed - self._unpacker.tell()

    def _feed_msgpack(self, data: bytes) -> list[Record]:
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull as exc:
            raise MalformedRecord(f"offset {self.offset}: record larger than allowed") from exc
        self._fed += len(data)
        out: list[Record] = []
        while True:
            start = self.offset
            try:
                item = self._unpacker.unpack()
            except msgpack.OutOfData:
                return out
            except (ValueError, msgpack.FormatError, msgpack.StackError) as exc:
                raise MalformedRecord(f"offset {start}: not msgpack: {exc}") from exc
            self.offset = self._unpacker.tell()
            out.append(_from_array(item, start))

    def _feed_lines(self, data: bytes) -> list[Record]:
        self._pending += data
        out: list[Record] = []
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                if len(self._pending) > 2 * MAX_RECORD_BYTES:
                    raise MalformedRecord(f"offset {self.offset}: line longer than allowed")
                return out
            line = bytes(self._pending[:end])
            del self._pending[: end + 1]
            start = self.offset
            self.offset += end + 1
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise MalformedRecord(f"offset {start}: not JSON: {exc}") from exc
            out.append(_from_object(obj, start))


def _u64(value: Any, what: str, offset: int) -> int:
    if type(value) is not int or not 0 <= value < _U64:
        raise MalformedRecord(f"offset {offset}: {what} must be an unsigned 64-bit int")
    return value


def _from_array(item: Any, offset: int) -> Record:
    if type(item) is not list or not item:
        raise MalformedRecord(f"offset {offset}: a record is a non-empty array")
    if len(item) == 7 and item[0] == _ENTRY:
        # The hot path, one check per field in one expression: every entry comes through here.
        _tag, seq, term, kind, timestamp, crc, payload = item
        if (
            type(seq) is int
            and type(term) is int
            and type(kind) is int
            and type(timestamp) is int
            and type(crc) is int
            and type(payload) is bytes
            and 0 <= seq < _U64
            and 0 <= term < _U64
            and 0 <= kind < 256
            and 0 <= timestamp < _U64
            and 0 <= crc < 1 << 32
        ):
            return EntryRecord(seq, term, kind, timestamp, crc, payload)
    tag, fields = item[0], item[1:]
    if tag == _ENTRY and len(fields) == 6:
        seq, term, kind, timestamp, crc, payload = fields
        if type(payload) is not bytes:
            raise MalformedRecord(f"offset {offset}: entry payload must be bytes")
        return _entry(seq, term, kind, timestamp, crc, payload, offset)
    if tag == _HEADER and len(fields) == 3:
        prev_seq, prev_term, commit = (_u64(v, "header field", offset) for v in fields)
        return Header(prev_seq, prev_term, commit)
    if tag == _TRAILER and len(fields) == 2:
        next_seq, commit = (_u64(v, "trailer field", offset) for v in fields)
        return Trailer(next_seq, commit)
    if tag == _ERROR and len(fields) == 1 and type(fields[0]) is str:
        return ErrorRecord(fields[0])
    raise MalformedRecord(f"offset {offset}: unknown record {str(item)[:80]}")


def _entry(
    seq: Any, term: Any, kind: Any, timestamp: Any, crc: Any, payload: bytes, offset: int
) -> EntryRecord:
    if type(kind) is not int or not 0 <= kind < 256:
        raise MalformedRecord(f"offset {offset}: entry kind must be 0-255")
    if type(crc) is not int or not 0 <= crc < 1 << 32:
        raise MalformedRecord(f"offset {offset}: entry crc must be an unsigned 32-bit int")
    return EntryRecord(
        _u64(seq, "seq", offset),
        _u64(term, "term", offset),
        kind,
        _u64(timestamp, "timestamp", offset),
        crc,
        payload,
    )


def _from_object(obj: Any, offset: int) -> Record:
    if type(obj) is not dict:
        raise MalformedRecord(f"offset {offset}: a record is a JSON object")
    kind = obj.get("type")
    try:
        if kind == "entry":
            data = obj["data"]
            if type(data) is not str:
                raise MalformedRecord(f"offset {offset}: entry data must be base64 text")
            payload = base64.b64decode(data, validate=True)
            return _entry(
                obj["seq"], obj["term"], obj["kind"], obj["ts"], obj["crc"], payload, offset
            )
        if kind == "header":
            return Header(
                _u64(obj["prev_seq"], "prev_seq", offset),
                _u64(obj["prev_term"], "prev_term", offset),
                _u64(obj["commit"], "commit", offset),
            )
        if kind == "trailer":
            return Trailer(
                _u64(obj["next_seq"], "next_seq", offset), _u64(obj["commit"], "commit", offset)
            )
        if kind == "error" and type(obj.get("message")) is str:
            return ErrorRecord(obj["message"])
    except KeyError as exc:
        raise MalformedRecord(f"offset {offset}: {kind} record lacks {exc.args[0]!r}") from exc
    except binascii.Error as exc:
        raise MalformedRecord(f"offset {offset}: entry data is not base64: {exc}") from exc
    raise MalformedRecord(f"offset {offset}: unknown record type {kind!r}")
