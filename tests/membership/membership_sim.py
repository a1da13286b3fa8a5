"""A deterministic simulated network and clock that drives sans-IO membership cores.

Each simulated node is a :class:`~membership.core.Membership` plus a node supervisor that answers
pings with :func:`membership.liveness.make_pong`, exactly as the real supervisor does. Messages
are delivered after a seeded random latency; every node ticks every ``tick_interval`` at its own
phase. Faults: ``crash`` (the node is gone: nothing answers, messages to it are lost), ``pause``
(SIGSTOP: nothing answers or ticks until the pause ends, then queued messages arrive in a
burst), ``stop_supervisor`` (the supervisor stops answering pings; the membership core runs on),
and ``pause_observer_clock`` (the node's own ticks stop for a while, as if it were descheduled).

A seed fixes the whole run: the same seed gives the same trace.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from membership.config import MEMBERSHIP_NAME, MembershipConfig, membership_path
from membership.core import Membership
from membership.effects import EvictRef, LeaveDone, Log, Publish, ResolveRef, Send
from membership.liveness import make_pong
from membership.messages import LeaveResult, Ping


def node_path(name: str, port: int) -> str:
    return f"coterie://{name}@127.0.0.1:{port}/user/node"


@dataclass
class SimNode:
    name: str
    path: str
    incarnation: int
    core: Membership
    phase: float
    # What the supervisor's pong names: its own path (correct) or, to reproduce Sirius, a child.
    answers_as: str
    crashed: bool = False
    supervisor_stopped: bool = False
    paused_until: float = 0.0
    ticks_paused_until: float = 0.0
    held: list[tuple[str, str, Any]] = field(default_factory=list)
    events: list[tuple[float, Any]] = field(default_factory=list)
    logs: list[tuple[float, Log]] = field(default_factory=list)
    refs: dict[str, int] = field(default_factory=dict)  # ResolveRef effects per peer
    evictions: dict[str, int] = field(default_factory=dict)  # stale EvictRef effects per peer
    leave_results: list[LeaveResult] = field(default_factory=list)


class SimNetwork:
    def __init__(
        self,
        config: MembershipConfig,
        seed: int = 1,
        latency: tuple[float, float] = (0.0005, 0.003),
    ) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.latency = latency
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self._queue: list[tuple[float, int, str, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._port = itertools.count(7101)
        self.trace: list[str] = []
        self.sent: list[tuple[float, str, str, Any]] = []  # (time, sender name, to, message)

    # ------------------------------------------------------------------ building

    def add_node(
        self,
        name: str,
        seeds: tuple[str, ...] = (),
        incarnation: int = 1,
        answers_as_child: bool = False,
        path: str | None = None,
        config: MembershipConfig | None = None,
    ) -> SimNode:
        path = path or node_path(name, next(self._port))
        config = (config or self.config).replace(seeds=seeds)
        core = Membership(path, incarnation, config, random.Random(self.rng.random()), self.now)
        answers_as = f"{path}/{MEMBERSHIP_NAME}" if answers_as_child else path
        node = SimNode(
            name, path, incarnation, core, self.rng.uniform(0, config.tick_interval), answers_as
        )
        self.nodes[path] = node
        self._apply(node, core.start(self.now))
        self._schedule_tick(node, self.now + node.phase)
        return node

    def restart(self, node: SimNode, incarnation: int) -> SimNode:
        """The process at `node`'s address is replaced by a new one (new incarnation)."""
        node.crashed = True
        seeds = node.core.config.seeds
        del self.nodes[node.path]
        return self.add_node(node.name, seeds, incarnation, path=node.path)

    # ------------------------------------------------------------------ faults

    def crash(self, node: SimNode) -> None:
        node.crashed = True

    def pause(self, node: SimNode, seconds: float) -> None:
        node.paused_until = self.now + seconds
        self._at(node.paused_until, f"resume {node.name}", lambda: self._resume(node))

    def pause_ticks(self, node: SimNode, seconds: float) -> None:
        node.ticks_paused_until = self.now + seconds

    def stop_supervisor(self, node: SimNode) -> None:
        node.supervisor_stopped = True

    def leave(self, node: SimNode) -> None:
        self._apply(node, node.core.leave(self.now))

    # ------------------------------------------------------------------ running

    def run_until(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            at, _, _, action = heapq.heappop(self._queue)
            self.now = at
            action()
        self.now = until

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until_true(
        self, predicate: Callable[[], bool], limit: float, step: float = 0.01
    ) -> float:
        """Run until `predicate()` holds (checked every `step`); returns the time it took."""
        started = self.now
        while not predicate():
            if self.now - started > limit:
                raise AssertionError(f"condition not met within {limit}s of simulated time")
            self.run_for(step)
        return self.now - started

    # ------------------------------------------------------------------ queries

    def states(self, observer: SimNode) -> dict[str, str]:
        return {n: m.state.value for n, m in observer.core.table.members.items()}

    def events_of(self, observer: SimNode, kind: type) -> list[tuple[float, Any]]:
        return [(t, e) for t, e in observer.events if isinstance(e, kind)]

    def all_up(self, nodes: list[SimNode]) -> bool:
        paths = {n.path for n in nodes}
        return all({p for p, s in self.states(n).items() if s == "up"} >= paths for n in nodes)

    # ------------------------------------------------------------------ internals

    def _at(self, at: float, label: str, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), label, action))

    def _schedule_tick(self, node: SimNode, at: float) -> None:
        def tick() -> None:
            if node.crashed or self.nodes.get(node.path) is not node:
                return
            if self.now >= node.paused_until and self.now >= node.ticks_paused_until:
                self._apply(node, node.core.tick(self.now))
            self._schedule_tick(node, at + node.core.config.tick_interval)

        self._at(at, f"tick {node.name}", tick)

    def _resume(self, node: SimNode) -> None:
        held, node.held = node.held, []
        for sender, to, message in held:
            self._receive(sender, to, message)

    def _apply(self, node: SimNode, effects: list[Any]) -> None:
        for effect in effects:
            match effect:
                case Send(to, message):
                    self.sent.append((self.now, node.name, to, message))
                    delay = self.rng.uniform(*self.latency)
                    self._at(
                        self.now + delay,
                        f"deliver {type(message).__name__}",
                        lambda s=node.path, t=to, m=message: self._receive(s, t, m),
                    )
                case Publish(event):
                    node.events.append((self.now, event))
                    self.trace.append(
                        f"{self.now:.2f} {node.name} {type(event).__name__} {event.node}"
                    )
                case ResolveRef(peer):
                    node.refs[peer] = node.refs.get(peer, 0) + 1
                case EvictRef(peer, reason):
                    if reason == "stale":
                        node.evictions[peer] = node.evictions.get(peer, 0) + 1
                case Log():
                    node.logs.append((self.now, effect))
                case LeaveDone(result):
                    node.leave_results.append(result)

    def _receive(self, sender: str, to: str, message: Any) -> None:
        target_path = to.removesuffix(f"/{MEMBERSHIP_NAME}")
        target = self.nodes.get(target_path)
        if target is None or target.crashed:
            return
        if self.now < target.paused_until:
            target.held.append((sender, to, message))
            return
        if to == target.path:  # to the node supervisor
            if isinstance(message, Ping) and not target.supervisor_stopped:
                pong = make_pong(message, target.answers_as, target.incarnation)
                delay = self.rng.uniform(*self.latency)
                self._at(
                    self.now + delay,
                    "deliver Pong",
                    lambda: self._receive(target.path, membership_path(sender), pong),
                )
            return
        if to == membership_path(target.path):
            self._apply(target, target.core.step(message, self.now))
