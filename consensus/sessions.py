"""Exactly-once client sessions: the layer between committed commands and the user's state
machine that applies each client command once, however often the client retries it.

Theory of operation
-------------------
:class:`SessionStateMachine` wraps the user's state machine and has its shape
(``apply(command, meta)``, ``query``, ``snapshot``, ``restore``), so the shell puts it where
the user's machine was and applies commands one by one as before, also inside the batches the
leader packs into one entry. ``meta`` is the shell's ``EntryMeta`` (anything with ``index``,
``term``, ``timestamp`` and ``position``); it is handed on to the user's machine unchanged.

A command is either *plain* (any payload not starting with :data:`MARK`: applied as is, no
exactly-once) or a session envelope (:func:`encode_register`, :func:`encode_command`,
:func:`encode_keepalive`, :func:`encode_unregister`; :func:`encode_plain` escapes a plain
payload that happens to start with the mark):

* **register** opens a session; its id is the command's position in the log
  (``index << 16 | position``), the same on every replica, and its timeout is chosen by the
  client and carried in the entry, so every replica expires it alike.
* **command** ``(session, seq, ack, payload)``: ``seq`` numbers the session's commands 1, 2,
  3, ...; ``ack`` says the client has every answer below it. A command is applied only when
  ``seq`` is the next one (so a session's commands take effect in the client's order, and
  their answers are produced in that order), its result cached; a ``seq`` already applied is
  answered from the cache and not applied again; a ``seq`` beyond the next is refused with
  ``sequence_gap`` (retryable: the client resends from the first unanswered one). Results
  below ``ack`` are forgotten.
* **keepalive** only renews the session; every session envelope renews its session.
* **unregister** closes it.

Time is the entries' timestamps (the leader's clock, carried in the log, never going
backwards here). Before each command, sessions idle for longer than their timeout at that
time are expired, in order of (deadline, id): the decision is a pure function of the log, so
every replica expires the same sessions at the same command. The session table (with each
session's last activity and cached results) is part of the snapshot, so a snapshot followed by
the rest of the log reproduces it exactly, and compaction cannot lose a session or bring one
back (Copycat lost sessions when the keep-alives that held them were compacted away).

An error is answered as ``{"session_error": CODE, ...}``; ``unknown_session`` (expired,
closed or never opened) cannot be retried with that session. A register while
:data:`MAX_SESSIONS` are open is refused with ``too_many_sessions`` (the client retries it
later). A command whose ``apply`` raises has a deterministic failure result
(``command_failed``), cached like any other.

If the user's machine has ``session_closed(session_id, expired, meta)``, it is told of every
expiry and close (e.g. to release the session's locks).
"""

from __future__ import annotations

import dataclasses
import heapq
import struct
from typing import Any, Protocol

import msgpack

MARK = 0xC1  # the byte msgpack never uses; plain commands starting with it are escaped
_PLAIN, _REGISTER, _COMMAND, _KEEPALIVE, _UNREGISTER = b"\x00", b"R", b"C", b"K", b"U"
# Bounds every replica applies alike (constants, never settings: a setting that differed
# between replicas would make them diverge).
MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000
MAX_CACHED_RESULTS = 4096  # per session: answers not yet acknowledged by the client
# Open sessions at once: a client registering in a loop (a bug, or hostile) is refused here
# rather than growing every replica's memory and snapshots until its sessions expire.
MAX_SESSIONS = 100_000
SESSION_SHIFT = 16  # session id = index << 16 | position, like the shell's EntryMeta.sequence

UNKNOWN_SESSION = "unknown_session"
SEQUENCE_GAP = "sequence_gap"
STALE_SEQUENCE = "stale_sequence"
MALFORMED = "malformed_session_command"
TOO_MANY_SESSIONS = "too_many_sessions"

_SNAPSHOT_MAGIC = b"CTSESS01"
_SNAPSHOT_PREFIX = _SNAPSHOT_MAGIC[:6]  # a snapshot starting with it must carry a session table
_SNAPSHOT_HEAD = struct.Struct("<8sQ")


