"""ZeroMQ transport: one IO thread owns every socket.

Theory of operation
-------------------
ZeroMQ sockets are not thread-safe, so exactly one thread (``coterie-io``) creates, uses and
closes them: a ROUTER bound to the system's address receives, and one DEALER per peer endpoint
sends. Other threads hand the IO thread encoded envelopes through a deque; a self-pipe wakes it,
written only when the deque goes from idle to busy, so a burst of tells costs one syscall.

On each wake the IO thread drains the deque and sends everything queued for one destination as
one frame (envelopes concatenated, up to ``batch_bytes``). Batching is therefore adaptive: an
idle system sends each message at once, a loaded one sends fewer, larger frames, with no timer.

Replies go back over the connection the request came in on: an envelope received on the ROUTER
remembers the peer's routing identity, and answers to it are sent through the ROUTER to that
identity. A node that can reach us but that we cannot reach (behind NAT or a load balancer)
still gets its answers. If the identity is gone (the peer reconnected), the reply falls back to
a DEALER to the address named in the recipient path.

Nothing here blocks a sender: the deque is bounded, every ZeroMQ send is non-blocking and peer
queues are bounded by high-water marks. What cannot be queued is dropped, counted and logged
(rate-limited); asks among the dropped envelopes are failed at once through `on_undeliverable`.
Reconnection is ZeroMQ's own, with a capped back-off.

With a :class:`~actors.security.CurveConfig` every connection is CurveZMQ: the ROUTER is a CURVE
server whose ZAP handler (served on this same IO thread) admits only allowed public keys, and
each DEALER is a CURVE client that knows the public key of the node it dials. Refused peers
are logged (rate-limited) with their address and key and counted as ``refused_<reason>``;
frames from admitted peers carry the peer's key, which drop logs name. A peer that refuses one
of our DEALERs is logged and counted too (``rejected_by_peer``). A send to an address whose
public key we do not know is dropped (``dropped_no_server_key``) rather than dialled.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import zmq

from actors.security import ZAP_DOMAIN, CurveConfig, DialWatch, HandshakeWatch, ZapHandler
from actors.wire import Envelope, FrameError, decode_frame, encode_frame

log = structlog.get_logger("coterie.transport")

# (endpoint "host:port", route identity or None, encoded envelope, correlation of our own ask)
OutItem = tuple[str, bytes | None, bytes, int]


@dataclass(frozen=True)
class TransportConfig:
    max_frame_bytes: int = 64 * 1024 * 1024  # inbound frames above this are dropped, counted
    batch_bytes: int = 256 * 1024  # outbound frames are cut at about this size
    outbox_limit: int = 200_000  # envelopes waiting for the IO thread, all peers together
    peer_hwm_frames: int = 1_000  # frames ZeroMQ may queue per peer before sends drop
    reconnect_ms: int = 100
    reconnect_max_ms: int = 2_000


class Counters:
    """Monotonic counters, written by one thread (mostly the IO thread), read by any."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def inc(self, name: str, amount: int = 1) -> None:
        self._values[name] = self._values.get(name, 0) + amount

    def get(self, name: str) -> int:
        return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(self._values)


class RateLimitedLog:
    """Log `event` at most once per `interval` per key, with how many were suppressed.

    A flood of bad frames or dead letters must leave a trace in the log without becoming the
    log: the first occurrence is logged at once, repeats are counted and summarised.
    """

    def __init__(self, event: str, interval: float = 5.0) -> None:
        self._event = event
        self._interval = interval
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def emit(self, reason: str, subject: str, **fields: object) -> None:
        now = time.monotonic()
        key = (reason, subject)
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last >= self._interval:
            if len(self._last) > 10_000:  # a flood from many peers must not grow this forever
                self._last.clear()
            self._last[key] = (now, 0)
            log.warning(
                self._event,
                reason=reason,
                subject=subject,
                suppressed_since_last=suppressed,
                **fields,
            )
        else:
            self._last[key] = (last, suppressed + 1)


