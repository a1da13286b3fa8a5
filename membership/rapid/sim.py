"""A one-process simulator of Rapid clusters of thousands of members: simulated network and
clock, seeded and replayable.

Theory of operation
-------------------
Time is a float of simulated seconds and nothing happens between events. One heap holds three
kinds of event: a message delivery, a node's tick, and a scripted call (a fault, a joiner's
start, a sample of the timeline). Ties run in scheduling order and every random choice (latency,
loss, each node's own ``random.Random``) comes from one generator seeded by the run's seed, so
a seed fixes the whole run: :meth:`RapidSim.trace_digest` of two runs with one seed is equal.

Nodes are :class:`~membership.rapid.node.RapidNode` cores driven exactly as the actor shell
drives them: messages go through :meth:`step`, and each node is ticked at the time its
:meth:`deadline` names (not on a fixed timer), which is what lets 10,000 quiet members cost
only their probes. All nodes share one :class:`ConfigurationCache`, so the configuration of a
view is built once, not once per member.

Faults: ``crash`` (nothing more from or to the node), ``isolate``/``heal`` (a partition: the
node and the rest cannot exchange messages, including those already in flight), ``block``
(one direction of one link loses everything: a firewall, a one-way reachability problem), a
uniform loss
rate on every message, and per-node ``flaky`` loss applied to every message to or from that
node. Latency is uniform in ``latency``.

What is measured: messages sent, by type (``sent``) and within windows (:meth:`mark`,
:meth:`since`); every view installed, by whom and when (``installs``); and a timeline of the
cluster size seen by live members (``timeline``), for the plot of ``make sim-membership``.

This is a tool, not protocol: it owns its random generator and is the only Rapid module that
does.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from membership.rapid.config import RapidConfig
from membership.rapid.effects import Log, Publish, Send
from membership.rapid.messages import RemovedFromCluster, ViewChange
from membership.rapid.node import RapidNode, State
from membership.rapid.topology import ConfigurationCache

_DELIVER, _TICK, _CALL = 0, 1, 2


def node_name(i: int) -> str:
    """The node path of simulated member `i` (distinct, realistic addresses)."""
    return f"coterie://n{i}@10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:7100/user/node"


class SimNode:
    __slots__ = (
        "core",
        "counted",
        "crashed",
        "group",
        "index",
        "loss",
        "name",
        "scheduled",
        "views",
    )

    def __init__(self, index: int, name: str, core: RapidNode) -> None:
        self.index = index
        self.name = name
        self.core = core
        self.crashed = False
        self.group = 0  # nodes in different groups cannot exchange messages
        self.loss = 0.0  # chance each message to or from this node is lost
        self.scheduled: float | None = None
        self.counted: tuple[int, str, int] | None = None  # its entry in view_counts
        self.views: list[tuple[float, int, str, int, str]] = []  # (t, epoch, id, size, via)


class RapidSim:
    def __init__(
        self,
        cfg: RapidConfig,
        seed: int = 1,
        latency: tuple[float, float] = (0.0005, 0.005),
        loss: float = 0.0,
        sample_interval: float = 0.1,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.rng = random.Random(seed)
        self.latency = latency
        self.loss = loss
        self.now = 0.0
        self.cache = ConfigurationCache()
        self.nodes: list[SimNode] = []
        self.by_name: dict[str, SimNode] = {}
        self._queue: list[tuple[float, int, int, Any, Any]] = []
        self._seq = itertools.count()
        self._sent: Counter[type] = Counter()  # by message class: cheaper than by name
        self.dropped = 0
        self.delivered = 0
        self.installs: list[tuple[float, int, int, str, int, str]] = []
        self.removals: list[tuple[float, int, int]] = []
        self.warnings: Counter[str] = Counter()
        self.view_counts: Counter[tuple[int, str, int]] = Counter()
        self.timeline: list[tuple[float, int, int, int, int]] = []
        self._sample_interval = sample_interval
        self._sampling = False
        self._trace = hashlib.blake2b(digest_size=16)
        self._partitioned = False
        self._blocked: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ building

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def _new_node(self, incarnation: int = 1) -> SimNode:
        i = len(self.nodes)
        name = node_name(i)
        core = RapidNode(
            name, incarnation, self.cfg, random.Random(self.rng.getrandbits(64)), cache=self.cache
        )
        node = SimNode(i, name, core)
        self.nodes.append(node)
        self.by_name[name] = node
        return node

    def start_static(self, n: int) -> list[SimNode]:
        """`n` members that all start in the same configuration (a cluster formed earlier)."""
        nodes = [self._new_node() for _ in range(n)]
        config = self.cache.build(0, [n.core.member for n in nodes], self.cfg.k)
        for node in nodes:
            self._apply(node, node.core.start_in(config, self.now))
        self._start_sampling()
        return nodes

    def bootstrap(self) -> SimNode:
        """One member forming a new cluster (the seed of a bootstrap)."""
        node = self._new_node()
        self._apply(node, node.core.bootstrap(self.now))
        self._start_sampling()
        return node

    def add_joiner(self, seeds: Iterable[str], at: float | None = None) -> SimNode:
        """A new node that starts joining through `seeds` at time `at` (default: now)."""
        node = self._new_node()
        seeds = tuple(seeds)
        self.call_at(
            self.now if at is None else at,
            lambda: self._apply(node, node.core.join_cluster(seeds, self.now)),
        )
        return node

    # ------------------------------------------------------------------ faults

    def crash(self, names: Iterable[str]) -> None:
        for name in names:
            node = self.by_name[name]
            if not node.crashed:
                node.crashed = True
                self._leave_counts(node)

    def isolate(self, names: Iterable[str], group: int = 1) -> None:
        for name in names:
            self.by_name[name].group = group
        self._partitioned = True

    def heal(self) -> None:
        for node in self.nodes:
            node.group = 0
        self._partitioned = False

    def block(self, src: str, dst: str) -> None:
        """Lose every message from `src` to `dst` (one direction; block both for a cut link)."""
        self._blocked.add((src, dst))

    def unblock_all(self) -> None:
        self._blocked.clear()

    def flaky(self, names: Iterable[str], loss: float) -> None:
        for name in names:
            self.by_name[name].loss = loss

    def leave(self, name: str) -> None:
        node = self.by_name[name]
        self._apply(node, node.core.leave(self.now))

    # ------------------------------------------------------------------ running

    def call_at(self, at: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), _CALL, action, None))

    def run_until(self, until: float) -> None:
        queue = self._queue
        pop = heapq.heappop
        apply = self._apply
        while queue and queue[0][0] <= until:
            at, _, kind, a, b = pop(queue)
            self.now = at
            if kind == _DELIVER:
                # Inlined _deliver: this branch runs once per message, millions of times.
                src, message = b
                if a.crashed or (self._partitioned and src.group != a.group):
                    self.dropped += 1
                    continue
                self.delivered += 1
                apply(a, a.core.step(message, at))
            elif kind == _TICK:
                node: SimNode = a
                if node.scheduled != at or node.crashed:
                    continue
                node.scheduled = None
                self._apply(node, node.core.tick(at))
            else:
                a()
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_while_not(
        self, predicate: Callable[[], bool], limit: float, check_every: float = 0.05
    ) -> float:
        """Run until `predicate()` holds (checked every `check_every`); returns the time it
        took. Raises AssertionError after `limit` simulated seconds."""
        started = self.now
        while not predicate():
            if self.now - started > limit:
                raise AssertionError(f"not reached within {limit} simulated seconds")
            self.run_for(check_every)
        return self.now - started

    # ------------------------------------------------------------------ queries

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes if not n.crashed]

    def members(self) -> list[SimNode]:
        """Live nodes that consider themselves members."""
        return [n for n in self.nodes if not n.crashed and n.core.state is State.MEMBER]

    def views(self) -> Counter[tuple[int, str]]:
        """How many live members hold each (epoch, config id)."""
        out: Counter[tuple[int, str]] = Counter()
        for node in self.members():
            config = node.core.config
            assert config is not None
            out[(config.epoch, config.id)] += 1
        return out

    def agreed(self, expected: set[str] | None = None) -> bool:
        """Every live member holds one and the same view, and that view has exactly the live
        members (or exactly `expected`)."""
        live = self.live()
        if any(n.core.state is not State.MEMBER for n in live):
            return False
        ids = {(n.core.config.epoch, n.core.config.id) for n in live}  # type: ignore[union-attr]
        if len(ids) != 1:
            return False
        config = live[0].core.config
        assert config is not None
        want = expected if expected is not None else {n.name for n in live}
        return set(config.nodes) == want

    @property
    def sent(self) -> Counter[str]:
        """Messages sent so far, by message type name."""
        return Counter({cls.__name__: count for cls, count in self._sent.items()})

    def mark(self) -> Counter[str]:
        return self.sent

    def since(self, mark: Counter[str]) -> dict[str, int]:
        return {k: v - mark.get(k, 0) for k, v in self.sent.items() if v - mark.get(k, 0)}

    def trace_digest(self) -> str:
        """A digest of every view installed (who, when, which): equal runs, equal digests."""
        return self._trace.hexdigest()

    # ------------------------------------------------------------------ internals

    def _apply(self, node: SimNode, effects: list[Any]) -> None:
        now = self.now
        for effect in effects:
            kind = type(effect)
            if kind is Send:
                self._send(node, effect.to, effect.message)
            elif kind is Publish:
                self._published(node, effect.event)
            elif kind is Log and effect.level in ("warning", "error"):
                self.warnings[effect.event] += 1
        if node.crashed:
            return
        deadline = node.core.deadline()
        if deadline is not None and (node.scheduled is None or deadline < node.scheduled):
            at = deadline if deadline > now else now
            node.scheduled = at
            heapq.heappush(self._queue, (at, next(self._seq), _TICK, node, None))

    def _send(self, src: SimNode, to: str, message: Any) -> None:
        self._sent[type(message)] += 1
        dst = self.by_name.get(to)
        rng = self.rng
        if (
            dst is None
            or (self._partitioned and src.group != dst.group)
            or (self._blocked and (src.name, to) in self._blocked)
        ):
            self.dropped += 1
            return
        if (
            (self.loss and rng.random() < self.loss)
            or (src.loss and rng.random() < src.loss)
            or (dst.loss and rng.random() < dst.loss)
        ):
            self.dropped += 1
            return
        lo, hi = self.latency
        at = self.now + lo + (hi - lo) * rng.random()
        heapq.heappush(self._queue, (at, next(self._seq), _DELIVER, dst, (src, message)))

    def _published(self, node: SimNode, event: Any) -> None:
        if isinstance(event, ViewChange):
            self._leave_counts(node)
            node.views.append((self.now, event.epoch, event.config_id, event.size, event.via))
            self.installs.append(
                (self.now, node.index, event.epoch, event.config_id, event.size, event.via)
            )
            if node.core.state is State.MEMBER:
                node.counted = (event.epoch, event.config_id, event.size)
                self.view_counts[node.counted] += 1
            self._trace.update(
                b"%d %.9f %d %s\n" % (node.index, self.now, event.epoch, event.config_id.encode())
            )
        elif isinstance(event, RemovedFromCluster):
            self.removals.append((self.now, node.index, event.epoch))

    def _leave_counts(self, node: SimNode) -> None:
        key = node.counted
        if key is not None:
            node.counted = None
            self.view_counts[key] -= 1
            if not self.view_counts[key]:
                del self.view_counts[key]

    def _start_sampling(self) -> None:
        if self._sampling:
            return
        self._sampling = True
        self.call_at(self.now, self._sample)

    def _sample(self) -> None:
        self.record_sample()
        self.call_at(self.now + self._sample_interval, self._sample)

    def record_sample(self) -> None:
        """Append (t, live members, smallest view size, largest view size, members on the
        most common view) to the timeline: done every sample interval, and by a scenario at
        the moment it ends (between two samples) so the plot shows where it ended."""
        counts = self.view_counts
        if counts:
            sizes = [size for _, _, size in counts]
            top = max(counts.values())
            row = (round(self.now, 3), sum(counts.values()), min(sizes), max(sizes), top)
            if not self.timeline or self.timeline[-1] != row:
                self.timeline.append(row)