class EntryMetaLike(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def term(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def position(self) -> int: ...


class UserMachine(Protocol):
    def apply(self, command: bytes, meta: Any) -> Any: ...

    def query(self, payload: bytes) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


# ---------------------------------------------------------------------------- envelopes


def _pack(tag: bytes, *fields: Any) -> bytes:
    return bytes((MARK,)) + tag + msgpack.packb(list(fields), use_bin_type=True)


_COMMAND_PREFIX = bytes((MARK,)) + _COMMAND
_COMMAND_TAG = _COMMAND[0]
_packb = msgpack.packb
_unpackb = msgpack.unpackb


def encode_plain(payload: bytes) -> bytes:
    """A command outside any session (escaped only if it starts with :data:`MARK`)."""
    if payload and payload[0] == MARK:
        return bytes((MARK,)) + _PLAIN + payload
    return payload


def encode_register(timeout_ms: int) -> bytes:
    return _pack(_REGISTER, timeout_ms)


def encode_command(session: int, seq: int, ack: int, payload: bytes) -> bytes:
    # The hot path of every sessioned command (client side): no generic packing.
    return _COMMAND_PREFIX + _packb([session, seq, ack, payload])


def encode_keepalive(session: int, ack: int) -> bytes:
    return _pack(_KEEPALIVE, session, ack)


def encode_unregister(session: int) -> bytes:
    return _pack(_UNREGISTER, session)


def session_error(result: Any) -> str | None:
    """The session error code a result carries, or None for an ordinary result."""
    if type(result) is dict and type(result.get("session_error")) is str:
        return result["session_error"]
    return None


def _error(code: str, **detail: Any) -> dict[str, Any]:
    return {"session_error": code, **detail}


def _fields(body: memoryview, types: tuple[type, ...]) -> list[Any]:
    try:
        fields = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ValueError(f"does not decode: {exc}") from exc
    if type(fields) is not list or len(fields) != len(types):
        raise ValueError(f"expected {len(types)} fields")
    for value, kind in zip(fields, types, strict=True):
        if type(value) is not kind or (kind is int and value < 0):
            raise ValueError(f"field {value!r} is not a valid {kind.__name__}")
    return fields


# ---------------------------------------------------------------------------- sessions


@dataclasses.dataclass(slots=True)
class Session:
    id: int
    timeout: int
    last_active: int
    last_seq: int = 0  # the highest sequence number applied
    # seq -> result of every seq in oldest..last_seq: a session applies its commands in
    # sequence and forgets answers from the oldest up, so the cached ones are contiguous and
    # forgetting walks up from ``oldest`` (never a scan of the cache per command: with
    # thousands of answers cached that scan cost ten times the rest of a command).
    results: dict[int, Any] = dataclasses.field(default_factory=dict)
    oldest: int = 1

    @property
    def deadline(self) -> int:
        return self.last_active + self.timeout


class SessionStateMachine:
    """The user's state machine behind exactly-once sessions (see the module docstring)."""

    def __init__(self, machine: UserMachine) -> None:
        self.machine = machine
        self.sessions: dict[int, Session] = {}
        self.clock = 0  # the latest entry timestamp seen
        # (deadline, session id), lazily pruned: an entry is live if it matches the session
        self._deadlines: list[tuple[int, int]] = []
        self.expired = 0  # sessions expired so far (for metrics and tests)

    # ------------------------------------------------------------------ apply

    def apply(self, command: bytes, meta: Any) -> Any:
        self._advance(meta)
        if not command or command[0] != MARK:
            return self._apply_user(command, meta)
        if len(command) > 2 and command[1] == _COMMAND_TAG:
            # The hot path (a sessioned command on every replica), checked inline; anything
            # odd falls through to the general decoding below, which says what is wrong.
            try:
                fields = _unpackb(memoryview(command)[2:])
            except Exception:
                fields = None
            if type(fields) is list and len(fields) == 4:
                session, seq, ack, payload = fields
                if (
                    type(session) is int
                    and type(seq) is int
                    and type(ack) is int
                    and type(payload) is bytes
                    and session >= 0
                    and seq >= 0
                    and ack >= 0
                ):
                    return self._command(session, seq, ack, payload, meta)
        tag, body = command[1:2], memoryview(command)[2:]
        try:
            if tag == _PLAIN:
                return self._apply_user(bytes(body), meta)
            if tag == _COMMAND:
                session, seq, ack, payload = _fields(body, (int, int, int, bytes))
                return self._command(session, seq, ack, payload, meta)
            if tag == _REGISTER:
                (timeout,) = _fields(body, (int,))
                return self._register(timeout, meta)
            if tag == _KEEPALIVE:
                session, ack = _fields(body, (int, int))
                return self._keepalive(session, ack)
            if tag == _UNREGISTER:
                (session,) = _fields(body, (int,))
                return self._unregister(session, meta)
        except ValueError as exc:
            return _error(MALFORMED, detail=f"session command {tag!r}: {exc}")
        return _error(MALFORMED, detail=f"unknown session command tag {tag!r}")

    def _register(self, timeout: int, meta: Any) -> Any:
        if not 0 < timeout <= MAX_TIMEOUT_MS:
            return _error(MALFORMED, detail=f"timeout {timeout} ms outside 1..{MAX_TIMEOUT_MS}")
        if len(self.sessions) >= MAX_SESSIONS:
            return _error(TOO_MANY_SESSIONS, limit=MAX_SESSIONS)
        session_id = meta.index << SESSION_SHIFT | meta.position
        session = Session(session_id, timeout, self.clock)
        self.sessions[session_id] = session
        heapq.heappush(self._deadlines, (session.deadline, session_id))
        return {"session": session_id, "timeout": timeout}

    def _command(self, session_id: int, seq: int, ack: int, payload: bytes, meta: Any) -> Any:
        session = self._touch(session_id, ack)
        if session is None:
            return _error(UNKNOWN_SESSION, session=session_id)
        if seq <= session.last_seq:
            if seq in session.results:
                return session.results[seq]  # a retry: answered, not applied again
            return _error(STALE_SEQUENCE, session=session_id, seq=seq)
        if seq != session.last_seq + 1:
            return _error(SEQUENCE_GAP, session=session_id, seq=seq, expected=session.last_seq + 1)
        result = self._apply_user(payload, meta)
        session.last_seq = seq
        results = session.results
        results[seq] = result
        if len(results) > MAX_CACHED_RESULTS:
            del results[session.oldest]
            session.oldest += 1
        return result

    def _keepalive(self, session_id: int, ack: int) -> Any:
        session = self._touch(session_id, ack)
        if session is None:
            return _error(UNKNOWN_SESSION, session=session_id)
        return {"session": session_id, "last_seq": session.last_seq}

    def _unregister(self, session_id: int, meta: Any) -> Any:
        if self.sessions.pop(session_id, None) is None:
            return _error(UNKNOWN_SESSION, session=session_id)
        self._closed(session_id, expired=False, meta=meta)
        return {"session": session_id, "closed": True}

    def _touch(self, session_id: int, ack: int) -> Session | None:
        session = self.sessions.get(session_id)
        if session is None:
            return None
        session.last_active = self.clock  # its heap entry is corrected when it comes up
        if ack > session.oldest:
            results = session.results
            # Each answer is forgotten once, so this is constant work per command on average;
            # an ack beyond what was applied forgets only what exists.
            upto = min(ack, session.last_seq + 1)
            for seq in range(session.oldest, upto):
                results.pop(seq, None)
            session.oldest = max(session.oldest, upto)
        return session

    def _apply_user(self, payload: bytes, meta: Any) -> Any:
        try:
            return self.machine.apply(payload, meta)
        except Exception as exc:
            # Every replica runs the same code on the same input: a deterministic outcome,
            # cached and answered like any result.
            return {"error": "command_failed", "type": type(exc).__name__, "detail": str(exc)}

    # ------------------------------------------------------------------ time

    def _advance(self, meta: Any) -> None:
        timestamp = meta.timestamp
        # With no session open the clock is just the entry's time: then it is the same on a
        # replica restored from a snapshot without a session table (see :meth:`snapshot`) as
        # on one that applied the whole log, even if the leaders' clocks went backwards.
        self.clock = max(self.clock, timestamp) if self.sessions else timestamp
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < self.clock:
            deadline, session_id = heapq.heappop(deadlines)
            session = self.sessions.get(session_id)
            if session is None:
                continue  # closed since
            if session.deadline != deadline:
                # Renewed since (deadlines only move later): back in at its real deadline.
                # The heap holds one entry per session, never one per command, and sessions
                # still expire in (deadline, id) order, as after a restore from a snapshot.
                heapq.heappush(deadlines, (session.deadline, session_id))
                continue
            del self.sessions[session_id]
            self.expired += 1
            self._closed(session_id, expired=True, meta=meta)

    def _closed(self, session_id: int, *, expired: bool, meta: Any) -> None:
        hook = getattr(self.machine, "session_closed", None)
        if hook is not None:
            hook(session_id, expired, meta)

    def _rebuild_deadlines(self) -> None:
        self._deadlines = [(s.deadline, s.id) for s in self.sessions.values()]
        heapq.heapify(self._deadlines)

    # ------------------------------------------------------------------ the rest

    def query(self, payload: bytes) -> Any:
        return self.machine.query(payload)

    def snapshot(self) -> bytes:
        """The session table, then the user's snapshot; just the user's snapshot while no
        session was ever opened, so a cluster that never uses sessions keeps the plain
        format (readable by anything that restores the user's machine directly)."""
        if not self.sessions and self.expired == 0:
            return self.machine.snapshot()
        table = msgpack.packb(
            {
                "clock": self.clock,
                "expired": self.expired,
                "sessions": [
                    [s.id, s.timeout, s.last_active, s.last_seq, list(s.results.items())]
                    for s in self.sessions.values()
                ],
            },
            use_bin_type=True,
        )
        return _SNAPSHOT_HEAD.pack(_SNAPSHOT_MAGIC, len(table)) + table + self.machine.snapshot()

    def restore(self, data: bytes) -> None:
        """Restore a snapshot of :meth:`snapshot`; one that does not start with the session
        table's magic is the user's snapshot alone (no session open, or written before
        sessions existed)."""
        if bytes(data[: len(_SNAPSHOT_PREFIX)]) != _SNAPSHOT_PREFIX:
            self.machine.restore(data)
            self.sessions, self.expired = {}, 0
            self._rebuild_deadlines()
            return
        if len(data) < _SNAPSHOT_HEAD.size:
            raise ValueError(f"session snapshot: {len(data)} bytes, shorter than its header")
        magic, length = _SNAPSHOT_HEAD.unpack_from(data)
        if magic != _SNAPSHOT_MAGIC or _SNAPSHOT_HEAD.size + length > len(data):
            raise ValueError(f"session snapshot: bad header (magic {magic!r}, length {length})")
        start = _SNAPSHOT_HEAD.size
        try:
            table = msgpack.unpackb(
                memoryview(data)[start : start + length], raw=False, strict_map_key=False
            )
            sessions = {}
            for sid, timeout, last_active, last_seq, results in table["sessions"]:
                cached = dict(results)
                oldest = min(cached, default=last_seq + 1)
                if any(seq < oldest or seq > last_seq for seq in cached) or len(cached) != (
                    last_seq + 1 - oldest
                ):
                    raise ValueError(f"session {sid}: cached answers are not {oldest}..{last_seq}")
                sessions[sid] = Session(sid, timeout, last_active, last_seq, cached, oldest)
            clock, expired = int(table["clock"]), int(table["expired"])
        except (ValueError, KeyError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
            raise ValueError(f"session snapshot: the session table does not decode: {exc}") from exc
        self.machine.restore(bytes(memoryview(data)[start + length :]))
        self.sessions, self.clock, self.expired = sessions, clock, expired
        self._rebuild_deadlines()
