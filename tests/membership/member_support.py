"""Helpers shared by the membership tests that run real actor systems: a fast configuration, an
event collector actor, member processes, and polling with a deadline."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from actors import UNHANDLED, Actor, ActorRef, ActorSystem
from membership import (
    GetMembershipStatus,
    MembershipStatus,
    MemberUnreachable,
    Subscribe,
    membership_path,
)
from membership.messages import MemberReachable, MemberRemoved, MemberUp

EVENT_TYPES = (MemberUp, MemberUnreachable, MemberReachable, MemberRemoved)
HERE = pathlib.Path(__file__).parent


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(step)


class Collector(Actor):
    """Records every membership event it is told, with the monotonic time it arrived and the
    membership actor that sent it."""

    def __init__(self, log: list[tuple[float, str, Any]], lock: threading.Lock) -> None:
        self.log = log
        self.lock = lock

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if isinstance(message, EVENT_TYPES):
            source = sender.path.text if sender is not None else "?"
            with self.lock:
                self.log.append((time.monotonic(), source, message))
            return None
        return UNHANDLED


class Events:
    """A collector actor in `system` and queries over what it has received."""

    def __init__(self, system: ActorSystem, name: str = "collector") -> None:
        from actors import Props

        self.log: list[tuple[float, str, Any]] = []
        self.lock = threading.Lock()
        self.ref = system.spawn(Props(Collector, self.log, self.lock), name)

    def subscribe(self, system: ActorSystem, node: str) -> None:
        system.ref(membership_path(node)).tell(Subscribe(self.ref.path.text))

    def of(self, observer: str, kind: type | None = None, about: str | None = None) -> list:
        """(time, event) pairs sent by `observer`'s membership actor."""
        source = membership_path(observer)
        with self.lock:
            return [
                (t, e)
                for t, s, e in self.log
                if s == source
                and (kind is None or isinstance(e, kind))
                and (about is None or e.node == about)
            ]

    def first(self, observer: str, kind: type, about: str) -> float | None:
        found = self.of(observer, kind, about)
        return found[0][0] if found else None


def status(system: ActorSystem, node: str, timeout: float = 5.0) -> MembershipStatus:
    return system.ref(membership_path(node)).ask(GetMembershipStatus(), timeout).result()


def everyone_up(system: ActorSystem, nodes: list[str]) -> bool:
    for node in nodes:
        try:
            rows = status(system, node, timeout=2.0).members
        except Exception:
            return False
        if {r.node for r in rows if r.state == "up"} != set(nodes):
            return False
    return True


class Member:
    """A ``member_node.py`` process: started, it prints its address and node path."""

    def __init__(
        self,
        name: str,
        seeds: list[str],
        settings: dict,
        log_dir: pathlib.Path,
        protocol: str | None = None,
    ) -> None:
        self.name = name
        self.stderr_path = log_dir / f"{name}.log"
        args = [sys.executable, str(HERE / "member_node.py"), "--name", name]
        for seed in seeds:
            args += ["--seed", seed]
        if protocol is not None:
            args += ["--protocol", protocol]
        args += ["--config", json.dumps(settings)]
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        self.address = ""
        self.node = ""

    def started(self) -> None:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} did not start: {self.stderr_path.read_text()[-2000:]}")
        info = json.loads(line)
        self.address, self.node = info["address"], info["node"]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def close(self) -> None:
        if self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # in case a test left it stopped
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
