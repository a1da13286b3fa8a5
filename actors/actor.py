"""What users write: :class:`Actor`, its :class:`Context`, and :class:`Props` to create it.

An actor is a plain object whose current *behaviour* (a method ``(message, sender) -> reply``)
handles one message at a time on the actor's own thread. ``ctx.become(self.other)`` switches
behaviour for the next message, ``ctx.unbecome()`` goes back; the name of the current behaviour
is always visible (``ctx.behaviour_name``), for logs and tests. A behaviour returns
:data:`UNHANDLED` for messages it does not handle: an asker then gets an immediate
:class:`~actors.errors.UnhandledMessage` naming the message type and the behaviour.

The instance lives inside an :class:`~actors.cell.ActorCell` (a pykka actor) that owns the
mailbox, the path, the children and supervision; a restart replaces the instance and keeps the
cell, so the path, the mailbox and every ref stay valid.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from actors.supervision import OneForOne

if TYPE_CHECKING:
    from actors.cell import ActorCell
    from actors.ref import ActorRef
    from actors.scheduler import Cancellable
    from actors.system import ActorSystem


class _Unhandled:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNHANDLED"


UNHANDLED: Any = _Unhandled()
"""Returned by a behaviour for a message it does not handle."""

Behaviour = Callable[[Any, "ActorRef | None"], Any]


class Actor:
    """Base class of user actors. Override :meth:`receive` (the initial behaviour)."""

    _ctx: Context

    @property
    def ctx(self) -> Context:
        return self._ctx

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        return UNHANDLED

    def supervisor_strategy(self) -> OneForOne:
        """The strategy this actor applies to its children (one object per actor)."""
        return OneForOne()

    def pre_start(self) -> None:
        """Runs on the actor's thread before the first message."""

    def post_stop(self) -> None:
        """Runs on the actor's thread after its children have stopped."""

    def pre_restart(self, reason: BaseException) -> None:
        """Runs on the failed instance before it is replaced. Children are stopped after it."""
        self.post_stop()

    def post_restart(self, reason: BaseException) -> None:
        """Runs on the new instance in place of pre_start."""
        self.pre_start()


class Props:
    """How to create an actor instance: a class (or factory) and its arguments.

    A restart calls the factory again, so the factory must make a fresh, valid instance.
    """

    __slots__ = ("args", "factory", "kwargs")

    def __init__(self, factory: Callable[..., Actor], *args: Any, **kwargs: Any) -> None:
        if not callable(factory):
            raise TypeError(f"Props needs an Actor class or factory, got {factory!r}")
        self.factory = factory
        self.args = args
        self.kwargs = kwargs

    def create(self, ctx: Context) -> Actor:
        factory = self.factory
        if isinstance(factory, type) and issubclass(factory, Actor):
            # The context is set before __init__ runs, so constructors may use self.ctx.
            instance = factory.__new__(factory)
            instance._ctx = ctx
            instance.__init__(*self.args, **self.kwargs)
            return instance
        instance = factory(*self.args, **self.kwargs)
        if not isinstance(instance, Actor):
            raise TypeError(f"actor factory returned {type(instance).__qualname__}, not an Actor")
        instance._ctx = ctx
        return instance

    def __repr__(self) -> str:
        return f"Props({getattr(self.factory, '__qualname__', self.factory)})"


class Context:
    """An actor's view of the runtime. Only use it on the actor's own thread."""

    __slots__ = ("_cell",)

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    @property
    def system(self) -> ActorSystem:
        return self._cell.system

    @property
    def self_ref(self) -> ActorRef:
        return self._cell.ref

    @property
    def path(self) -> str:
        return self._cell.path.text

    @property
    def parent(self) -> ActorRef | None:
        parent = self._cell.parent
        return None if parent is None else parent.ref

    @property
    def children(self) -> dict[str, ActorRef]:
        return {name: cell.ref for name, cell in self._cell.children.items()}

    @property
    def log(self) -> Any:
        """A structlog logger with this actor's path bound."""
        return self._cell.log

    @property
    def sender(self) -> ActorRef | None:
        current = self._cell.current
        return None if current is None else current.sender

    # -- children

    def spawn(self, props: Props | type[Actor], name: str) -> ActorRef:
        if not isinstance(props, Props):
            props = Props(props)
        return self._cell.spawn_child(props, name)

    def stop(self, child: ActorRef) -> None:
        """Stop a child (and its children) without waiting."""
        self._cell.stop_child_async(child)

    # -- behaviour

    def become(self, behaviour: Behaviour, *, discard_old: bool = True) -> None:
        self._cell.become(behaviour, discard_old)

    def unbecome(self) -> None:
        self._cell.unbecome()

    @property
    def behaviour_name(self) -> str:
        return self._cell.behaviour_name

    def stash(self) -> None:
        """Keep the current message for later (see unstash_all)."""
        self._cell.stash_current()

    def unstash_all(self) -> None:
        """Handle the stashed messages, oldest first, before anything newer in the mailbox."""
        self._cell.unstash_all()

    # -- replies, asks and timers

    @property
    def asked(self) -> bool:
        """Whether the message being handled is an ask (so someone waits for an answer)."""
        current = self._cell.current
        return current is not None and current.reply is not None and not current.reply_taken

    def deferred_reply(self) -> Reply:
        """Take over answering the current ask; the behaviour's return value is then ignored.

        Returns a handle to complete later, from this actor's thread or any other.
        """
        return self._cell.take_reply()

    def ask(
        self,
        target: ActorRef,
        message: Any,
        timeout: float,
        then: Callable[[Any, BaseException | None], Any],
    ) -> Future[Any]:
        """Ask without blocking; `then(result, error)` runs later on *this actor's* thread.

        This is how an actor waits for an answer: never block on a future inside an actor
        (Copycat completed futures on whatever thread happened to finish them).
        """
        future = target.ask(message, timeout=timeout)
        self_ref = self._cell.ref
        future.add_done_callback(lambda f: self_ref._deliver_continuation(then, f))
        return future

    def schedule_once(self, delay: float, message: Any) -> Cancellable:
        """Tell this actor `message` after `delay` seconds."""
        self_ref = self._cell.ref
        return self._cell.system.scheduler.schedule_once(delay, lambda: self_ref.tell(message))

    def schedule_repeatedly(self, interval: float, message: Any) -> Cancellable:
        """Tell this actor `message` every `interval` seconds until cancelled or stopped."""
        self_ref = self._cell.ref
        return self._cell.system.scheduler.schedule_repeatedly(
            interval, interval, lambda: self_ref.tell(message)
        )


class Reply:
    """Where the answer to an ask goes: a local future or a remote asker."""

    __slots__ = ()

    def success(self, value: Any) -> None:
        raise NotImplementedError

    def failure(self, error: BaseException) -> None:
        raise NotImplementedError


def describe(message: Any) -> str:
    """A message's type as logs and errors show it: its wire tag, or its class name."""
    return getattr(type(message), "__coterie_tag__", None) or type(message).__qualname__
