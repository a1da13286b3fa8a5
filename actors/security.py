"""CURVE security for the transport: key files, the keys one system uses, and who may connect.

Theory of operation
-------------------
With a :class:`CurveConfig`, every ZeroMQ connection of a system is authenticated and encrypted
with CurveZMQ. The system's ROUTER is a CURVE *server* with the system's own keypair; each
DEALER it opens to a peer is a CURVE *client* that must know the peer's public key in advance
(``server_keys``, by ``host:port``), so a stranger cannot pose as a node we dial.

Who may connect is decided by :class:`ZapHandler`, a ZAP (ZeroMQ RFC 27) handler that the
transport's IO thread serves itself: libzmq asks it about every CURVE handshake with the
client's public key and address, and it answers 200 only for keys in ``allowed_keys``. Serving
ZAP on the IO thread means no extra thread to leak and counters written by one thread only. It
is bound *before* the ROUTER, because libzmq lets every CURVE client in when no ZAP handler is
listening.

A client that does not speak CURVE at all, or encrypts to a key that is not ours, fails the
handshake before ZAP is asked; :class:`HandshakeWatch` reads the ROUTER's monitor events so
those refusals are logged and counted too, with the peer's address.

Keys are 40-character Z85 strings. A key file holds one key on a line of its own (lines
starting with ``#`` are comments); the ``public-key = "..."``/``secret-key = "..."`` lines of
ZeroMQ certificate files (``zmq.auth``) are read too. A secret key file must not be readable by
group or others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import socket
import stat
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

Z85_KEY_LENGTH = 40
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27: libzmq connects here
ZAP_DOMAIN = b"coterie"

_Z85_CHARS = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_CERT_LINE = re.compile(r'^\s*(public|secret)-key\s*=\s*"(?P<key>[^"]*)"\s*$')
_ZPL_OTHER = re.compile(r'^([a-z][a-z-]*|[\w-]+\s*=\s*"[^"]*")$')


class KeyFileError(ValueError):
    """A key that is missing, unreadable or malformed; the message names the key and the file."""


def is_z85_key(text: str | bytes) -> bool:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return False
    return len(text) == Z85_KEY_LENGTH and all(c in _Z85_CHARS for c in text)


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh (public, secret) CURVE keypair, both Z85."""
    public, secret = zmq.curve_keypair()
    return public, secret


def public_key_of(secret: bytes) -> bytes:
    return zmq.curve_public(secret)


def write_keypair(base: pathlib.Path, *, force: bool = False) -> tuple[pathlib.Path, pathlib.Path]:
    """Write a new keypair to ``<base>.key`` (public, 0644) and ``<base>.key_secret`` (0600).

    The secret file is created with mode 0600 from the start (``O_EXCL``), so there is no
    moment at which another user could read it. Existing files are kept unless `force`.
    """
    public_path = base.with_name(base.name + ".key")
    secret_path = base.with_name(base.name + ".key_secret")
    if not force:
        for path in (public_path, secret_path):
            if path.exists():
                raise KeyFileError(f"{path}: already exists (use --force to replace it)")
    public, secret = generate_keypair()
    _write_private(
        secret_path, b"# coterie CURVE secret key (Z85): keep it private\n" + secret + b"\n"
    )
    public_path.write_bytes(b"# coterie CURVE public key (Z85)\n" + public + b"\n")
    os.chmod(public_path, 0o644)
    return public_path, secret_path


def _write_private(path: pathlib.Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)  # the umask may have taken bits away, never added: make it exact


