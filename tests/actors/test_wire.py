"""The wire codec: registered messages round-trip; anything malformed is a FrameError."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from actor_test_messages import Echo, Nested, Seq
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Actor, ActorSystem, message
from actors.wire import (
    FrameError,
    UnknownMessageType,
    decode_frame,
    decode_payload,
    decode_value,
    encode_envelope,
    encode_frame,
    encode_payload,
    encode_value,
    lookup_tag,
)


def roundtrip(obj: Any) -> Any:
    return decode_payload(lookup_tag(obj.__coterie_tag__), encode_payload(obj))


def test_messages_round_trip_including_nested_ones() -> None:
    nested = Nested(Echo(b"a"), [Echo(b"b"), Echo(b"")], None)
    assert roundtrip(nested) == nested
    assert roundtrip(Nested(Echo(b"x"), [], "label")) == Nested(Echo(b"x"), [], "label")
    assert roundtrip(Seq("s", 2**62)) == Seq("s", 2**62)


def test_reply_values_round_trip() -> None:
    for value in [None, 1, "x", b"y", [1, 2], {"a": [Echo(b"z")]}, Echo(b"q")]:
        assert decode_value(encode_value(value)) == value


def test_unregistered_classes_are_refused_on_send() -> None:
    class Plain:
        pass

    with pytest.raises(TypeError, match="not a registered message"):
        encode_payload(Plain())


def test_tags_are_unique_and_reserved_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @message("test.seq")
        class Other:
            x: int

    with pytest.raises(ValueError, match="reserved"):
        message("coterie.mine")


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        (["s", "not-an-int"], "expected int"),
        (["s"], "expected 2 fields"),
        ([b"bytes-not-str", 1], "expected str"),
        ("not a list", "not an array"),
    ],
)
def test_fields_are_type_checked(fields: Any, detail: str) -> None:
    with pytest.raises(FrameError, match=detail) as info:
        decode_payload(lookup_tag("test.seq"), msgpack.packb(fields))
    assert info.value.reason == "bad_payload"


def test_nested_fields_are_type_checked() -> None:
    bad = msgpack.packb([msgpack.ExtType(1, msgpack.packb(["test.echo", 5])), [], None])
    with pytest.raises(FrameError, match="expected bytes"):
        decode_payload(lookup_tag("test.nested"), bad)
    unknown = msgpack.packb([msgpack.ExtType(1, msgpack.packb(["no.such", 5])), [], None])
    with pytest.raises(UnknownMessageType):
        decode_payload(lookup_tag("test.nested"), unknown)


def test_frame_of_several_envelopes_decodes_in_order() -> None:
    envs = [
        encode_envelope("c", "test.seq", "", "coterie://x/user/a", i, b"\x90") for i in range(3)
    ]
    good, bad = decode_frame(encode_frame(envs), "c")
    assert [e.correlation for e in good] == [0, 1, 2] and bad == []


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536])
def test_frame_headers_for_every_array_size(count: int) -> None:
    env = encode_envelope("c", "t", "", "coterie://x/user/a", 0, b"")
    good, bad = decode_frame(encode_frame([env] * count), "c")
    assert len(good) == count and bad == []


def test_one_bad_envelope_does_not_take_its_neighbours_down() -> None:
    ok = encode_envelope("c", "t", "", "coterie://x/user/a", 1, b"")
    alien = encode_envelope("other", "t", "", "coterie://x/user/a", 2, b"")
    good, bad = decode_frame(encode_frame([ok, msgpack.packb("junk"), alien, ok]), "c")
    assert [e.correlation for e in good] == [1, 1]
    assert [e.reason for e in bad] == ["malformed", "wrong_cluster"]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (msgpack.packb({"a": 1}), "malformed"),
        (encode_frame([msgpack.packb([1, "c", "t", "", "r", 0, b""])])[:-2], "malformed"),
        (encode_frame([msgpack.packb([1, "c", "t", "", "r", 0, b""])]) + b"\x01", "malformed"),
        (b"\xc1\xc1\xc1", "malformed"),
    ],
)
def test_bad_frames_are_rejected_whole(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(frame, "c")
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        (msgpack.packb([1, "c", "t", "", "r", 0]), "malformed"),
        (msgpack.packb([2, "c", "t", "", "r", 0, b""]), "bad_version"),
        (msgpack.packb([1, "other", "t", "", "r", 0, b""]), "wrong_cluster"),
        (msgpack.packb([1, "c", 5, "", "r", 0, b""]), "malformed"),
    ],
)
def test_bad_envelopes_are_reported_with_a_reason(envelope: bytes, reason: str) -> None:
    good, bad = decode_frame(encode_frame([envelope]), "c")
    assert good == [] and [e.reason for e in bad] == [reason]


envelope_parts = st.tuples(
    st.one_of(st.just(1), st.integers(-(2**63), 2**64 - 1), st.text(max_size=3)),
    st.one_of(st.just("coterie"), st.text(max_size=5)),
    st.one_of(
        st.sampled_from(["test.seq", "test.echo", "test.nested", "coterie.reply"]),
        st.text(max_size=10),
    ),
    st.one_of(st.just(""), st.just("coterie://x@127.0.0.1:1/user/a"), st.text(max_size=20)),
    st.one_of(st.just("coterie://fuzz/user/echo"), st.text(max_size=20)),
    st.one_of(st.just(0), st.integers(min_value=-(2**63), max_value=2**64 - 1)),
    st.one_of(st.binary(max_size=40), st.just(msgpack.packb(["s", 1])), st.integers(0, 2**64 - 1)),
)

any_msgpack = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=20)
    | st.text(max_size=20)
    | st.floats(allow_nan=True),
    lambda inner: (
        st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def fuzz_system():
    system = ActorSystem("fuzz", host="127.0.0.1")
    yield system
    system.shutdown()


@settings(max_examples=600, deadline=None)
@given(
    frame=st.one_of(
        st.binary(max_size=200),
        any_msgpack.map(msgpack.packb),
        envelope_parts.map(lambda p: msgpack.packb(list(p))),
        st.lists(envelope_parts.map(lambda p: msgpack.packb(list(p))), max_size=4).map(
            encode_frame
        ),
    )
)
def test_decoder_and_delivery_reject_garbage_only_with_frame_errors(fuzz_system, frame) -> None:
    """Whatever arrives, the decoder and the delivery path raise FrameError or nothing."""
    deliver = fuzz_system._deliver_remote
    try:
        envelopes = decode_frame(frame, "coterie")[0]
    except FrameError:
        return
    for envelope in envelopes:
        with contextlib.suppress(FrameError):
            deliver(envelope, b"route")


def test_regression_reply_with_no_route_and_no_address_does_not_kill_io_thread(
    fuzz_system,
) -> None:
    """Found by the fuzzer: an ask from a sender path without an address, arriving on a
    connection that is gone, made the IO thread try to connect to '' and die."""
    raw = encode_envelope(
        "coterie",
        "test.echo",
        "coterie://x/user/a",
        "coterie://fuzz/user/none",
        7,
        encode_payload(Echo(b"")),
    )
    envelope = decode_frame(encode_frame([raw]), "coterie")[0][0]
    before = fuzz_system.stats().get("transport_dropped_unroutable", 0)
    fuzz_system._deliver_remote(envelope, b"no-such-connection")
    # The IO thread is still alive and serving: a round trip through it still works.
    other = ActorSystem("other", host="127.0.0.1")
    try:

        class Echoer(Actor):
            def receive(self, message, sender):
                return message

        fuzz_system.spawn(Echoer, "echoer")
        remote = other.ref(f"{fuzz_system.address}/user/echoer")
        assert remote.ask(Echo(b"ok")).result(timeout=5) == Echo(b"ok")
        assert fuzz_system.stats()["transport_dropped_unroutable"] == before + 1
    finally:
        other.shutdown()
