"""Sans-IO pieces of following: the window, the backoff, the gap checker, the record codec
and the /log parameter parser."""

from __future__ import annotations

import random

import pytest

from follow.checker import CHECKSUM, DIVERGED, DUPLICATE, GAP, MISPLACED, TERM, GapChecker
from follow.records import (
    JSONL,
    MSGPACK,
    Encoder,
    EntryRecord,
    ErrorRecord,
    Header,
    MalformedRecord,
    RecordDecoder,
    Trailer,
    choose_format,
    entry_crc,
)
from follow.server import BadRequest, parse_log_params
from follow.window import Backoff, Window
from wal.entry import Entry
from wal.format import encode_entries


def record(seq: int, term: int = 1, payload: bytes | None = None) -> EntryRecord:
    data = payload if payload is not None else f"cmd{seq}".encode()
    return EntryRecord(seq, term, 0, 1000 + seq, entry_crc(seq, term, 0, 1000 + seq, data), data)


# ---------------------------------------------------------------------------- window


def test_window_slow_start_doubles_then_grows_by_step() -> None:
    window = Window(initial=4, maximum=64, step=4)
    sizes = []
    for _ in range(6):
        window.on_success(window.size)
        sizes.append(window.size)
    assert sizes == [8, 16, 32, 64, 64, 64]


def test_window_halves_on_timeout_and_grows_linearly_after() -> None:
    window = Window(initial=64, maximum=1024, step=8)
    window.on_success(64)
    window.on_success(128)
    assert window.size == 256
    window.on_timeout()
    assert window.size == 128 and window.threshold == 128
    window.on_success(128)
    assert window.size == 136  # past the threshold: additive
    for _ in range(20):
        window.on_timeout()
    assert window.size == 1  # never below the minimum


def test_window_ignores_short_responses() -> None:
    window = Window(initial=16)
    window.on_success(3)
    assert window.size == 16


def test_window_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="minimum"):
        Window(initial=0)


def test_backoff_grows_is_capped_and_resets() -> None:
    backoff = Backoff(base=0.1, cap=1.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[4:])
    backoff.reset()
    assert backoff.next_delay() <= 0.1


# ---------------------------------------------------------------------------- checker


def test_checker_accepts_a_contiguous_stream() -> None:
    checker = GapChecker(5, 1)
    assert checker.header(Header(4, 1, 10)) is None
    for seq in range(5, 9):
        assert checker.check(record(seq, term=1 if seq < 7 else 2)) is None
    assert checker.trailer(Trailer(9, 10)) is None
    assert checker.next_seq == 9 and checker.last_term == 2
    assert not checker.problems


def test_checker_flags_a_planted_gap_and_keeps_position() -> None:
    checker = GapChecker(1, 0)
    assert checker.check(record(1)) is None
    problem = checker.check(record(3))
    assert problem is not None and problem.kind == GAP
    assert problem.expected == 2 and problem.got == 3
    assert checker.next_seq == 2  # nothing skipped: the range is asked for again from 2
    assert checker.check(record(2)) is None
    assert checker.problems == {GAP: 1}


def test_checker_flags_duplicates_term_regressions_and_bad_checksums() -> None:
    checker = GapChecker(1, 0)
    assert checker.check(record(1, term=3)) is None
    assert checker.check(record(1, term=3)).kind == DUPLICATE  # type: ignore[union-attr]
    assert checker.check(record(2, term=2)).kind == TERM  # type: ignore[union-attr]
    damaged = record(2, term=3)._replace(payload=b"changed on the way")
    assert checker.check(damaged).kind == CHECKSUM  # type: ignore[union-attr]
    wrong_term = record(2, term=3)._replace(term=4)  # crc computed for term 3
    assert checker.check(wrong_term).kind == CHECKSUM  # type: ignore[union-attr]
    assert checker.next_seq == 2
    assert checker.problems == {DUPLICATE: 1, TERM: 1, CHECKSUM: 2}


def test_checker_header_and_trailer_problems() -> None:
    checker = GapChecker(10, 2)
    assert checker.header(Header(8, 2, 20)).kind == MISPLACED  # type: ignore[union-attr]
    assert checker.header(Header(9, 3, 20)).kind == DIVERGED  # type: ignore[union-attr]
    # The server claims it sent up to 14 but nothing arrived: a gap at the end.
    assert checker.trailer(Trailer(15, 20)).kind == GAP  # type: ignore[union-attr]
    assert checker.no_header(record(10)).kind == MISPLACED
    checker.reset(100, 5)
    assert checker.header(Header(99, 5, 120)) is None


# ---------------------------------------------------------------------------- records