def read_key_file(path: pathlib.Path, key_name: str, *, secret: bool) -> bytes:
    """The Z85 key in `path`; any problem raises :class:`KeyFileError` naming `key_name`."""
    where = f"{key_name} ({path})"
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise KeyFileError(f"{where}: no such file (make one with `coterie keygen`)") from exc
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{where}: not a key file (not ASCII text)") from exc
    except OSError as exc:
        raise KeyFileError(f"{where}: cannot read: {exc.strerror or exc}") from exc
    if secret and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(info.st_mode)
        raise KeyFileError(
            f"{where}: a secret key must not be readable by group or others "
            f"(mode {mode:04o}; chmod 600 it)"
        )
    keys = []
    for line in text.splitlines():
        stripped = line.strip()
        if not secret and stripped.startswith("#") and "secret key" in stripped:
            # Mistaking a .key_secret for a .key would hand a secret to every peer's config.
            raise KeyFileError(f"{where}: holds a secret key, not a public one")
        if not stripped or stripped.startswith("#"):
            continue
        match = _CERT_LINE.match(stripped)
        if match:
            if (match.group(1) == "secret") != secret:
                continue  # a certificate file holds both; take the kind asked for
            stripped = match.group("key")
        elif not is_z85_key(stripped) and _ZPL_OTHER.match(stripped):
            continue  # other certificate content: section names, quoted metadata
        keys.append(stripped)
    kind = "secret" if secret else "public"
    if not keys:
        raise KeyFileError(f"{where}: no {kind} key in the file")
    if len(keys) > 1:
        raise KeyFileError(f"{where}: {len(keys)} keys in the file, expected one")
    key = keys[0]
    if not is_z85_key(key):
        raise KeyFileError(
            f"{where}: not a {kind} key (expected {Z85_KEY_LENGTH} Z85 characters, "
            f"got {len(key)} characters)"
        )
    return key.encode("ascii")


@dataclasses.dataclass(frozen=True)
class CurveConfig:
    """The CURVE keys of one actor system.

    `allowed_keys` may connect to this system; `server_keys` are the public keys of the systems
    this one dials, by the ``host:port`` it dials. The system's own public key is always
    allowed (a system may send to itself by address).
    """

    secret_key: bytes
    allowed_keys: frozenset[bytes]
    server_keys: Mapping[str, bytes]
    public_key: bytes = b""

    def __post_init__(self) -> None:
        if not is_z85_key(self.secret_key):
            raise KeyFileError("secret_key: not a 40-character Z85 key")
        derived = public_key_of(self.secret_key)
        if self.public_key and self.public_key != derived:
            raise KeyFileError("public_key: does not belong to the secret key")
        object.__setattr__(self, "public_key", derived)
        for key in self.allowed_keys:
            if not is_z85_key(key):
                raise KeyFileError(f"allowed_keys: {key!r} is not a 40-character Z85 key")
        for endpoint, key in self.server_keys.items():
            if not is_z85_key(key):
                raise KeyFileError(f"server_keys[{endpoint}]: not a 40-character Z85 key")
        object.__setattr__(self, "allowed_keys", frozenset(self.allowed_keys) | {derived})
        object.__setattr__(self, "server_keys", dict(self.server_keys))

    def server_key(self, endpoint: str) -> bytes | None:
        return self.server_keys.get(endpoint)


# ---------------------------------------------------------------------------- IO thread helpers

Refusal = Callable[[str, str, str], None]  # (reason, peer address, peer public key or "-")


class ZapHandler:
    """Answers libzmq's ZAP requests: 200 for an allowed CURVE key, 400 for anything else.

    Owned by the transport's IO thread; `drain` is called when its socket is readable. The user
    id of an accepted connection is the client's Z85 public key, so every frame received on it
    carries the key (``frame.get("User-Id")``) for logs.
    """

    def __init__(
        self, context: zmq.Context[Any], allowed: frozenset[bytes], refused: Refusal
    ) -> None:
        self._allowed = allowed
        self._refused = refused
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)

    def drain(self) -> None:
        sock = self.socket
        for _ in range(100):
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            request = sock.recv_multipart(zmq.NOBLOCK)
            try:
                answer = self._answer(request)
            except Exception:  # never let a bad request take the IO thread down
                self._refused("zap_error", "unknown", "-")
                answer = [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"", b"", b""]
            sock.send_multipart(answer, zmq.NOBLOCK)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6:  # cannot happen with libzmq; answer anyway so REP stays in step
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        peer = address.decode("ascii", "replace")
        if version != b"1.0":
            return [b"1.0", request_id, b"500", b"unsupported ZAP version", b"", b""]
        if mechanism != b"CURVE" or domain != ZAP_DOMAIN or len(credentials) != 1:
            self._refused("not_curve", peer, "-")
            return [version, request_id, b"400", b"CURVE required", b"", b""]
        public = z85.encode(credentials[0])
        if public not in self._allowed:
            self._refused("key_not_allowed", peer, public.decode("ascii"))
            return [version, request_id, b"400", b"key not allowed", b"", b""]
        return [version, request_id, b"200", b"OK", public, b""]

    def close(self) -> None:
        self.socket.close(0)