class Transport:
    def __init__(
        self,
        host: str,
        port: int,
        cluster_id: str,
        deliver: Callable[[Envelope, bytes | None], None],
        on_undeliverable: Callable[[list[int], str], None],
        config: TransportConfig | None = None,
        curve: CurveConfig | None = None,
    ) -> None:
        self.config = config or TransportConfig()
        self.curve = curve
        self.counters = Counters()
        self._host = host
        self._requested_port = port
        self._cluster_id = cluster_id
        self._deliver = deliver
        self._on_undeliverable = on_undeliverable
        self._outbox: deque[OutItem] = deque()
        self._wake_pending = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._running = False
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._drops = RateLimitedLog("dropped input")
        self._refusals = RateLimitedLog("peer refused")
        self._rejections = RateLimitedLog("refused by peer")
        self._zap: ZapHandler | None = None
        self._watch: HandshakeWatch | None = None
        self.port: int | None = None
        self._thread = threading.Thread(target=self._run, name="coterie-io", daemon=True)

    # ------------------------------------------------------------------ any thread

    def start(self, timeout: float = 10.0) -> int:
        self._running = True
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("transport IO thread did not start")
        if self._start_error is not None:
            raise self._start_error
        assert self.port is not None
        return self.port

    def send(self, endpoint: str, route: bytes | None, data: bytes, correlation: int = 0) -> None:
        """Queue one encoded envelope for `endpoint`; never blocks."""
        if not self._running:
            self.counters.inc("dropped_shutdown")
            if correlation:
                self._on_undeliverable([correlation], "the actor system is shut down")
            return
        if len(self._outbox) >= self.config.outbox_limit:
            self.counters.inc("dropped_outbox_full")
            self._drops.emit("outbox_full", endpoint, detail="outbound queue at its limit")
            if correlation:
                self._on_undeliverable([correlation], "outbound queue full")
            return
        self._outbox.append((endpoint, route, data, correlation))
        if not self._wake_pending:
            self._wake_pending = True
            # A full pipe already holds enough wake-ups.
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\x01")

    def stop(self, timeout: float = 5.0) -> None:
        if not self._running:
            return
        self._running = False
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\x00")
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ------------------------------------------------------------------ IO thread

    def _run(self) -> None:
        context = zmq.Context()
        self._dealers: dict[str, Any] = {}
        self._dealer_endpoints: dict[Any, str] = {}
        self._dial_watches: dict[Any, DialWatch] = {}
        try:
            router, endpoint = self._open(context)
        except BaseException as exc:
            self._start_error = exc
            context.term()
            self._ready.set()
            return
        self._ready.set()
        if self.curve is not None:
            log.info(
                "transport listening",
                endpoint=endpoint,
                curve=True,
                public_key=self.curve.public_key.decode("ascii"),
                allowed_keys=len(self.curve.allowed_keys),
            )
        else:
            log.info("transport listening", endpoint=endpoint, curve=False)
        try:
            self._loop()
        except Exception:
            log.exception("transport IO thread crashed")
            raise
        finally:
            self._close_security()
            for dial_watch in self._dial_watches.values():
                dial_watch.close()
            for sock in self._dealers.values():
                sock.close(0)
            router.close(0)
            context.term()
            log.info("transport stopped", **self.counters.snapshot())

    def _open(self, context: Any) -> tuple[Any, str]:
        """Bind the ROUTER (and, with CURVE, the ZAP handler and handshake watch); on failure
        close whatever was opened and raise."""
        router: Any = None
        try:
            if self.curve is not None:
                # Bound before the ROUTER: with no handler listening libzmq admits every key.
                self._zap = ZapHandler(context, self.curve.allowed_keys, self._refused)
            router = context.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.setsockopt(zmq.SNDHWM, self.config.peer_hwm_frames)
            router.setsockopt(zmq.RCVHWM, self.config.peer_hwm_frames)
            # ZeroMQ's own hard cap, far above ours: a peer sending more is disconnected
            # before the frame is ever buffered; below it we drop and count ourselves.
            router.setsockopt(zmq.MAXMSGSIZE, self.config.max_frame_bytes * 4)
            bind_host = f"[{self._host}]" if ":" in self._host else self._host
            if ":" in self._host:
                router.setsockopt(zmq.IPV6, 1)
            if self.curve is not None:
                router.setsockopt(zmq.CURVE_SERVER, 1)
                router.setsockopt(zmq.CURVE_SECRETKEY, self.curve.secret_key)
                router.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.public_key)
                router.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
                self._watch = HandshakeWatch(router, self._refused)
            port = self._requested_port
            router.bind(f"tcp://{bind_host}:{port if port else '*'}")
            endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
            self.port = int(endpoint.rsplit(":", 1)[1])
            self._router = router
            self._poller = zmq.Poller()
            self._poller.register(router, zmq.POLLIN)
            self._poller.register(self._wake_r, zmq.POLLIN)
            if self._zap is not None:
                self._poller.register(self._zap.socket, zmq.POLLIN)
            if self._watch is not None:
                self._poller.register(self._watch.socket, zmq.POLLIN)
        except BaseException:
            self._close_security()
            if router is not None:
                router.close(0)
            raise
        return router, endpoint

    def _close_security(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._zap is not None:
            self._zap.close()
            self._zap = None

    def _refused(self, reason: str, peer: str, public_key: str) -> None:
        """A peer failed authentication: count it and log who it was (IO thread)."""
        self.counters.inc("refused_peers")
        self.counters.inc(f"refused_{reason}")
        subject = public_key if public_key != "-" else peer
        self._refusals.emit(reason, subject, address=peer, public_key=public_key)

    def _rejected(self, endpoint: str, reason: str) -> None:
        """A peer we dial refused our handshake (IO thread)."""
        self.counters.inc("rejected_by_peer")
        self._rejections.emit(reason, endpoint)

    def _loop(self) -> None:
        poller = self._poller
        router = self._router
        zap = self._zap.socket if self._zap is not None else None
        watch = self._watch.socket if self._watch is not None else None
        while self._running:
            timeout = 0 if self._outbox else 1000
            for sock, _event in poller.poll(timeout):
                if sock is router:
                    self._drain_router()
                elif sock == self._wake_r:
                    self._drain_wakeups()
                elif sock is zap and self._zap is not None:
                    self._zap.drain()
                elif sock is watch and self._watch is not None:
                    self._watch.drain()
                elif sock in self._dial_watches:
                    self._dial_watches[sock].drain()
                else:
                    self._drain_dealer(sock)
            if self._outbox:
                self._flush()

    def _drain_wakeups(self) -> None:
        # One read: senders write at most one byte per idle-to-busy transition, and anything
        # left over just wakes the loop once more.
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)

    def _drain_router(self) -> None:
        router = self._router
        # Bounded so outbound traffic is never starved; EVENTS is checked instead of reading
        # until zmq.Again because raising that exception costs more than the check.
        for _ in range(1000):
            if not router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            parts = router.recv_multipart(zmq.NOBLOCK, copy=False)
            if len(parts) != 2:
                self.counters.inc("dropped_malformed")
                self._drops.emit("malformed", _peer(parts[-1]), detail=f"{len(parts)} parts")
                continue
            self._on_frame(parts[1], parts[0].bytes)

    def _drain_dealer(self, sock: Any) -> None:
        for _ in range(1000):
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            if len(parts) != 1:
                self.counters.inc("dropped_malformed")
                peer = self._dealer_endpoints.get(sock, "?")
                self._drops.emit("malformed", peer, detail=f"{len(parts)} parts")
                continue
            self._on_frame(parts[0], None)

    def _on_frame(self, frame: Any, route: bytes | None) -> None:
        counters = self.counters
        counters.inc("frames_in")
        size = len(frame)
        if size > self.config.max_frame_bytes:
            counters.inc("dropped_oversized")
            self._drops.emit("oversized", _peer(frame), detail=f"{size} bytes")
            return
        try:
            envelopes, errors = decode_frame(frame.buffer, self._cluster_id)
        except FrameError as exc:
            counters.inc(f"dropped_{exc.reason}")
            self._drops.emit(exc.reason, _peer(frame), detail=exc.detail)
            return
        for exc in errors:
            counters.inc(f"dropped_{exc.reason}")
            self._drops.emit(exc.reason, _peer(frame), detail=exc.detail)
        deliver = self._deliver
        for envelope in envelopes:
            try:
                deliver(envelope, route)
            except FrameError as exc:
                counters.inc(f"dropped_{exc.reason}")
                self._drops.emit(exc.reason, _peer(frame), detail=exc.detail)
            except Exception:
                counters.inc("dropped_internal_error")
                log.exception("delivering an envelope failed", tag=envelope.tag)
        counters.inc("envelopes_in", len(envelopes))

    def _flush(self) -> None:
        self._wake_pending = False
        outbox = self._outbox
        if len(outbox) == 1:  # the idle case (an ask, a reply): no grouping needed
            item = outbox.popleft()
            self._send_frame_safely(item[0], item[1], [item])
            return
        groups: dict[tuple[str, bytes | None], list[OutItem]] = {}
        # Bounded per round: receiving must not starve behind a producer that never pauses.
        for _ in range(min(len(outbox), 20_000)):
            item = outbox.popleft()
            key = (item[0], item[1])
            group = groups.get(key)
            if group is None:
                groups[key] = [item]
            else:
                group.append(item)
        limit = self.config.batch_bytes
        for (endpoint, route), items in groups.items():
            start, size = 0, 0
            for i, item in enumerate(items):
                size += len(item[2])
                if size >= limit:
                    self._send_frame_safely(endpoint, route, items[start : i + 1])
                    start, size = i + 1, 0
            if start < len(items):
                self._send_frame_safely(endpoint, route, items[start:])

    def _send_frame_safely(self, endpoint: str, route: bytes | None, items: list[OutItem]) -> None:
        # One bad destination must never take the IO thread, and with it the node, down.
        try:
            self._send_frame(endpoint, route, items)
        except Exception as exc:
            self.counters.inc("dropped_send_error", len(items))
            log.error("sending a frame failed", endpoint=endpoint, error=repr(exc))
            asks = [item[3] for item in items if item[3]]
            if asks:
                self._on_undeliverable(asks, f"send failed: {exc!r}")

    def _send_frame(self, endpoint: str, route: bytes | None, items: list[OutItem]) -> None:
        frame = encode_frame([item[2] for item in items])
        if route is not None:
            try:
                self._router.send_multipart([route, frame], zmq.NOBLOCK)
                self._sent(items)
                return
            except zmq.Again:
                self._undeliverable(endpoint, items, "peer_queue_full", "peer queue full")
                return
            except zmq.ZMQError as exc:
                if exc.errno != errno.EHOSTUNREACH:
                    raise
                # The peer's connection is gone; its address may still be reachable directly.
                self.counters.inc("route_fallbacks")
                if not endpoint:
                    self._undeliverable("?", items, "unroutable", "no connection and no address")
                    return
        dealer = self._dealers.get(endpoint)
        if dealer is None:
            if self.curve is not None and self.curve.server_key(endpoint) is None:
                # Dialling a node whose key we do not know would let anyone there pose as it.
                self._undeliverable(
                    endpoint, items, "no_server_key", "no CURVE public key known for this peer"
                )
                return
            dealer = self._connect(endpoint)
        try:
            dealer.send(frame, zmq.NOBLOCK)
            self._sent(items)
        except zmq.Again:
            self._undeliverable(
                endpoint, items, "peer_queue_full", "peer queue full (peer down or slow)"
            )

    def _sent(self, items: list[OutItem]) -> None:
        self.counters.inc("frames_out")
        self.counters.inc("envelopes_out", len(items))

    def _undeliverable(self, endpoint: str, items: list[OutItem], reason: str, detail: str) -> None:
        self.counters.inc(f"dropped_{reason}", len(items))
        self._drops.emit(reason, endpoint, detail=detail)
        asks = [item[3] for item in items if item[3]]
        if asks:
            self._on_undeliverable(asks, f"{detail}: {endpoint}")

    def _connect(self, endpoint: str) -> Any:
        sock = self._router.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.config.peer_hwm_frames)
        sock.setsockopt(zmq.RCVHWM, self.config.peer_hwm_frames)
        sock.setsockopt(zmq.RECONNECT_IVL, self.config.reconnect_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, self.config.reconnect_max_ms)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_frame_bytes * 4)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            sock.close(0)
            raise ValueError(f"not a host:port endpoint: {endpoint!r}")
        if host.startswith("["):
            sock.setsockopt(zmq.IPV6, 1)
        if self.curve is not None:
            server_key = self.curve.server_key(endpoint)
            assert server_key is not None  # checked by the caller
            sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.public_key)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve.secret_key)
            watch = DialWatch(sock, endpoint, self._rejected)
            self._dial_watches[watch.socket] = watch
            self._poller.register(watch.socket, zmq.POLLIN)
        sock.connect(f"tcp://{host}:{port}")
        self._dealers[endpoint] = sock
        self._dealer_endpoints[sock] = endpoint
        self._poller.register(sock, zmq.POLLIN)
        log.info("connecting to peer", endpoint=endpoint)
        return sock


def _peer(frame: Any) -> str:
    """Who sent `frame`: its address and, on a CURVE connection, its public key."""
    try:
        address = str(frame.get("Peer-Address"))
    except Exception:  # not every transport reports it
        address = "unknown"
    try:
        key = frame.get("User-Id")  # set by our ZAP handler to the peer's public key
    except Exception:  # no ZAP on this connection
        key = ""
    return f"{address} key={key}" if key else address
