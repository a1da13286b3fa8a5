"""Property-based fuzzing of the wire: every registered message type round-trips, and any
mutation of a valid payload, envelope or frame either decodes to a well-typed message or is
refused with a FrameError, never anything else (the transport counts FrameErrors and drops
the input; any other exception would be a bug on the receiving path)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import typing

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import wire
from actors.wire import FrameError, decode_frame, decode_payload, encode_frame, encode_payload
from tests.fuzz.strategies import (
    any_message,
    envelope_bytes,
    instances,
    mutated,
    plain,
    registered_types,
)

# COTERIE_FUZZ=20 runs twenty times as many examples (a longer fuzzing session).
SCALE = int(os.environ.get("COTERIE_FUZZ", "1"))
FUZZ = settings(max_examples=200 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))


def test_every_runtime_message_type_is_covered() -> None:
    tags = {m.tag for m in registered_types()}
    for expected in (
        "raft.append_entries",
        "raft.request_vote",
        "raft.client_command",
        "node.query",
        "node.status",
    ):
        assert expected in tags


def equal(a: object, b: object) -> bool:
    """Message equality where tuple and list fields compare by content."""
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return type(a) is type(b) and all(
            equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("mtype", registered_types(), ids=lambda m: m.tag)
@settings(max_examples=8 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_each_message_type_round_trips(mtype: wire.MessageType, data: st.DataObject) -> None:
    message = data.draw(instances(mtype))
    decoded = decode_payload(mtype, encode_payload(message))
    assert equal(decoded, message)


def well_typed(message: object) -> None:
    """A decoded message must satisfy its own annotations: re-encoding it and decoding
    again gives the same message (the decoder normalised it into a legal value)."""
    mtype = wire.message_type_of(message)
    assert equal(decode_payload(mtype, encode_payload(message)), message)
    hints = typing.get_type_hints(mtype.cls)
    for f in dataclasses.fields(message):
        if hints.get(f.name) is int:
            assert type(getattr(message, f.name)) is int


@FUZZ
@given(data=st.data(), message=any_message)
def test_mutated_payloads_decode_well_typed_or_raise_frame_error(data, message) -> None:
    mtype = wire.message_type_of(message)
    payload = data.draw(mutated(encode_payload(message)))
    try:
        decoded = decode_payload(mtype, payload)
    except FrameError:
        return
    assert isinstance(decoded, mtype.cls)
    well_typed(decoded)


@FUZZ
@given(tag=st.sampled_from(registered_types()), fields=st.lists(plain, max_size=9))
def test_arbitrary_field_arrays_under_every_tag(tag, fields) -> None:
    # A peer that sends the right tag with fields of any shape.
    try:
        decoded = decode_payload(tag, msgpack.packb(fields))
    except FrameError:
        return
    well_typed(decoded)


@FUZZ
@given(
    data=st.data(),
    messages=st.lists(any_message, min_size=1, max_size=4),
    junk=st.lists(plain.map(msgpack.packb), max_size=2),
)
def test_frames_keep_good_envelopes_and_report_bad_ones(data, messages, junk) -> None:
    recipient = "coterie://_@127.0.0.1:1/user/node"
    good = [envelope_bytes(m, "c1", recipient, n) for n, m in enumerate(messages)]
    wrong_cluster = [envelope_bytes(messages[0], "c2", recipient)]
    frame = encode_frame(good + junk + wrong_cluster)
    envelopes, errors = decode_frame(frame, "c1")
    assert [e.correlation for e in envelopes] == list(range(len(messages)))
    for envelope, message in zip(envelopes, messages, strict=True):
        assert equal(decode_payload(wire.lookup_tag(envelope.tag), envelope.payload), message)
    assert len(errors) == len(junk) + 1
    assert errors[-1].reason == "wrong_cluster"
    # Now mutate the frame: still only FrameError, and whatever decodes is well formed.
    damaged = data.draw(mutated(frame))
    try:
        envelopes, errors = decode_frame(damaged, "c1")
    except FrameError:
        return
    for envelope in envelopes:
        assert type(envelope.tag) is str and type(envelope.payload) is bytes
        assert type(envelope.correlation) is int
        try:
            decoded = decode_payload(wire.lookup_tag(envelope.tag), envelope.payload)
        except FrameError:
            continue
        well_typed(decoded)


@FUZZ
@given(frame=st.binary(max_size=300))
def test_random_bytes_are_frame_errors_or_nothing(frame) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(frame, "c1")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        # An array header promising 2**32-1 envelopes with none following: refused at once
        # instead of allocating for them.
        (b"\xdd\xff\xff\xff\xff", "malformed"),
        # Nesting far deeper than any envelope: msgpack's own stack limit, a FrameError.
        (b"\x91" * 100_000, "malformed"),
    ],
)
def test_hostile_frame_shapes(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(frame, "c1")
    assert caught.value.reason == reason
