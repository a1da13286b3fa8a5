"""The actor cell: a pykka thread that hosts one actor instance and supervises its children.

Theory of operation
-------------------
Each cell is a ``pykka.ThreadingActor`` with its own thread and mailbox. Two kinds of items
arrive in the mailbox:

* :class:`Delivery` - a user message with its sender and, for an ask, its :class:`Reply`.
  It goes to the current behaviour (the top of the behaviour stack).
* system messages (:class:`Failed`, :class:`Restart`, :class:`Resume`, :class:`StopActor`,
  :class:`ChildStopped`) - supervision and lifecycle, handled even while suspended.

When a behaviour raises, the cell logs the failure with its path and traceback, fails the
asker (if any), *suspends* (later deliveries wait in a buffer, in order) and sends
:class:`Failed` to its parent. The parent's strategy answers with resume, restart (a new
instance from the props; same path, same mailbox, children stopped first), stop, or escalate
(stop the child and fail itself). Nothing waiting in the cell is lost across a restart: the
stash, the unstashed and the buffered deliveries are replayed to the new instance in order.

Stopping is top-down and synchronous per level: a cell stops its children (waiting for their
threads), runs ``post_stop``, fails the asks still queued to it with ActorStopped, leaves the
system's registry and tells its parent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

import pykka
import structlog

from actors.actor import UNHANDLED, Actor, Behaviour, Context, Props, Reply, describe
from actors.errors import ActorFailed, ActorNameTaken, ActorStopped, UnhandledMessage
from actors.ref import ActorRef, Continuation, set_current_actor
from actors.supervision import Directive, OneForOne

if TYPE_CHECKING:
    from actors.paths import ActorPath
    from actors.system import ActorSystem


class Delivery:
    __slots__ = ("message", "reply", "reply_taken", "sender", "stashed")

    def __init__(self, message: Any, sender: ActorRef | None, reply: Reply | None) -> None:
        self.message = message
        self.sender = sender
        self.reply = reply
        self.reply_taken = False
        self.stashed = False  # stashed by the behaviour now running: its answer comes later


class SystemMessage:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Failed(SystemMessage):
    child: ActorCell
    error: BaseException


@dataclass(frozen=True, slots=True)
class Restart(SystemMessage):
    cause: BaseException


@dataclass(frozen=True, slots=True)
class Resume(SystemMessage):
    pass


@dataclass(frozen=True, slots=True)
class StopActor(SystemMessage):
    done: threading.Event | None = None


@dataclass(frozen=True, slots=True)
class ChildStopped(SystemMessage):
    child: ActorCell


class EscalatedFailure(Exception):
    """A child failed more often than its supervisor allows; the supervisor fails with it."""

    def __init__(self, child: str, cause: BaseException) -> None:
        self.child = child
        self.cause = cause
        super().__init__(f"child {child} failed too often: {type(cause).__name__}: {cause}")


class ActorCell(pykka.ThreadingActor):
    def __init__(
        self, system: ActorSystem, path: ActorPath, props: Props, parent: ActorCell | None
    ) -> None:
        super().__init__()
        self.system = system
        self.path = path
        self.props = props
        self.parent = parent
        self.ref = ActorRef(system, path, local=True)
        self.children: dict[str, ActorCell] = {}
        self.context = Context(self)
        self.log = structlog.get_logger("coterie.actor").bind(actor=path.text)
        self.instance: Actor | None = None
        self.strategy: OneForOne | None = None
        self.behaviours: list[Behaviour] = []
        self.current: Delivery | None = None
        self.stashed: list[Delivery] = []
        self.unstashed: deque[Delivery] = deque()
        self.buffered: deque[Delivery] = deque()  # arrived while suspended
        self.suspended = False
        self.stopping = False
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------ pykka plumbing

    @staticmethod
    def _create_actor_inbox() -> Any:
        return SimpleQueue()  # a C queue: several times cheaper per message than queue.Queue

    def _start_actor_loop(self) -> None:
        self.thread = threading.Thread(
            target=self._actor_loop, name=f"actor:{self.path.key}", daemon=True
        )
        self.thread.start()

    def launch(self) -> None:
        pykka.ActorRegistry.register(self.actor_ref)
        self._start_actor_loop()

    def enqueue(self, item: Delivery | SystemMessage) -> bool:
        """Put an item in the mailbox; False if the cell has already stopped."""
        try:
            self.actor_ref.tell(item)
            return True
        except pykka.ActorDeadError:
            return False

    def on_start(self) -> None:
        set_current_actor(self.ref)
        self._create_instance(None)

    def on_receive(self, item: Any) -> Any:
        if type(item) is Delivery:
            if self.suspended or self.stopping:
                self.buffered.append(item)
                return None
            self._invoke(item)
            self._drain_unstashed()
        else:
            self._system_message(item)
        return None

    def _actor_loop_teardown(self) -> None:
        # Asks still queued when the loop ends get an answer, never a silent timeout.
        while not self.actor_inbox.empty():
            item = self.actor_inbox.get().message
            self._refuse(item)

    # ------------------------------------------------------------------ instances

    def _create_instance(self, cause: BaseException | None) -> None:
        try:
            instance = self.props.create(self.context)
            self.instance = instance
            if self.strategy is None:
                self.strategy = instance.supervisor_strategy()
            self.behaviours = [instance.receive]
            if cause is None:
                instance.pre_start()
            else:
                instance.post_restart(cause)
        except Exception as exc:
            self._fail(exc, None, "creating the actor")

    @property
    def behaviour_name(self) -> str:
        if not self.behaviours:
            return "<none>"
        return getattr(self.behaviours[-1], "__name__", repr(self.behaviours[-1]))

    def become(self, behaviour: Behaviour, discard_old: bool) -> None:
        if not callable(behaviour):
            raise TypeError(f"a behaviour is a callable (message, sender), got {behaviour!r}")
        if discard_old and self.behaviours:
            self.behaviours[-1] = behaviour
        else:
            self.behaviours.append(behaviour)

    def unbecome(self) -> None:
        if len(self.behaviours) > 1:
            self.behaviours.pop()

    # ------------------------------------------------------------------ user messages

    def _invoke(self, delivery: Delivery) -> None:
        self.current = delivery
        delivery.stashed = False
        message = delivery.message
        behaviour = self.behaviours[-1]
        try:
            if type(message) is Continuation:
                future = message.future
                error = future.exception()
                result = message.then(None if error else future.result(), error)
            else:
                result = behaviour(message, delivery.sender)
        except Exception as exc:
            self.current = None
            self._fail(exc, delivery, describe(message))
            return
        self.current = None
        if delivery.stashed:
            return  # handled again after unstash_all(); only that handling answers
        if result is UNHANDLED:
            self._unhandled(delivery, behaviour)
        elif delivery.reply is not None and not delivery.reply_taken:
            delivery.reply.success(result)

    def _unhandled(self, delivery: Delivery, behaviour: Behaviour) -> None:
        name = getattr(behaviour, "__name__", repr(behaviour))
        message_type = describe(delivery.message)
        self.system.counters.inc("unhandled")
        self.log.warning("unhandled message", message_type=message_type, behaviour=name)
        if delivery.reply is not None and not delivery.reply_taken:
            delivery.reply.failure(
                UnhandledMessage(self.path.text, message_type, f"not handled by behaviour {name}")
            )

    def _drain_unstashed(self) -> None:
        while self.unstashed and not self.suspended and not self.stopping:
            self._invoke(self.unstashed.popleft())

    def stash_current(self) -> None:
        if self.current is None:
            raise RuntimeError("stash() is only valid while handling a message")
        self.current.stashed = True
        self.stashed.append(self.current)

    def unstash_all(self) -> None:
        self.unstashed.extendleft(reversed(self.stashed))
        self.stashed.clear()

    def take_reply(self) -> Reply:
        current = self.current
        if current is None or current.reply is None:
            raise RuntimeError("deferred_reply() is only valid while handling an ask")
        current.reply_taken = True
        return current.reply

    # ------------------------------------------------------------------ failure

    def _fail(self, exc: BaseException, delivery: Delivery | None, doing: str) -> None:
        self.system.counters.inc("actor_failures")
        self.log.error(
            "actor failed",
            behaviour=self.behaviour_name,
            while_handling=doing,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )
        if delivery is not None and delivery.reply is not None and not delivery.reply_taken:
            delivery.reply.failure(
                ActorFailed(
                    self.path.text, describe(delivery.message), f"{type(exc).__name__}: {exc}"
                )
            )
        if self.parent is None:
            # A guardian has nobody to ask; it keeps running so the system stays up.
            self.log.critical("guardian failure", error=str(exc))
            return
        self.suspended = True
        self.parent.enqueue(Failed(self, exc))

    def _system_message(self, item: Any) -> None:
        if isinstance(item, Failed):
            self._supervise(item.child, item.error)
        elif isinstance(item, Restart):
            self._restart(item.cause)
        elif isinstance(item, Resume):
            self.suspended = False
            self._replay()
        elif isinstance(item, StopActor):
            self._stop_self(item.done)
        elif isinstance(item, ChildStopped):
            if self.children.get(item.child.path.name) is item.child:
                del self.children[item.child.path.name]
                if self.strategy is not None:
                    self.strategy.forget(item.child.path.name)
        else:
            self.log.error("unknown system message", item=repr(item))

    def _supervise(self, child: ActorCell, error: BaseException) -> None:
        name = child.path.name
        if self.children.get(name) is not child or child.stopping:
            return  # a stale report from a child already replaced or stopping
        assert self.strategy is not None
        directive = self.strategy.decide(name, error, time.monotonic())
        self.log.info(
            "supervising child failure",
            child=child.path.text,
            directive=directive.value,
            error=f"{type(error).__name__}: {error}",
        )
        if directive is Directive.RESUME:
            child.enqueue(Resume())
        elif directive is Directive.RESTART:
            child.enqueue(Restart(error))
        elif directive is Directive.STOP:
            self._stop_children([child])
        else:
            self._stop_children([child])
            self._fail(EscalatedFailure(child.path.text, error), None, f"failure of {name}")

    def _restart(self, cause: BaseException) -> None:
        self.log.info("restarting", cause=f"{type(cause).__name__}: {cause}")
        self.system.counters.inc("actor_restarts")
        old = self.instance
        if old is not None:
            try:
                old.pre_restart(cause)
            except Exception as exc:
                self.log.error("pre_restart failed", error=str(exc), exc_info=exc)
        self._stop_children(list(self.children.values()))
        self.suspended = False
        self._create_instance(cause)
        self._replay()

    def _replay(self) -> None:
        # Everything that waited survives a failure, in arrival order.
        pending = [*self.stashed, *self.unstashed, *self.buffered]
        self.stashed.clear()
        self.buffered.clear()
        self.unstashed = deque(pending)
        self._drain_unstashed()

    # ------------------------------------------------------------------ children and stop

    def spawn_child(self, props: Props, name: str) -> ActorRef:
        path = self.path.child(name)
        if name in self.children:
            raise ActorNameTaken(f"{path.text} already exists")
        cell = ActorCell(self.system, path, props, self)
        self.system._register(cell)
        self.children[name] = cell
        cell.launch()
        return cell.ref

    def stop_child_async(self, ref: ActorRef) -> None:
        child = self.children.get(ref.path.name)
        if child is None or child.ref != ref:
            raise ValueError(f"{ref.path.text} is not a child of {self.path.text}")
        child.enqueue(StopActor())

    def _stop_children(self, children: list[ActorCell]) -> None:
        waits = []
        for child in children:
            done = threading.Event()
            if child.enqueue(StopActor(done)):
                waits.append((child, done))
        for child, done in waits:
            if not done.wait(10.0):
                self.log.error("child did not stop in time", child=child.path.text)
            elif child.thread is not None:
                child.thread.join(5.0)
            if self.children.get(child.path.name) is child:
                del self.children[child.path.name]
                if self.strategy is not None:
                    self.strategy.forget(child.path.name)

    def _stop_self(self, done: threading.Event | None) -> None:
        if not self.stopping:
            self.stopping = True
            self._stop_children(list(self.children.values()))
            if self.instance is not None:
                try:
                    self.instance.post_stop()
                except Exception as exc:
                    self.log.error("post_stop failed", error=str(exc), exc_info=exc)
            for delivery in (*self.stashed, *self.unstashed, *self.buffered):
                self._refuse(delivery)
            self.stashed.clear()
            self.unstashed.clear()
            self.buffered.clear()
            self.system._unregister(self)
            self.log.debug("stopped")
            if self.parent is not None:
                self.parent.enqueue(ChildStopped(self))
            self._stop()
        if done is not None:
            done.set()

    def _refuse(self, item: Any) -> None:
        if type(item) is Delivery and item.reply is not None and not item.reply_taken:
            item.reply.failure(
                ActorStopped(
                    self.path.text, describe(item.message), "actor stopped before handling it"
                )
            )
        elif isinstance(item, StopActor) and item.done is not None:
            item.done.set()
