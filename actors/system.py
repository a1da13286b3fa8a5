"""The actor system: spawning, lookup by path, routing of tells and asks, shutdown.

A system is a registry of cells keyed by path (never by instance), a scheduler, a callback
thread for ask futures and, when it has a host, a ZeroMQ transport. It decides for every send
whether the target is local (straight into the cell's mailbox, no serialisation) or remote
(encoded once on the caller's thread, handed to the IO thread).

Asks to a path with no actor, and asks whose message a peer cannot decode, fail at once with an
error naming the path and message type; only a silent peer makes an ask wait for its timeout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog

from actors.actor import Actor, Props, Reply, describe
from actors.asks import PendingAsks
from actors.cell import ActorCell, Delivery, StopActor
from actors.errors import (
    FAILURE_KINDS,
    ActorError,
    ActorNameTaken,
    ActorNotFound,
    AskError,
    SystemShutDown,
    Undeliverable,
    UnhandledMessage,
)
from actors.paths import ANY_SYSTEM, ActorPath, Address, InvalidActorPath
from actors.ref import ActorRef, AskFuture, CallbackThread, current_actor, settle
from actors.scheduler import Scheduler
from actors.security import CurveConfig
from actors.supervision import OneForOne
from actors.transport import Counters, RateLimitedLog, Transport, TransportConfig
from actors.wire import (
    FAILURE_TAG,
    REPLY_TAG,
    Envelope,
    FrameError,
    decode_payload,
    decode_value,
    encode_envelope,
    encode_payload,
    encode_value,
    lookup_tag,
    message_type_of,
)

log = structlog.get_logger("coterie.system")

_LOOPBACK_ALIASES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class SpawnChild:
    props: Props
    name: str


class Guardian(Actor):
    """The parent of every top-level actor: restarts them within a budget, then stops them."""

    def __init__(self, max_restarts: int, within_seconds: float) -> None:
        self._strategy = OneForOne(max_restarts, within_seconds)

    def supervisor_strategy(self) -> OneForOne:
        return self._strategy

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if isinstance(message, SpawnChild):
            try:
                return self.ctx.spawn(message.props, message.name)
            except (ActorNameTaken, InvalidActorPath) as exc:
                return exc  # raised in the spawning thread, not a failure of the guardian
        return super().receive(message, sender)


class LocalReply(Reply):
    __slots__ = ("asks", "correlation")

    def __init__(self, asks: PendingAsks, correlation: int) -> None:
        self.asks = asks
        self.correlation = correlation

    def success(self, value: Any) -> None:
        entry = self.asks.pop(self.correlation)
        if entry is not None:  # else it already timed out
            settle(entry[0], value)

    def failure(self, error: BaseException) -> None:
        entry = self.asks.pop(self.correlation)
        if entry is not None:
            settle(entry[0], error=error)


class RemoteReply(Reply):
    """Answers a remote ask over the connection the ask came in on."""

    __slots__ = ("asker", "correlation", "route", "system", "target")

    def __init__(
        self, system: ActorSystem, asker: str, route: bytes | None, correlation: int, target: str
    ) -> None:
        self.system = system
        self.asker = asker
        self.route = route
        self.correlation = correlation
        self.target = target

    def success(self, value: Any) -> None:
        try:
            payload = encode_value(value)
        except (TypeError, ValueError) as exc:
            log.error("ask reply cannot be encoded", target=self.target, error=str(exc))
            self.failure(ActorError(f"reply of type {type(value).__qualname__} cannot be sent"))
            return
        self.system._send_raw(
            self.asker, self.route, REPLY_TAG, self.target, self.correlation, payload
        )

    def failure(self, error: BaseException) -> None:
        kind = error.kind if isinstance(error, AskError) else "failed"
        detail = error.detail if isinstance(error, AskError) else f"{type(error).__name__}: {error}"
        payload = encode_value([kind, detail])
        self.system._send_raw(
            self.asker, self.route, FAILURE_TAG, self.target, self.correlation, payload
        )


class ActorSystem:
    """An actor system. With `host`, it listens on `host:port` (0 picks a free port).

    With `curve`, every connection is authenticated and encrypted (see actors/security.py).
    """

    def __init__(
        self,
        name: str,
        *,
        host: str | None = None,
        port: int = 0,
        advertised_host: str | None = None,
        advertised_port: int | None = None,
        cluster_id: str = "coterie",
        transport_config: TransportConfig | None = None,
        curve: CurveConfig | None = None,
        guardian_restarts: tuple[int, float] = (10, 60.0),
    ) -> None:
        Address(name)  # validates the name with the path grammar
        if name == ANY_SYSTEM:
            raise ValueError(f"{ANY_SYSTEM!r} is reserved: it addresses any system")
        self.name = name
        self.cluster_id = cluster_id
        self.counters = Counters()
        self.scheduler = Scheduler()
        self._callbacks = CallbackThread()
        self._cells: dict[str, ActorCell] = {}
        self._registry_lock = threading.Lock()
        self._asks = PendingAsks()
        self._paths: dict[str, ActorPath] = {}
        self._dead_letters = RateLimitedLog("dead letter")
        self._shut_down = False
        self._transport: Transport | None = None
        self._local_endpoints: set[str] = set()
        if host is not None:
            self._transport = Transport(
                host,
                port,
                cluster_id,
                self._deliver_remote,
                self._fail_asks,
                transport_config,
                curve,
            )
            bound = self._transport.start()
            # What peers are told to connect to may differ from what we bind (NAT, port
            # forwarding, 0.0.0.0); both name this system.
            public_host = advertised_host or ("127.0.0.1" if host == "0.0.0.0" else host)
            public_port = advertised_port or bound
            self.address = Address(name, public_host, public_port)
            self._local_endpoints = {f"{public_host}:{public_port}", f"{host}:{bound}"}
            if host in ("0.0.0.0", *_LOOPBACK_ALIASES):
                self._local_endpoints.update(f"{alias}:{bound}" for alias in _LOOPBACK_ALIASES)
        else:
            self.address = Address(name)
        self.log = log.bind(system=self.address.text)
        asks = self._asks
        self._ask_sweeper = self.scheduler.schedule_repeatedly(
            asks.granularity, asks.granularity, lambda: asks.expire_due(time.monotonic())
        )
        self._temp = ActorPath(self.address, ("temp", "ask"))
        guardian_path = ActorPath(self.address, ("user",))
        max_restarts, within = guardian_restarts
        self._guardian = ActorCell(self, guardian_path, Props(Guardian, max_restarts, within), None)
        self._register(self._guardian)
        self._guardian.launch()
        self.log.info("actor system started")

    # ------------------------------------------------------------------ public API

    def spawn(self, props: Props | type[Actor], name: str, timeout: float = 10.0) -> ActorRef:
        """Start a top-level actor at /user/<name> and return its ref."""
        if not isinstance(props, Props):
            props = Props(props)
        result = self._guardian.ref.ask(SpawnChild(props, name), timeout).result()
        if isinstance(result, Exception):
            raise result
        return result

    def ref(self, path: str | ActorPath) -> ActorRef:
        """A ref for any path, local or remote; the actor need not exist (yet)."""
        parsed = ActorPath.parse(path) if isinstance(path, str) else path
        return ActorRef(self, parsed, local=self._is_local(parsed))

    def path_of(self, *elements: str) -> ActorPath:
        """This system's path for /user/a/b given ("a", "b")."""
        return ActorPath(self.address, ("user", *elements))

    def stop(self, ref: ActorRef, timeout: float = 10.0) -> bool:
        """Stop a local actor and its children; waits for them unless called from that actor."""
        cell = self._cells.get(ref.path.key) if ref.is_local else None
        if cell is None:
            return False
        if threading.current_thread() is cell.thread:
            cell.enqueue(StopActor())
            return True
        done = threading.Event()
        if not cell.enqueue(StopActor(done)):
            return True
        stopped = done.wait(timeout)
        if stopped and cell.thread is not None:
            cell.thread.join(timeout)
        return stopped

    def is_alive(self, ref: ActorRef) -> bool:
        return ref.is_local and ref.path.key in self._cells

    def stats(self) -> dict[str, int]:
        merged = self.counters.snapshot()
        if self._transport is not None:
            merged.update(
                {f"transport_{k}": v for k, v in self._transport.counters.snapshot().items()}
            )
        return merged

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every actor (children first), then the scheduler, transport and callbacks."""
        if self._shut_down:
            return
        self._shut_down = True
        self.stop(self._guardian.ref, timeout)
        self.scheduler.shutdown(timeout)
        if self._transport is not None:
            self._transport.stop(timeout)
        self._asks.fail_all(Undeliverable, "the actor system shut down")
        self._callbacks.close(timeout)
        self.log.info("actor system stopped")

    def __enter__(self) -> ActorSystem:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ registry

    def _register(self, cell: ActorCell) -> None:
        with self._registry_lock:
            if cell.path.key in self._cells:
                raise ActorNameTaken(f"{cell.path.text} already exists")
            self._cells[cell.path.key] = cell

    def _unregister(self, cell: ActorCell) -> None:
        with self._registry_lock:
            if self._cells.get(cell.path.key) is cell:
                del self._cells[cell.path.key]

    def _is_local(self, path: ActorPath) -> bool:
        address = path.address
        if address.system != self.name:
            return False
        endpoint = address.endpoint
        return endpoint is None or self._transport is None or endpoint in self._local_endpoints

    def _parse_cached(self, text: str) -> ActorPath:
        path = self._paths.get(text)
        if path is None:
            try:
                path = ActorPath.parse(text)
            except InvalidActorPath as exc:
                raise FrameError("bad_path", str(exc)) from exc
            if len(self._paths) > 50_000:
                self._paths.clear()
            self._paths[text] = path
        return path

    # ------------------------------------------------------------------ sending

    def _tell(self, ref: ActorRef, message: Any, sender: ActorRef | None) -> None:
        if sender is None:
            sender = current_actor()
        if ref._local:
            cell = self._cells.get(ref.path.key)
            if cell is None or not cell.enqueue(Delivery(message, sender, None)):
                self._dead_letter(ref.path.text, message, sender, "no actor at this path")
            return
        self._send_remote(ref, message, sender, 0)

    def _ask(self, ref: ActorRef, message: Any, timeout: float) -> AskFuture:
        future = AskFuture(self._callbacks)
        target = ref.path.text
        if self._shut_down:
            reason = "the actor system is shut down"
            settle(future, error=Undeliverable(target, describe(message), reason))
            return future
        correlation = self._asks.add(future, target, describe(message), timeout, time.monotonic())
        if ref._local:
            cell = self._cells.get(ref.path.key)
            reply = LocalReply(self._asks, correlation)
            if cell is None or not cell.enqueue(Delivery(message, current_actor(), reply)):
                self._dead_letter(target, message, None, "no actor at this path")
                reply.failure(ActorNotFound(target, describe(message), "no actor at this path"))
            return future
        try:
            self._send_remote(ref, message, current_actor(), correlation)
        except Exception:
            self._asks.pop(correlation)
            raise
        return future

    def _send_remote(
        self, ref: ActorRef, message: Any, sender: ActorRef | None, correlation: int
    ) -> None:
        transport = self._transport
        if transport is None:
            raise ActorError(f"{ref.path.text} is remote but system {self.name!r} has no transport")
        tag = message_type_of(message).tag  # raises TypeError for an unregistered class
        payload = encode_payload(message)
        if sender is not None:
            sender_text = sender.path.text
        else:
            sender_text = self._temp.text if correlation else ""
        data = encode_envelope(
            self.cluster_id, tag, sender_text, ref.path.text, correlation, payload
        )
        endpoint = ref.path.address.endpoint
        assert endpoint is not None
        transport.send(endpoint, ref._route, data, correlation)

    def _send_raw(
        self,
        recipient: str,
        route: bytes | None,
        tag: str,
        sender: str,
        correlation: int,
        payload: bytes,
    ) -> None:
        transport = self._transport
        if transport is None:
            return
        try:
            endpoint = self._parse_cached(recipient).address.endpoint or ""
        except FrameError:
            endpoint = ""
        if not endpoint and route is None:
            self.counters.inc("replies_unroutable")
            return
        data = encode_envelope(self.cluster_id, tag, sender, recipient, correlation, payload)
        transport.send(endpoint, route, data, 0)

    def _fail_asks(self, correlations: list[int], reason: str) -> None:
        self._asks.fail(correlations, Undeliverable, reason)

    def _dead_letter(self, target: str, message: Any, sender: ActorRef | None, reason: str) -> None:
        self.counters.inc("dead_letters")
        sender_text = sender.path.text if sender is not None else "-"
        self._dead_letters.emit(reason, target, message_type=describe(message), sender=sender_text)

    # ------------------------------------------------------------------ receiving (IO thread)

    def _deliver_remote(self, envelope: Envelope, route: bytes | None) -> None:
        tag = envelope.tag
        if tag in (REPLY_TAG, FAILURE_TAG):
            self._complete_ask(envelope)
            return
        recipient = self._parse_cached(envelope.recipient)
        if recipient.address.system not in (self.name, ANY_SYSTEM):
            raise FrameError(
                "wrong_recipient", f"{envelope.recipient} is not in system {self.name}"
            )
        sender = None
        if envelope.sender:
            sender_path = self._parse_cached(envelope.sender)
            sender = ActorRef(self, sender_path, route, self._is_local(sender_path))
        correlation = envelope.correlation
        reply = None
        if correlation:
            reply = RemoteReply(self, envelope.sender, route, correlation, envelope.recipient)
        try:
            message = decode_payload(lookup_tag(tag), envelope.payload)
        except FrameError as exc:
            if reply is not None:
                reply.failure(
                    UnhandledMessage(
                        envelope.recipient,
                        tag,
                        f"the receiving node cannot decode it ({exc.reason})",
                    )
                )
            raise
        cell = self._cells.get(recipient.key)
        if cell is None or not cell.enqueue(Delivery(message, sender, reply)):
            self._dead_letter(envelope.recipient, message, sender, "no actor at this path")
            if reply is not None:
                reply.failure(ActorNotFound(envelope.recipient, tag, "no actor at this path"))

    def _complete_ask(self, envelope: Envelope) -> None:
        entry = self._asks.pop(envelope.correlation)
        if entry is None:
            self.counters.inc("late_replies")  # the ask already timed out, or a duplicate
            return
        future, target, message_type, _timeout = entry
        try:
            value = decode_value(envelope.payload)
        except FrameError:
            settle(future, error=Undeliverable(target, message_type, "the reply did not decode"))
            raise
        if envelope.tag == REPLY_TAG:
            settle(future, value)
            return
        kind, detail = ([*value, None, None])[:2] if isinstance(value, list) else (None, None)
        error_type = FAILURE_KINDS.get(kind) if isinstance(kind, str) else None
        if error_type is None or not isinstance(detail, str):
            settle(future, error=Undeliverable(target, message_type, "malformed failure reply"))
            raise FrameError("bad_payload", "malformed failure reply")
        settle(future, error=error_type(target, message_type, detail))


__all__ = ["ActorSystem", "SystemShutDown"]
