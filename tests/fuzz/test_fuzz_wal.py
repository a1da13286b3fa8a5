"""Property-based fuzzing of the WAL's record decoder and of recovery on damaged files.

The bytes on disk are untrusted input (a crash, a failing disk, another program). Whatever
they hold, the decoder answers a record, NEED_MORE, UNWRITTEN or a CorruptRecord at the
offset it was given, always moving forward; and opening a log over damaged segments either
fails with a WalError or recovers a prefix of what was written, never an entry that was not.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import mutated
from wal import CorruptRecord, Entry, EntryKind, SegmentedLog, WalCorruption, WalError
from wal.format import (
    HEADER_SIZE,
    NEED_MORE,
    UNWRITTEN,
    CommitRecord,
    decode_header,
    decode_record,
    encode_batch,
    encode_header,
)

SCALE = int(os.environ.get("COTERIE_FUZZ", "1"))
FUZZ = settings(max_examples=200 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))

entries_strategy = st.lists(
    st.tuples(
        st.integers(1, 2**64 - 1),  # term (made non-decreasing below)
        st.sampled_from([int(k) for k in EntryKind]),
        st.integers(0, 2**64 - 1),
        st.binary(max_size=64),
    ),
    min_size=1,
    max_size=6,
)


def make(first: int, raw: list[tuple[int, int, int, bytes]]) -> list[Entry]:
    terms = sorted(t for t, *_ in raw)
    return [
        Entry(first + n, term, kind, stamp, payload)
        for n, (term, (_t, kind, stamp, payload)) in enumerate(zip(terms, raw, strict=True))
    ]


def walk(buf: bytes, pos: int = 0) -> list[Entry | CommitRecord]:
    """Decode records from ``pos`` until the decoder stops, checking its contract."""
    records: list[Entry | CommitRecord] = []
    while True:
        try:
            decoded = decode_record(buf, pos)
        except CorruptRecord as exc:
            assert exc.offset == pos
            return records
        if decoded is NEED_MORE or decoded is UNWRITTEN:
            return records
        record, after = decoded
        assert pos < after <= len(buf), "the decoder must move forward within the buffer"
        records.append(record)
        pos = after


@FUZZ
@given(first=st.integers(1, 2**40), raw=entries_strategy, synced=st.integers(0, 2**64 - 1))
def test_encoded_batches_decode_back(first, raw, synced) -> None:
    entries = make(first, raw)
    batch = encode_batch(entries, synced)
    records = walk(batch.frames + batch.commit)
    assert records[:-1] == entries
    commit = records[-1]
    assert isinstance(commit, CommitRecord)
    assert (commit.first_index, commit.count, commit.synced_through) == (
        first,
        len(entries),
        synced,
    )


@FUZZ
@given(buf=st.binary(max_size=200), pos=st.integers(0, 210))
def test_any_bytes_at_any_offset(buf, pos) -> None:
    walk(buf, min(pos, len(buf)))


@FUZZ
@given(data=st.data(), first=st.integers(1, 1000), raw=entries_strategy)
def test_damaged_batches_never_yield_entries_that_were_not_written(data, first, raw) -> None:
    entries = make(first, raw)
    batch = encode_batch(entries, 0)
    damaged = data.draw(mutated(batch.frames + batch.commit))
    for record in walk(damaged):
        if isinstance(record, Entry):
            # The checksum makes a damaged frame unreadable, never a different entry.
            assert record in entries


@FUZZ
@given(data=st.data(), first=st.integers(0, 2**64 - 1), flags=st.integers(0, 2**16 - 1))
def test_segment_headers(data, first, flags) -> None:
    header = encode_header(first, flags)
    assert decode_header(header).first_index == first
    damaged = data.draw(mutated(header))
    try:
        decode_header(damaged)
    except CorruptRecord as exc:
        assert exc.offset == 0
        return
    # Only damage outside the checksummed part (the trailing reserved word) can pass.
    assert damaged[: HEADER_SIZE - 4] == header[: HEADER_SIZE - 4]


LOG_FUZZ = settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))


@LOG_FUZZ
@given(data=st.data(), batches=st.lists(st.integers(1, 5), min_size=1, max_size=6))
def test_recovery_of_a_damaged_segment_is_an_error_or_a_prefix(data, batches) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp) / "log"
        written: list[Entry] = []
        with SegmentedLog.open(directory, segment_size=1 << 20, preallocate=False) as log:
            for count in batches:
                batch = [
                    Entry(log.last_index + 1 + n, 1, int(EntryKind.COMMAND), 7, b"x" * (n + 3))
                    for n in range(count)
                ]
                log.append(batch, sync=True)
                written += batch
        (segment,) = sorted(directory.glob("*.wal"))
        original = segment.read_bytes()
        segment.write_bytes(data.draw(mutated(original)))
        for readonly in (True, False):
            try:
                with SegmentedLog.open(
                    directory, segment_size=1 << 20, preallocate=False, readonly=readonly
                ) as log:
                    recovered = list(log.read_range(log.first_index, log.last_index + 1))
            except WalCorruption as exc:
                assert str(directory) in str(exc) and "offset" in str(exc)
                event("corruption named")
                continue
            except WalError as exc:
                event(f"refused: {type(exc).__name__}")
                continue
            event("all recovered" if len(recovered) == len(written) else "prefix recovered")
            assert recovered == written[: len(recovered)], "recovery invented or reordered"
            if not readonly:
                # A log that opened can be written to and reopened with the new entry.
                with SegmentedLog.open(directory, segment_size=1 << 20) as log:
                    extra = Entry(log.last_index + 1, 1, int(EntryKind.COMMAND), 7, b"new")
                    log.append([extra], sync=True)
                with SegmentedLog.open(directory, segment_size=1 << 20) as log:
                    assert log.get(extra.index) == extra
