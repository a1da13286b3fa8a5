"""Helpers shared by the membership tests that run real actor systems: a fast configuration, an
event collector actor, and polling with a deadline."""

from __future__ import annotations

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
