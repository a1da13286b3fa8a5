"""Fixtures for the actor tests: in-process systems and peer nodes in other OS processes."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Iterator

import pytest
from peer_process import PeerProcess

from actors import ActorSystem

HERE = pathlib.Path(__file__).parent


@pytest.fixture
def peer() -> Iterator[PeerProcess]:
    node = PeerProcess()
    yield node
    assert node.close() == 0, "the peer node did not shut down cleanly"


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    sys_ = ActorSystem("local")
    yield sys_
    sys_.shutdown()


@pytest.fixture
def net_system() -> Iterator[ActorSystem]:
    sys_ = ActorSystem("tester", host="127.0.0.1")
    yield sys_
    sys_.shutdown()


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leftover = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftover == [], f"threads left behind: {leftover}"
