"""The Rapid membership actor: the thin shell that runs :class:`~membership.rapid.node.RapidNode`
(the same sans-IO core the simulator drives) in a real node over the actor runtime.

It lives where the gossip membership actor lives, at ``/user/node/membership``, the child of
the node supervisor whose path is this member's name: the core names every peer by its
supervisor path (so its probes, acks, tables and configurations are keyed on that path, as the
gossip membership's pings are), and the shell delivers a message for node ``N`` to
``N/membership``, the Rapid actor of that node. Probes are answered by the Rapid actor itself
because the answer carries its configuration id (the anti-entropy hook); a node whose actor
system is gone answers nothing, which is what the edge detector looks for.

What the shell does, and nothing else: reads ``time.monotonic()``, ticks the core on a timer
(``tick_interval``; the core's own ``deadline`` matters to the simulator, which sleeps, not
here), sends (one cached ref per peer), publishes ``ViewChange``/``RemovedFromCluster`` to
subscribers, logs, and answers ``GetRapidStatus`` (and ``GetMembershipStatus``, in the gossip
membership's shape, for tools that ask any node).

Starting: with no seeds (or only itself as a seed) the member forms a new cluster on its own;
otherwise it joins through the seeds. A static list of seeds shared by every member (the nodes
of a cluster file) works as in the gossip membership: the first seed in the list forms a new
cluster if no other seed has answered within ``seed_timeout``, every other member only joins,
so a whole cluster can start or restart at once and end up in one cluster.

A service selects Rapid over the gossip membership by giving its node supervisor a
:class:`RapidMembershipConfig` instead of a :class:`~membership.config.MembershipConfig` (see
:func:`membership.supervisor.membership_props`); a cluster file does it with ``[membership]
protocol = "rapid"``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Any

from actors import Actor, ActorRef
from membership.config import membership_path, supervisor_path
from membership.messages import (
    GetMembershipStatus,
    LeaveCluster,
    MemberRow,
    MembershipStatus,
    Subscribe,
    Unsubscribe,
)
from membership.rapid.config import RapidConfig
from membership.rapid.effects import Effect, Log, Publish, Send
from membership.rapid.messages import RAPID_PROTOCOL, GetRapidStatus, ViewChange
from membership.rapid.node import RapidNode, State
from membership.shell_io import subscriber_ref, tell_logged


@dataclass(frozen=True)
class RapidMembershipConfig:
    """How a node runs Rapid membership: its seeds, the shell's tick, the protocol settings."""

    seeds: tuple[str, ...] = ()
    # The core is ticked this often; its timers (probes, batching, gossip) are as precise as
    # this. Shorter than any of them, so a tick is never what delays a step.
    tick_interval: float = 0.05
    rapid: RapidConfig = field(default_factory=RapidConfig)
    # The first seed forms a new cluster if no other seed answers within this. Longer than a
    # view change lasts (a seed holds a joiner during one without answering), so a restarted
    # first seed rejoins its cluster rather than start a second one.
    seed_timeout: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(supervisor_path(s) for s in self.seeds))
        if not self.seed_timeout > 0:
            raise ValueError(f"seed_timeout must be positive, got {self.seed_timeout}")
        if not 0 < self.tick_interval <= self.rapid.heartbeat_interval:
            raise ValueError(
                "tick_interval must be positive and not longer than rapid.heartbeat_interval, "
                f"got {self.tick_interval}"
            )

    def replace(self, **changes: object) -> RapidMembershipConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class _Tick:
    """The shell's timer message (local only, never on the wire)."""

    __slots__ = ()


_TICK = _Tick()
_PROTOCOL = frozenset(RAPID_PROTOCOL)
# Refs to peers are cached; past this many (a cluster that churned through many addresses)
# the cache starts over rather than grow without bound.
_MAX_REFS = 20_000


class RapidMembershipActor(Actor):
    def __init__(
        self, config: RapidMembershipConfig, incarnation: int, rng_seed: int | None = None
    ) -> None:
        self.config = config
        self.incarnation = incarnation
        self.rng = random.Random(rng_seed)
        self.subscribers: dict[str, ActorRef] = {}
        self.refs: dict[str, ActorRef] = {}
        self._timer: Any = None
        self.core: RapidNode

    # ------------------------------------------------------------------ lifecycle

    def pre_start(self) -> None:
        parent = self.ctx.parent
        if parent is None:
            raise RuntimeError("the Rapid membership actor must be the child of a node supervisor")
        now = time.monotonic()
        me = parent.path.text
        self.core = RapidNode(me, self.incarnation, self.config.rapid, self.rng)
        seeds = [s for s in self.config.seeds if s != me]
        self._timer = self.ctx.schedule_repeatedly(self.config.tick_interval, _TICK)
        first_seed = bool(self.config.seeds) and self.config.seeds[0] == me
        if seeds:
            form_after = self.config.seed_timeout if first_seed else None
            self._apply(self.core.join_cluster(seeds, now, form_after))
        else:
            self._apply(self.core.bootstrap(now))

    def post_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    # ------------------------------------------------------------------ messages

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        now = time.monotonic()
        kind = type(message)
        if kind in _PROTOCOL:
            self._apply(self.core.step(message, now))
            return None
        match message:
            case _Tick():
                self._apply(self.core.tick(now))
            case GetRapidStatus():
                return self.core.status()
            case GetMembershipStatus():
                return self._common_status()
            case Subscribe(subscriber):
                self._subscribe(subscriber, sender)
            case Unsubscribe(subscriber):
                path = subscriber or (sender.path.text if sender is not None else "")
                self.subscribers.pop(path, None)
            case LeaveCluster():
                self._apply(self.core.leave(now))
                return self.core.status()
            case _:
                return super().receive(message, sender)
        return None

    def _common_status(self) -> MembershipStatus:
        """The gossip membership's status shape (what ``coterie nodetool status`` asks every
        node for, whichever membership it runs): this member's state and the view's members.
        Rapid has no per-peer phi or heartbeat age: an edge is either alerted or not."""
        status = self.core.status()
        rows = [
            MemberRow(node, incarnation, "member", "", None, None, None, True, 0)
            for node, incarnation in status.members
        ]
        return MembershipStatus(
            status.node, status.incarnation, status.state, rows, dict(status.counters)
        )

    def _subscribe(self, subscriber: str, sender: ActorRef | None) -> None:
        ref = subscriber_ref(self.ctx, subscriber, sender)
        if ref is None:
            return
        self.subscribers[ref.path.text] = ref
        # The view held now comes first, as an event, so a subscriber never has to ask and
        # reconcile a snapshot with events that raced it.
        config = self.core.config
        if self.core.state is State.MEMBER and config is not None:
            self._tell(
                ref, ViewChange(config.epoch, config.id, config.size, config.members, (), "current")
            )
        self.ctx.log.info("subscriber added", subscriber=ref.path.text)

    # ------------------------------------------------------------------ effects

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send(to, message):
                    self._tell(self.refs.get(to) or self._ref(to), message)
                case Publish(event):
                    for ref in list(self.subscribers.values()):
                        self._tell(ref, event)
                case Log(event, level, fields):
                    getattr(self.ctx.log, level)(event, **fields)

    def _ref(self, node: str) -> ActorRef:
        if len(self.refs) >= _MAX_REFS:
            self.refs.clear()
        ref = self.refs[node] = self.ctx.system.ref(membership_path(node))
        return ref

    def _tell(self, ref: ActorRef, message: Any) -> None:
        tell_logged(self.ctx, ref, message)
