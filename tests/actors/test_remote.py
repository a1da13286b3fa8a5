"""Actors across OS processes over 127.0.0.1: tells, asks, errors, hostile input, routing."""

from __future__ import annotations

import os
import time
from typing import Any

import msgpack
import pytest
import zmq
from actor_test_messages import Echo, Nested, Report, Seq, Slow, Stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peer_process import PeerProcess

from actors import (
    UNHANDLED,
    Actor,
    ActorNotFound,
    ActorRef,
    ActorSystem,
    AskTimeout,
    Props,
    TransportConfig,
    Undeliverable,
    UnhandledMessage,
    message,
)
from actors.wire import encode_envelope, encode_frame, encode_payload

pytestmark = pytest.mark.process


class Streamer(Actor):
    """Tells `count` numbered messages of its own stream to `target`."""

    def __init__(self, target: ActorRef) -> None:
        self.target = target

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if isinstance(message, tuple) and message[0] == "stream":
            _, name, count = message
            for n in range(count):
                self.target.tell(Seq(name, n))
            return count
        return UNHANDLED


def wait_for_report(sink: ActorRef, count: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report = sink.ask(Report(), timeout=10).result()
        if report["count"] >= count or time.monotonic() > deadline:
            return report
        time.sleep(0.05)


def test_100k_tells_between_processes_none_lost_order_kept(peer: PeerProcess, net_system) -> None:
    sink = net_system.ref(peer.path("sink"))
    streamers = [net_system.spawn(Props(Streamer, sink), f"streamer-{i}") for i in range(4)]
    futures = [s.ask(("stream", f"s{i}", 25_000), timeout=60) for i, s in enumerate(streamers)]
    assert [f.result() for f in futures] == [25_000] * 4
    report = wait_for_report(sink, 100_000)
    assert report["count"] == 100_000
    assert report["violations"] == []
    assert report["streams"] == {f"s{i}": 25_000 for i in range(4)}
    assert report["senders_seen"]
    stats = net_system.stats()
    assert stats.get("transport_dropped_peer_queue_full", 0) == 0
    # Adaptive batching: far fewer frames than envelopes under load.
    assert stats["transport_frames_out"] < stats["transport_envelopes_out"] / 5


def test_remote_ask_round_trips_with_nested_messages(peer: PeerProcess, net_system) -> None:
    echo = net_system.ref(peer.path("echo"))
    assert echo.ask(Echo(b"x" * 10)).result(timeout=5) == Echo(b"x" * 10)
    nested = Nested(Echo(b"a"), [Echo(b"b")], "label")
    assert echo.ask(nested).result(timeout=5) == nested
    futures = [echo.ask(Echo(str(i).encode())) for i in range(500)]
    assert [f.result(timeout=10).payload for f in futures] == [str(i).encode() for i in range(500)]


def test_any_system_name_reaches_whoever_listens_at_the_address(
    peer: PeerProcess, net_system
) -> None:
    # Clients and tools often know a node only by host:port.
    address = peer.address.split("@", 1)[1]
    echo = net_system.ref(f"coterie://_@{address}/user/echo")
    assert echo.ask(Echo(b"hi")).result(timeout=5) == Echo(b"hi")
    with pytest.raises(ValueError, match="reserved"):
        ActorSystem("_")


def test_remote_ask_to_missing_path_fails_fast(peer: PeerProcess, net_system) -> None:
    ref = net_system.ref(peer.path("no-such-actor"))
    started = time.monotonic()
    with pytest.raises(ActorNotFound) as info:
        ref.ask(Echo(b""), timeout=30).result()
    assert time.monotonic() - started < 2.0
    assert info.value.target == peer.path("no-such-actor")
    assert info.value.message_type == "test.echo"


def test_remote_unhandled_message_fails_fast(peer: PeerProcess, net_system) -> None:
    sink = net_system.ref(peer.path("sink"))
    started = time.monotonic()
    with pytest.raises(UnhandledMessage, match="behaviour receive"):
        sink.ask(Echo(b""), timeout=30).result()
    assert time.monotonic() - started < 2.0


@message("test.only-here")
class OnlyHere:
    """Registered in this process only: the peer cannot decode it."""

    x: int


def test_ask_with_a_type_the_peer_does_not_know_fails_fast(peer: PeerProcess, net_system) -> None:
    echo = net_system.ref(peer.path("echo"))
    started = time.monotonic()
    with pytest.raises(UnhandledMessage, match="cannot decode"):
        echo.ask(OnlyHere(1), timeout=30).result()
    assert time.monotonic() - started < 2.0
    stats = echo.ask(Stats()).result(timeout=5)
    assert stats["transport_dropped_unknown_tag"] == 1


def test_remote_ask_timeout_names_path_and_type(peer: PeerProcess, net_system) -> None:
    echo = net_system.ref(peer.path("echo"))
    with pytest.raises(AskTimeout) as info:
        echo.ask(Slow(1.0), timeout=0.2).result()
    assert info.value.target == peer.path("echo") and info.value.message_type == "test.slow"
    assert echo.ask(Echo(b"ok")).result(timeout=5) == Echo(b"ok")  # the late reply is dropped
    time.sleep(1.0)
    assert net_system.stats()["late_replies"] == 1


def test_replies_return_over_the_inbound_connection() -> None:
    """The asker advertises an address nobody can connect to (as behind NAT): answers to its
    asks, and tells back to it as a sender, still arrive, over the connection it opened."""
    peer = PeerProcess()
    asker = ActorSystem("natted", host="127.0.0.1", advertised_port=9)  # nothing listens on 9
    try:
        assert asker.address.port == 9
        echo = asker.ref(peer.path("echo"))
        for i in range(20):
            assert echo.ask(Echo(bytes([i]))).result(timeout=5) == Echo(bytes([i]))
        assert asker.stats().get("transport_route_fallbacks", 0) == 0
    finally:
        asker.shutdown()
        assert peer.close() == 0


def test_dead_peer_never_blocks_a_sender(net_system) -> None:
    dead = net_system.ref("coterie://ghost@127.0.0.1:9/user/nobody")
    started = time.monotonic()
    for i in range(50_000):
        dead.tell(Seq("x", i))
    assert time.monotonic() - started < 10.0
    with pytest.raises((Undeliverable, AskTimeout)):
        dead.ask(Echo(b""), timeout=2).result()


def test_tiny_queues_drop_and_count_instead_of_blocking() -> None:
    config = TransportConfig(peer_hwm_frames=1, batch_bytes=64)
    system = ActorSystem("small", host="127.0.0.1", transport_config=config)
    try:
        dead = system.ref("coterie://ghost@127.0.0.1:9/user/nobody")
        for i in range(2_000):
            dead.tell(Seq("x", i))
        deadline = time.monotonic() + 5
        while system.stats().get("transport_dropped_peer_queue_full", 0) == 0:
            assert time.monotonic() < deadline, "drops were not counted"
            time.sleep(0.01)
    finally:
        system.shutdown()


def test_wrong_cluster_id_is_dropped_and_counted(net_system) -> None:
    other = PeerProcess("--cluster", "other-cluster")
    try:
        echo = net_system.ref(other.path("echo"))
        with pytest.raises(AskTimeout):
            echo.ask(Echo(b""), timeout=0.5).result()
        same = ActorSystem("same", host="127.0.0.1", cluster_id="other-cluster")
        try:
            stats = same.ref(other.path("echo")).ask(Stats()).result(timeout=5)
            assert stats["transport_dropped_wrong_cluster"] >= 1
        finally:
            same.shutdown()
    finally:
        assert other.close() == 0


# ------------------------------------------------------------------ hostile input at the ROUTER


@pytest.fixture(scope="module")
def hostile_target():
    node = PeerProcess()
    context = zmq.Context()
    raw = context.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    host_port = node.address.split("@", 1)[1]
    raw.connect(f"tcp://{host_port}")
    checker = ActorSystem("checker", host="127.0.0.1")
    yield node, raw, checker
    checker.shutdown()
    raw.close()
    context.term()
    assert node.close() == 0


envelope_like = st.tuples(
    st.sampled_from([1, 2, "1", None]),
    st.sampled_from(["coterie", "wrong", ""]),
    st.sampled_from(["test.seq", "test.echo", "test.nested", "nope", "coterie.reply"]),
    st.sampled_from(["", "coterie://x@127.0.0.1:9/user/a", "garbage"]),
    st.sampled_from(
        [
            "coterie://peer@127.0.0.1:1/user/echo",
            "coterie://peer/user/sink",
            "coterie://peer/user/nope",
            "nonsense",
            "",
        ]
    ),
    st.one_of(st.just(0), st.integers(-5, 2**40)),
    st.one_of(
        st.binary(max_size=30), st.just(msgpack.packb(["s", 1])), st.just(msgpack.packb([b"x"]))
    ),
).map(lambda parts: msgpack.packb(list(parts)))

hostile_frames = st.one_of(
    st.binary(min_size=0, max_size=300),
    envelope_like,
    st.lists(envelope_like, min_size=1, max_size=5).map(encode_frame),
    st.builds(
        lambda a, b: encode_frame([a]) + b, envelope_like, st.binary(min_size=1, max_size=20)
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(hostile_frames, min_size=1, max_size=5))
def test_malformed_frames_at_the_router_leave_the_node_serving(hostile_target, frames) -> None:
    node, raw, checker = hostile_target
    for frame in frames:
        raw.send(frame)
    echo = checker.ref(node.path("echo"))
    assert echo.ask(Echo(b"alive")).result(timeout=10) == Echo(b"alive")


def test_each_kind_of_bad_input_is_counted(hostile_target) -> None:
    node, raw, checker = hostile_target
    echo = checker.ref(node.path("echo"))
    before = echo.ask(Stats()).result(timeout=5)
    recipient = node.path("echo")
    good_payload = encode_payload(Echo(b"x"))
    raw.send(os.urandom(64) + b"\xc1")
    raw.send(msgpack.packb({"not": "an envelope"}))
    raw.send(encode_frame([encode_envelope("coterie", "no.such.tag", "", recipient, 0, b"\x90")]))
    raw.send(
        encode_frame(
            [encode_envelope("wrong-cluster", "test.echo", "", recipient, 0, good_payload)]
        )
    )
    raw.send(
        encode_frame(
            [encode_envelope("coterie", "test.echo", "", recipient, 0, msgpack.packb([1]))]
        )
    )
    raw.send(b"\x00" * (64 * 1024 * 1024 + 1))  # above the 64 MiB frame limit
    deadline = time.monotonic() + 10
    while True:
        after = echo.ask(Stats()).result(timeout=10)

        def grew(key: str, after: dict[str, int] = after) -> bool:
            return after.get(f"transport_dropped_{key}", 0) > before.get(
                f"transport_dropped_{key}", 0
            )

        kinds = ["malformed", "unknown_tag", "wrong_cluster", "bad_payload", "oversized"]
        if all(grew(k) for k in kinds) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {k: grew(k) for k in kinds} == dict.fromkeys(kinds, True)
    assert echo.ask(Echo(b"still here")).result(timeout=5) == Echo(b"still here")


def test_reconnects_after_the_peer_is_killed_and_restarted(net_system) -> None:
    first = PeerProcess()
    port = first.address.rsplit(":", 1)[1]
    echo = net_system.ref(first.path("echo"))
    assert echo.ask(Echo(b"before")).result(timeout=5) == Echo(b"before")
    first.proc.kill()
    first.proc.wait(5)
    with pytest.raises(AskTimeout):
        echo.ask(Echo(b"while down"), timeout=0.5).result()
    second = PeerProcess("--port", port)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert echo.ask(Echo(b"after"), timeout=1).result() == Echo(b"after")
                break
            except AskTimeout:
                assert time.monotonic() < deadline, "never reconnected"
    finally:
        assert second.close() == 0