class HandshakeWatch:
    """Turns the ROUTER's monitor events into refusals for handshakes that never reach ZAP.

    libzmq reports a failed handshake without saying which connection it was; it reports the
    disconnect of that connection, by file descriptor, right after it. So the watch remembers
    each accepted connection's peer address by descriptor and names it on the disconnect that
    follows a failure.
    """

    _EVENTS = (
        zmq.EVENT_ACCEPTED
        | zmq.EVENT_DISCONNECTED
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    )

    def __init__(self, router: Any, refused: Refusal) -> None:
        self._refused = refused
        self._peers: dict[int, str] = {}
        self._failure: str | None = None
        self.socket = router.get_monitor_socket(self._EVENTS)
        self._router = router

    def drain(self) -> None:
        for event in _pending_events(self.socket):
            self._on_event(event["event"], event["value"])

    def _on_event(self, kind: int, value: int) -> None:
        if kind == zmq.EVENT_ACCEPTED:
            if len(self._peers) > 10_000:  # descriptors whose disconnect we never saw
                self._peers.clear()
            self._peers[value] = _peer_of_fd(value)
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            self._failure = _protocol_reason(value)
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self._failure = "handshake_failed"
        elif kind == zmq.EVENT_DISCONNECTED:
            peer = self._peers.pop(value, "unknown")
            if self._failure is not None:
                self._refused(self._failure, peer, "-")
                self._failure = None

    def close(self) -> None:
        _stop_monitor(self._router, self.socket)


class DialWatch:
    """Watches one outbound CURVE connection for the peer refusing us, so a node whose key a
    peer does not admit says so in its own log instead of only seeing its asks time out."""

    _EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    )

    def __init__(self, dealer: Any, endpoint: str, rejected: Callable[[str, str], None]) -> None:
        self.endpoint = endpoint
        self._rejected = rejected
        self._dealer = dealer
        self.socket = dealer.get_monitor_socket(self._EVENTS)

    def drain(self) -> None:
        for event in _pending_events(self.socket):
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                # The peer's ZAP handler said no (its status code): our key is not allowed.
                self._rejected(self.endpoint, f"key_not_allowed (ZAP {event['value']})")
            elif event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self._rejected(self.endpoint, _protocol_reason(event["value"]))
            else:
                self._rejected(self.endpoint, "handshake_failed")

    def close(self) -> None:
        _stop_monitor(self._dealer, self.socket)


def _pending_events(sock: Any, limit: int = 100) -> Iterator[dict[str, Any]]:
    """The monitor events waiting on ``sock`` (at most ``limit``: the IO loop comes back)."""
    for _ in range(limit):
        if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return
        yield parse_monitor_message(sock.recv_multipart(zmq.NOBLOCK))


def _stop_monitor(watched: Any, monitor: Any) -> None:
    with contextlib.suppress(zmq.ZMQError):
        watched.disable_monitor()
    monitor.close(0)


def _peer_of_fd(fd: int) -> str:
    # The descriptor belongs to libzmq; a duplicate is inspected and closed, the original is
    # left alone.
    try:
        with socket.socket(fileno=os.dup(fd)) as dup:
            host, port = dup.getpeername()[:2]
            return f"{host}:{port}"
    except OSError:
        return "unknown"


def _protocol_reason(value: int) -> str:
    mismatch = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", None)
    crypto = getattr(zmq, "PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC", None)
    if value == mismatch:
        return "not_curve"
    if value == crypto:
        return "wrong_server_key"
    return "handshake_protocol_error"