@pytest.mark.parametrize("fmt", [MSGPACK, JSONL])
def test_records_round_trip_in_pieces(fmt: str) -> None:
    encoder = Encoder(fmt)
    entries = [Entry(i, 2, 0, 5000 + i, bytes([i]) * i) for i in range(1, 6)]
    frames = encode_entries(entries)
    body = encoder.record(Header(0, 0, 5))
    offset = 0
    for entry in entries:
        size = 33 + len(entry.payload)
        body += encoder.frame(frames[offset : offset + size])
        offset += size
    body += encoder.record(Trailer(6, 5)) + encoder.record(ErrorRecord("x"))
    decoder = RecordDecoder(fmt)
    got = []
    for i in range(0, len(body), 7):  # arbitrary cuts, as TCP delivers them
        got += decoder.feed(body[i : i + 7])
    decoder.finish()
    assert got[0] == Header(0, 0, 5)
    assert [r.to_entry() for r in got[1:6]] == entries  # type: ignore[union-attr]
    assert all(r.crc == entry_crc(r.seq, r.term, r.kind, r.timestamp, r.payload) for r in got[1:6])  # type: ignore[union-attr]
    assert got[6:] == [Trailer(6, 5), ErrorRecord("x")]


@pytest.mark.parametrize(
    ("fmt", "body", "message"),
    [
        (MSGPACK, b"\x93\x00\x01\x02", "unknown record"),
        (MSGPACK, b"\x97\x00\x01\x01\x00\x01\xce\xff\xff\xff\xff\xa3abc", "payload must be bytes"),
        (MSGPACK, b"\x94\x01\xff\x01\x01", "unsigned"),
        (JSONL, b'{"type":"entry","seq":1,"data":""}\n', "lacks 'term'"),
        (JSONL, b"not json\n", "offset 0: not JSON"),
        (JSONL, b'{"type":"trailer","next_seq":2,"commit":1}\n{"type":"nope"}\n', "offset 43"),
    ],
)
def test_decoder_names_the_offset_of_garbage(fmt: str, body: bytes, message: str) -> None:
    with pytest.raises(MalformedRecord, match=message):
        RecordDecoder(fmt).feed(body)


def test_decoder_refuses_a_body_cut_inside_a_record() -> None:
    decoder = RecordDecoder(MSGPACK)
    data = Encoder(MSGPACK).record(record(1))
    assert decoder.feed(data[:-3]) == []
    with pytest.raises(MalformedRecord, match="ends inside a record"):
        decoder.finish()


def test_accept_header_chooses_the_format() -> None:
    assert choose_format(None) == MSGPACK
    assert choose_format("application/jsonl") == JSONL
    assert choose_format("text/html, application/x-ndjson;q=0.9") == JSONL
    assert choose_format("*/*") == MSGPACK
    assert choose_format("text/html") is None


# ---------------------------------------------------------------------------- parameters


def test_log_params_parse() -> None:
    assert parse_log_params("from=5") == (5, None, 0)
    assert parse_log_params("from=5&to=9&wait=250") == (5, 9, 250)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "'from' is required"),
        ("from=0", "'from': 0 is out of range"),
        ("from=abc", "'from': 'abc' is not"),
        ("from=-3", "'from': '-3' is not"),
        ("from=5&to=4", "'to' \\(4\\) is before 'from' \\(5\\)"),
        ("from=1&limit=3", "unknown parameter 'limit'"),
        ("from=1&from=2", "'from' given 2 times"),
        ("from=1&wait=999999", "'wait'"),
        ("from=99999999999999999999999", "'from'"),
    ],
)
def test_log_params_refused_with_the_parameter_named(query: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_log_params(query)


# ---------------------------------------------------------------------------- serving bound


def test_safe_limit_needs_the_wal_to_end_in_the_current_term() -> None:
    from follow.source import RaftServable, safe_limit

    assert safe_limit(term=3, commit=10, last_index=12, last_term=3) == 10
    assert safe_limit(term=3, commit=10, last_index=8, last_term=3) == 8
    # The WAL may still hold a stale tail from term 2 the leader of term 3 will replace.
    assert safe_limit(term=3, commit=10, last_index=12, last_term=2) == 0
    assert safe_limit(term=0, commit=0, last_index=0, last_term=0) == 0
    state = [(3, 10)]
    servable = RaftServable(lambda: state[0])
    assert servable(12, 3) == 10
    state[0] = (4, 12)  # a new term began; its first entry is not in this WAL yet
    assert servable(12, 3) == 10  # what was vouched for stays served, nothing more
    assert servable(13, 4) == 12
