"""CURVE in the actor transport, in-process: who gets through, what is refused, and that a
system with CURVE leaves no thread or socket behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from actors import UNHANDLED, Actor, ActorRef, ActorSystem, AskTimeout, Undeliverable, message
from actors.security import CurveConfig, generate_keypair


@message("security_test.echo")
class Echo:
    payload: bytes


class EchoActor(Actor):
    def receive(self, msg: Any, sender: ActorRef | None) -> Any:
        return msg if isinstance(msg, Echo) else UNHANDLED


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leftover = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftover == [], f"threads left behind: {leftover}"


class Pair:
    """A server system with an echo actor and the keys to make clients for it."""

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.public, secret = generate_keypair()
        self.server = ActorSystem(
            "server", host="127.0.0.1", curve=CurveConfig(secret, allowed, {})
        )
        self.server.spawn(EchoActor, "echo")
        self.endpoint = self.server.address.endpoint
        self.systems = [self.server]

    def client(self, secret: bytes | None, server_key: bytes | None = None) -> ActorSystem:
        curve = None
        if secret is not None:
            keys = {self.endpoint: server_key or self.public}
            curve = CurveConfig(secret, frozenset({self.public}), keys)
        system = ActorSystem(f"client{len(self.systems)}", host="127.0.0.1", curve=curve)
        self.systems.append(system)
        return system

    def echo(self, system: ActorSystem, timeout: float = 5.0) -> Any:
        ref = system.ref(f"{self.server.address.text}/user/echo")
        return ref.ask(Echo(b"x" * 64), timeout=timeout).result(timeout + 5)

    def refused(self, reason: str) -> int:
        return self.server.stats().get(f"transport_refused_{reason}", 0)

    def close(self) -> None:
        for system in self.systems:
            system.shutdown()


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_an_allowed_key_gets_through_and_replies_come_back(no_thread_leak: None) -> None:
    client_public, client_secret = generate_keypair()
    pair = Pair(frozenset({client_public}))
    try:
        client = pair.client(client_secret)
        assert pair.echo(client) == Echo(b"x" * 64)
        big = Echo(b"y" * 1_000_000)  # encrypted frames of any size
        ref = client.ref(f"{pair.server.address.text}/user/echo")
        assert ref.ask(big, timeout=10).result(15) == big
        assert pair.refused("peers") == 0
    finally:
        pair.close()


def test_a_key_not_allowed_is_refused_counted_and_gets_nothing(no_thread_leak: None) -> None:
    pair = Pair(frozenset())
    try:
        _public, secret = generate_keypair()
        client = pair.client(secret)
        with pytest.raises(AskTimeout):
            pair.echo(client, timeout=0.5)
        assert pair.refused("key_not_allowed") >= 1
        # The refused side learns it too, from its own handshake, and counts it.
        assert wait_for(lambda: client.stats().get("transport_rejected_by_peer", 0) >= 1)
        assert pair.server.stats().get("transport_frames_in", 0) == 0
    finally:
        pair.close()


def test_a_plain_peer_cannot_talk_to_a_curve_node(no_thread_leak: None) -> None:
    pair = Pair(frozenset())
    try:
        with pytest.raises(AskTimeout):
            pair.echo(pair.client(None), timeout=0.5)
        assert wait_for(lambda: pair.refused("peers") >= 1)
        assert pair.server.stats().get("transport_frames_in", 0) == 0
    finally:
        pair.close()


def test_a_client_dialling_with_the_wrong_server_key_is_refused(no_thread_leak: None) -> None:
    # Also what a node sees when someone poses as it: the real node cannot decrypt the hello.
    client_public, client_secret = generate_keypair()
    pair = Pair(frozenset({client_public}))
    try:
        wrong_server_key, _ = generate_keypair()
        client = pair.client(client_secret, wrong_server_key)
        with pytest.raises(AskTimeout):
            pair.echo(client, timeout=0.5)
        assert wait_for(lambda: pair.refused("wrong_server_key") >= 1)
        assert wait_for(lambda: client.stats().get("transport_rejected_by_peer", 0) >= 1)
        assert pair.server.stats().get("transport_frames_in", 0) == 0
    finally:
        pair.close()


def test_a_peer_with_no_known_key_is_never_dialled(no_thread_leak: None) -> None:
    _public, secret = generate_keypair()
    system = ActorSystem("lonely", host="127.0.0.1", curve=CurveConfig(secret, frozenset(), {}))
    try:
        ref = system.ref("coterie://other@127.0.0.1:9/user/echo")
        with pytest.raises(Undeliverable, match="no CURVE public key"):
            ref.ask(Echo(b""), timeout=5).result(5)
        assert system.stats()["transport_dropped_no_server_key"] == 1
    finally:
        system.shutdown()


def test_curve_config_checks_its_keys() -> None:
    public, secret = generate_keypair()
    assert CurveConfig(secret, frozenset(), {}).public_key == public
    assert public in CurveConfig(secret, frozenset(), {}).allowed_keys  # itself
    other_public, _ = generate_keypair()
    with pytest.raises(ValueError, match="does not belong"):
        CurveConfig(secret, frozenset(), {}, public_key=other_public)
    with pytest.raises(ValueError, match="secret_key"):
        CurveConfig(b"short", frozenset(), {})
    with pytest.raises(ValueError, match="allowed_keys"):
        CurveConfig(secret, frozenset({b"x" * 39}), {})
    with pytest.raises(ValueError, match=r"server_keys\[h:1\]"):
        CurveConfig(secret, frozenset(), {"h:1": b"\xff" * 40})
