"""The pure codec of wal.format: round trips, need-more at every cut, garbage is named."""

from __future__ import annotations

import pytest
from wal_helpers import make_entries

from wal.entry import Entry, EntryKind
from wal.errors import CorruptRecord
from wal.format import (
    COMMIT_SIZE,
    HEADER_SIZE,
    NEED_MORE,
    UNWRITTEN,
    CommitRecord,
    decode_entry_frame,
    decode_header,
    decode_record,
    encode_batch,
    encode_entries,
    encode_header,
)


def test_header_round_trip_and_rejects_damage() -> None:
    header = encode_header(42, flags=1)
    assert len(header) == HEADER_SIZE
    parsed = decode_header(header)
    assert (parsed.first_index, parsed.kv_compacted) == (42, True)
    for offset in range(HEADER_SIZE - 4):  # the last 4 bytes are reserved padding
        damaged = bytearray(header)
        damaged[offset] ^= 0xFF
        with pytest.raises(CorruptRecord) as info:
            decode_header(bytes(damaged))
        assert info.value.offset == 0
    with pytest.raises(CorruptRecord, match="expected 32"):
        decode_header(header[:10])


def test_batch_decodes_record_by_record() -> None:
    entries = [*make_entries(5, 3, term=2, size=7), Entry(8, 3, 2, 99, b"")]
    frames, commit, *_ = encode_batch(entries, synced_through=4)
    buf = frames + commit
    pos = 0
    decoded = []
    while pos < len(buf):
        result = decode_record(buf, pos)
        assert isinstance(result, tuple)
        record, pos = result
        decoded.append(record)
    assert decoded[:-1] == entries
    last = decoded[-1]
    assert isinstance(last, CommitRecord)
    assert (last.first_index, last.count, last.last_index, last.synced_through) == (5, 4, 8, 4)
    assert not last.truncates


def test_every_strict_prefix_of_a_record_needs_more() -> None:
    frames, commit, *_ = encode_batch(make_entries(1, 1, size=30), synced_through=0)
    for record in (frames, commit):
        for cut in range(len(record)):
            assert decode_record(record[:cut], 0) is NEED_MORE


def test_zero_word_is_unwritten_space() -> None:
    assert decode_record(bytes(64), 0) is UNWRITTEN


def test_flipped_bytes_are_reported_with_their_offset() -> None:
    frames = encode_entries(make_entries(1, 1, size=16))
    prefix = b"\x00" * 8  # decode at a non-zero position to check the reported offset
    for offset in range(4, len(frames)):  # the length word itself may turn into NEED_MORE
        damaged = bytearray(prefix + frames)
        damaged[len(prefix) + offset] ^= 0x01
        with pytest.raises(CorruptRecord) as info:
            decode_record(bytes(damaged), len(prefix))
        assert info.value.offset == len(prefix)


def test_commit_record_damage_is_detected() -> None:
    _frames, commit, *_ = encode_batch(make_entries(1, 2), synced_through=0)
    assert len(commit) == COMMIT_SIZE
    for offset in range(4, COMMIT_SIZE):
        damaged = bytearray(commit)
        damaged[offset] ^= 0x10
        with pytest.raises(CorruptRecord, match="commit record checksum"):
            decode_record(bytes(damaged), 0)
    damaged = bytearray(commit)
    damaged[0] ^= 0x01  # still has the marker bit, but is no known marker
    with pytest.raises(CorruptRecord, match="unknown record marker"):
        decode_record(bytes(damaged), 0)


def test_short_length_word_is_corrupt() -> None:
    with pytest.raises(CorruptRecord, match="shorter than an entry header"):
        decode_record(b"\x03\x00\x00\x00" + bytes(40), 0)


def test_encoding_rejects_bad_fields_naming_them() -> None:
    with pytest.raises(ValueError, match="kind must be an int in"):
        encode_entries([Entry(1, 1, 300, 0, b"")])
    with pytest.raises(ValueError, match="payload must be bytes"):
        encode_entries([Entry(1, 1, 0, 0, "text")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index must be an int"):
        encode_entries([Entry(-1, 1, 0, 0, b"")])
    with pytest.raises(ValueError, match="expected an Entry"):
        encode_entries([(1, 1, 0, 0, b"")])  # type: ignore[list-item]


def test_batch_bookkeeping_and_checks() -> None:
    entries = [*make_entries(10, 2, term=3, size=5), *make_entries(12, 1, term=5, size=0)]
    entries.append(make_entries(13, 1, term=5, kind=EntryKind.CONFIGURATION)[0])
    batch = encode_batch(entries, 9, first_index=10, previous_term=3)
    assert batch.runs == [(10, 3), (12, 5)]
    assert batch.configuration
    assert batch.offsets == [0, 38, 76, 109]  # 33-byte head + payload per frame
    assert len(batch.frames) == 109 + 33 + 20
    with pytest.raises(ValueError, match=r"does not continue the log \(expected 11\)"):
        encode_batch(entries, 0, first_index=11)
    with pytest.raises(ValueError, match="term 3 below 4"):
        encode_batch(entries, 0, previous_term=4)
    with pytest.raises(ValueError, match="at least one entry"):
        encode_batch([], 0)


def test_decode_entry_frame_accepts_exactly_one_frame() -> None:
    entry = make_entries(3, 1)[0]
    frame = encode_entries([entry])
    assert decode_entry_frame(frame) == entry
    with pytest.raises(CorruptRecord, match="not exactly one entry frame"):
        decode_entry_frame(frame + frame)
    commit = encode_batch([entry], 0).commit
    with pytest.raises(CorruptRecord, match="a commit record"):
        decode_entry_frame(commit)
