"""The node supervisor side of liveness: :class:`PingResponder` for any node supervisor, and
:class:`NodeSupervisor`, a minimal one that hosts the membership actor.

Which membership a node runs is chosen by the type of its configuration
(:func:`membership_props`): a :class:`~membership.config.MembershipConfig` gives the gossip
membership with phi-accrual liveness, a
:class:`~membership.rapid.actor.RapidMembershipConfig` gives Rapid. Both actors live at
``/user/node/membership`` and name members by their supervisor paths.

A node is alive for its peers when its *supervisor* (``/user/node``) answers pings: the Raft
node's supervisor will mix in :class:`PingResponder` the same way. The pong names the
supervisor's own path (never a child's), because that is the path peers ping and key their
liveness tables by.
"""

from __future__ import annotations

import time
from typing import Any

from actors import UNHANDLED, Actor, ActorRef, ActorSystem, Props
from membership.actor import MembershipActor
from membership.config import MEMBERSHIP_NAME, SUPERVISOR_NAME, MembershipConfig
from membership.liveness import make_pong
from membership.messages import Ping
from membership.rapid.actor import RapidMembershipActor, RapidMembershipConfig

AnyMembershipConfig = MembershipConfig | RapidMembershipConfig


def membership_props(
    config: AnyMembershipConfig, incarnation: int, rng_seed: int | None = None
) -> Props:
    """The membership actor `config` selects, to spawn as ``membership`` under a node
    supervisor."""
    if isinstance(config, RapidMembershipConfig):
        return Props(RapidMembershipActor, config, incarnation, rng_seed)
    if isinstance(config, MembershipConfig):
        return Props(MembershipActor, config, incarnation, rng_seed)
    raise TypeError(f"not a membership configuration: {type(config).__name__}")


def new_incarnation() -> int:
    """A fresh incarnation number: microseconds since the epoch, so a restarted process on the
    same address supersedes the one before it."""
    return time.time_ns() // 1_000


class PingResponder(Actor):
    """Mixin for a node supervisor: call :meth:`answer_ping` first in its behaviour.

    The subclass sets ``self.incarnation`` (the same number its membership actor announces).
    """

    incarnation: int = 0

    def answer_ping(self, message: Any, sender: ActorRef | None) -> bool:
        """Answer `message` if it is a Ping; True if it was one."""
        if type(message) is not Ping:
            return False
        if sender is not None:
            sender.tell(make_pong(message, self.ctx.path, self.incarnation))
        return True


class _Ready:
    """Asked by :func:`start_node` (local only): the answer proves ``pre_start`` has run, so
    the membership child is registered and can be messaged."""

    __slots__ = ()


class NodeSupervisor(PingResponder):
    """A node supervisor that answers pings and supervises the membership actor."""

    def __init__(
        self, config: AnyMembershipConfig, incarnation: int, rng_seed: int | None = None
    ) -> None:
        self.config = config
        self.incarnation = incarnation
        self.rng_seed = rng_seed

    def pre_start(self) -> None:
        props = membership_props(self.config, self.incarnation, self.rng_seed)
        self.ctx.spawn(props, MEMBERSHIP_NAME)

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if self.answer_ping(message, sender):
            return None
        if type(message) is _Ready:
            return True
        return UNHANDLED


def start_node(
    system: ActorSystem,
    config: AnyMembershipConfig,
    incarnation: int | None = None,
    rng_seed: int | None = None,
    timeout: float = 10.0,
) -> ActorRef:
    """Spawn a :class:`NodeSupervisor` at ``/user/node`` (with membership below it).

    Returns once the membership actor exists, so a ``Subscribe`` sent right away is not a dead
    letter. Blocks briefly: call it at process start, never from inside an actor.
    """
    props = Props(
        NodeSupervisor,
        config,
        new_incarnation() if incarnation is None else incarnation,
        rng_seed,
    )
    ref = system.spawn(props, SUPERVISOR_NAME)
    ref.ask(_Ready(), timeout).result()
    return ref
