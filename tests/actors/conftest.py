"""Fixtures for the actor tests: in-process systems and peer nodes in other OS processes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from actors import ActorSystem

HERE = pathlib.Path(__file__).parent


class PeerProcess:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "peer_node.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer node did not start (exit {self.proc.wait(5)})")
        self.address = json.loads(line)["address"]

    def path(self, name: str) -> str:
        return f"{self.address}/user/{name}"

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(5)
        return self.proc.returncode


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
