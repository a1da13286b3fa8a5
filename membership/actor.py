"""The membership actor: the thin shell that gives :class:`~membership.core.Membership` a clock,
timers, refs, subscribers and a log.

It lives at ``/user/node/membership``, the child of the node supervisor whose path is this
node's name in the cluster. Everything it decides comes from the core; here we only read
``time.monotonic()``, keep the ref table the core's ``ResolveRef``/``EvictRef`` effects
describe (keyed by supervisor path, the same key as the core's liveness table), send, publish,
log, and answer asks.
"""

from __future__ import annotations

import random
import time
from typing import Any

from actors import Actor, ActorError, ActorRef, Reply
from membership.config import MembershipConfig
from membership.core import Membership
from membership.effects import Effect, EvictRef, LeaveDone, Log, Publish, ResolveRef, Send
from membership.messages import (
    GetMembershipStatus,
    Gossip,
    Join,
    LeaveCluster,
    Pong,
    Subscribe,
    Unsubscribe,
    Welcome,
)
from membership.shell_io import subscriber_ref, tell_logged


class _Tick:
    """The shell's timer message (local only, never on the wire)."""

    __slots__ = ()


_TICK = _Tick()
_MAX_OTHER_REFS = 1_000


class MembershipActor(Actor):
    def __init__(
        self, config: MembershipConfig, incarnation: int, rng_seed: int | None = None
    ) -> None:
        self.config = config
        self.incarnation = incarnation
        self.rng = random.Random(rng_seed)
        self.subscribers: dict[str, ActorRef] = {}
        # Refs to peer supervisors, keyed by supervisor path exactly as the core keys liveness.
        self.refs: dict[str, ActorRef] = {}
        self._other_refs: dict[str, ActorRef] = {}
        self._leave_replies: list[Reply] = []
        self._timer: Any = None
        self.core: Membership

    # ------------------------------------------------------------------ lifecycle

    def pre_start(self) -> None:
        parent = self.ctx.parent
        if parent is None:
            raise RuntimeError("the membership actor must be the child of a node supervisor")
        now = time.monotonic()
        self.core = Membership(parent.path.text, self.incarnation, self.config, self.rng, now)
        self._timer = self.ctx.schedule_repeatedly(self.config.tick_interval, _TICK)
        self._apply(self.core.start(now))

    def post_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for reply in self._leave_replies:
            reply.failure(ActorError("the membership actor stopped before the leave finished"))
        self._leave_replies.clear()

    # ------------------------------------------------------------------ messages

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        now = time.monotonic()
        match message:
            case _Tick():
                self._apply(self.core.tick(now))
            case Pong() | Join() | Welcome() | Gossip():
                self._apply(self.core.step(message, now))
            case GetMembershipStatus():
                return self.core.status(now)
            case Subscribe(subscriber):
                self._subscribe(subscriber, sender)
            case Unsubscribe(subscriber):
                path = subscriber or (sender.path.text if sender is not None else "")
                self.subscribers.pop(path, None)
            case LeaveCluster():
                if self.ctx.asked:  # told rather than asked: leave without reporting back
                    self._leave_replies.append(self.ctx.deferred_reply())
                self._apply(self.core.leave(now))
            case _:
                return super().receive(message, sender)
        return None

    def _subscribe(self, subscriber: str, sender: ActorRef | None) -> None:
        ref = subscriber_ref(self.ctx, subscriber, sender)
        if ref is None:
            return
        self.subscribers[ref.path.text] = ref
        # The current state first, as events, so a subscriber never has to ask and then
        # reconcile a snapshot with events that raced it.
        for event in self.core.replay_events():
            self._tell(ref, event)
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
                case ResolveRef(node):
                    self.refs[node] = self.ctx.system.ref(node)
                case EvictRef(node, _reason):
                    self.refs.pop(node, None)
                case Log(event, level, fields):
                    getattr(self.ctx.log, level)(event, **fields)
                case LeaveDone(result):
                    replies, self._leave_replies = self._leave_replies, []
                    for reply in replies:
                        reply.success(result)

    def _ref(self, path: str) -> ActorRef:
        ref = self._other_refs.get(path)
        if ref is None:
            if len(self._other_refs) >= _MAX_OTHER_REFS:
                self._other_refs.clear()
            ref = self._other_refs[path] = self.ctx.system.ref(path)
        return ref

    def _tell(self, ref: ActorRef, message: Any) -> None:
        tell_logged(self.ctx, ref, message)
