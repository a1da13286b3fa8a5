"""Location-transparent actor references and ask futures.

An :class:`ActorRef` is a path plus the system that routes it: `tell` and `ask` are the same
calls for an actor in this process and one across the network. Refs compare and hash by path,
so a ref taken before a restart still reaches the restarted actor.

Where ask callbacks run
-----------------------
``ref.ask()`` returns an :class:`AskFuture`. Threads blocked in ``result()`` wake directly.
Callbacks added with ``add_done_callback`` never run on the thread that happened to settle the
future (the replying actor, the transport IO thread or the scheduler): they run in settle order
on the system's single ``coterie-callbacks`` thread, so a slow callback cannot stall the network
or another actor, and callbacks never race each other. Inside an actor, use
``ctx.ask(..., then=...)``, which runs the continuation on the actor's own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from actors.paths import ActorPath
    from actors.system import ActorSystem

log = structlog.get_logger("coterie.ref")

# The ref of the actor whose thread this is, so tells from inside an actor carry it as sender.
_current = threading.local()


def current_actor() -> ActorRef | None:
    return getattr(_current, "ref", None)


def set_current_actor(ref: ActorRef | None) -> None:
    _current.ref = ref


class ActorRef:
    __slots__ = ("_local", "_route", "_system", "path")

    def __init__(
        self, system: ActorSystem, path: ActorPath, route: bytes | None = None, local: bool = False
    ) -> None:
        self._system = system
        self.path = path
        self._route = route  # the connection a remote sender's message came in on
        self._local = local

    @property
    def is_local(self) -> bool:
        return self._local

    def tell(self, message: Any, sender: ActorRef | None = None) -> None:
        """Send without waiting. From inside an actor, the sender defaults to that actor."""
        self._system._tell(self, message, sender)

    def ask(self, message: Any, timeout: float = 5.0) -> AskFuture:
        """Send and return a future of the reply; it fails with AskTimeout naming this path
        and the message type if no reply comes within `timeout` seconds."""
        return self._system._ask(self, message, timeout)

    def _deliver_continuation(
        self, then: Callable[[Any, BaseException | None], Any], future: Future[Any]
    ) -> None:
        self._system._tell(self, Continuation(then, future), None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.path.text == self.path.text

    def __hash__(self) -> int:
        return hash(self.path.text)

    def __repr__(self) -> str:
        return f"ActorRef({self.path.text})"


@dataclass(frozen=True, slots=True)
class Continuation:
    """The result of a ctx.ask, brought back to the asking actor's thread."""

    then: Callable[[Any, BaseException | None], Any]
    future: Future[Any]


class AskFuture(Future[Any]):
    """A concurrent.futures.Future whose callbacks run on the system's callback thread."""

    def __init__(self, callbacks: CallbackThread) -> None:
        super().__init__()
        self._callbacks = callbacks

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        callbacks = self._callbacks
        super().add_done_callback(lambda future: callbacks.submit(fn, future))

    def _on_settled(self, fn: Callable[[Future[Any]], object]) -> None:
        """Runtime-internal: a quick callback run inline by whoever settles the future."""
        super().add_done_callback(fn)


def settle(future: Future[Any], value: Any = None, error: BaseException | None = None) -> bool:
    """Complete `future` unless a reply and a timeout raced and the other one won."""
    try:
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
        return True
    except InvalidStateError:
        return False


class CallbackThread:
    """Runs future callbacks in order on one dedicated thread, started on first use."""

    def __init__(self, name: str = "coterie-callbacks") -> None:
        self._queue: SimpleQueue[tuple[Callable[[Future[Any]], object], Future[Any]] | None]
        self._queue = SimpleQueue()
        self._name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[Future[Any]], object], future: Future[Any]) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        self._queue.put((fn, future))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future = item
            try:
                fn(future)
            except Exception:
                log.exception("future callback failed", callback=getattr(fn, "__qualname__", fn))

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            if threading.current_thread() is not thread:
                thread.join(timeout)
