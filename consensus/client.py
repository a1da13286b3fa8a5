"""Client: submit commands and queries to a cluster, given any of its nodes' addresses.

It finds the leader (following the ``leader_hint`` a non-leader answers with), fails over when
the node it talks to stops answering, and retries with exponential backoff and full jitter
until the caller's deadline instead of giving up on the first refusal (Copycat's client failed
outright when it could not reach a leader). Each attempt is an ask to the node supervisor at
``coterie://_@<address>/user/node`` (``_``: whichever node listens there).

Adaptive batching
-----------------
Commands are not sent one ask each. :meth:`Client.submit_async` queues the command; whoever
finds nobody sending (the submitting thread itself, or the thread that just handled an answer)
sends *everything queued* as one :class:`~consensus.shell.protocol.ClientBatch`, while at most
``max_inflight_batches`` batches are unanswered. There is no timer: a command submitted to an
idle client leaves at once, alone; under load, commands pile up behind the batches in flight
and leave together when one is answered, so batches grow with the load. The leader puts a
whole batch in one log entry and answers it with one message; the client completes the
commands' futures in order. Answers to one client's commands arrive in the order the commands
were submitted: until it knows the leader a client has one batch in flight, a batch being
retried holds back everything newer, and retried commands rejoin the queue in submission
order. (Without sessions one thing can still reorder them: an attempt lost in the network,
retried after a later batch has been applied.)

A batch shares one fate at the node (all applied, or all refused), so it is retried whole;
each command keeps its own deadline, and one that runs out fails alone.

Per command the client does little: a :class:`CommandFuture` (a small future that creates a
lock only if someone blocks on it) and, once applied, a :class:`Committed` result. Everything
else (the ask, its timeout, the answer, the retry decision) is paid once per batch.

Client sessions (exactly once)
------------------------------
By default (``sessions=True``) the client opens a session (:mod:`consensus.sessions`) before
its first command: a register entry, retried with backoff and jitter for as long as commands
wait for it, never failing the client for good. Each command is numbered (session id,
sequence number 1, 2, 3, ...) when it is first sent and keeps that number on every retry, to
any node: the state machine layer applies it once and answers a retry from the session's cached
result, also after a leader change, a restart or a snapshot. Each envelope also acknowledges
every answer the client already has (``ack``), so the nodes drop those cached results. The
session survives failovers (it is replicated state, not a connection); while idle the client
renews it with a keep-alive entry every third of ``session_timeout``. A command whose session
expired (the leader's replicated time passed its deadline) fails with :class:`SessionExpired`
rather than being applied under a new session behind the caller's back; commands not yet sent
go on under a fresh session.

A command refused with ``sequence_gap`` (an earlier command of its session has not reached the
log yet, e.g. its batch was lost while a later one got through) is resent after the earlier one.
A sessioned command the client gives up on (its deadline passed with no answer) leaves a hole
that no later number of its session can pass, so the client then starts a new session for the
commands that follow; those still in flight under the old one either were applied (answered
from the cache) or are refused with ``sequence_gap`` and fail with a :class:`ClientError`
(outcome unknown, as for a timeout: the given-up command may yet commit late, and an older
attempt of a refused one after it).

With ``sessions=False`` commands go as plain commands (no register, no envelope, no cache): a
command retried after a lost answer may then be applied twice.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

import structlog

from actors import ActorSystem
from actors.errors import AskError
from consensus.sessions import (
    SEQUENCE_GAP,
    UNKNOWN_SESSION,
    encode_command,
    encode_keepalive,
    encode_plain,
    encode_register,
    encode_unregister,
    session_error,
)
from consensus.shell.protocol import (
    ClientBatch,
    ClientBatchResponse,
    ClientQuery,
    NodeStatus,
    QueryResponse,
    StatusRequest,
)

log = structlog.get_logger("coterie.client")


def _suppress_errors() -> contextlib.AbstractContextManager[None]:
    return contextlib.suppress(ClientError, AskError, OSError, RuntimeError)


RETRYABLE = {"not_leader", "superseded", "leader_changed", "no_leader", "leadership_transfer"}


class ClientError(Exception):
    """A command or query that failed for good, or ran out of time; says why."""


class SessionExpired(ClientError):
    """The command's session expired (or was closed) before the command was applied: it was
    not applied and will not be. Commands submitted afterwards run under a new session."""


class _Session:
    """The client's side of one session: its id, the next sequence number to hand out and
    the numbered commands whose answers are not all in yet (for ``ack``)."""

    __slots__ = ("id", "last_sent", "next_seq", "unanswered")

    def __init__(self, session_id: int, now: float) -> None:
        self.id = session_id
        self.next_seq = 1
        self.unanswered: collections.deque[CommandFuture] = collections.deque()
        self.last_sent = now

    def number(self, command: CommandFuture) -> None:
        command.session = self.id
        command.sseq = self.next_seq
        self.next_seq += 1
        self.unanswered.append(command)

    def ack(self) -> int:
        """Every answer below this sequence number is in (or given up on)."""
        unanswered = self.unanswered
        while unanswered and unanswered[0]._finished:
            unanswered.popleft()
        return unanswered[0].sseq if unanswered else self.next_seq


class Committed:
    """A command's outcome: applied at log ``index`` with the state machine's ``result``.
    (A command that failed for good raises :class:`ClientError` instead.)"""

    __slots__ = ("index", "request_id", "result")
    ok = True
    error: str | None = None
    leader_hint: str | None = None

    def __init__(self, request_id: str, index: int, result: Any) -> None:
        self.request_id = request_id
        self.index = index
        self.result = result

    def __repr__(self) -> str:
        return f"Committed({self.request_id!r}, index={self.index}, result={self.result!r})"


_NEW_WAITERS = threading.Lock()  # only for the first thread to block on a future


class CommandFuture:
    """The future of one submitted command: ``result(timeout)``, ``exception(timeout)``,
    ``done()`` and ``add_done_callback(fn)`` as in ``concurrent.futures``. Callbacks run on
    the thread that completes it (the actor system's callback thread), or at once when it is
    already done. Cheap by design: a client under load creates thousands per second, and a
    ``concurrent.futures.Future`` builds a condition variable and takes its lock each time.

    No lock: list ``append``/``pop`` are atomic, and each side publishes before it looks
    (completion sets ``_finished`` before draining the callbacks and waking the waiters; a
    new callback or waiter is registered before ``_finished`` is checked), so every callback
    runs exactly once and no waiter sleeps through the completion.
    """

    __slots__ = (
        "_callbacks",
        "_error",
        "_finished",
        "_outcome",
        "_waiters",
        "backoff",
        "deadline",
        "last_error",
        "payload",
        "request_id",
        "seq",
        "session",
        "sseq",
        "timeout",
        "wire",
    )

    def __init__(
        self, seq: int, request_id: str, payload: bytes, timeout: float, backoff: float, now: float
    ) -> None:
        self.seq = seq  # submission order
        self.request_id = request_id
        self.payload = payload
        self.timeout = timeout
        self.deadline = now + timeout
        self.backoff = backoff
        self.last_error = "no attempt made"
        self.session = 0  # the session it is numbered in (0: not numbered, or no sessions)
        self.sseq = 0  # its sequence number in that session
        self.wire: bytes | None = None  # what is sent, fixed at the first send
        self._outcome: Committed | None = None
        self._error: BaseException | None = None
        self._finished = False
        self._callbacks: list[Callable[[CommandFuture], Any]] = []
        self._waiters: list[threading.Event] | None = None

    def done(self) -> bool:
        return self._finished

    def add_done_callback(self, fn: Callable[[CommandFuture], Any]) -> None:
        self._callbacks.append(fn)
        if self._finished:
            self._run_callbacks()

    def result(self, timeout: float | None = None) -> Committed:
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._error

    def _wait(self, timeout: float | None) -> None:
        if self._finished:
            return
        event = threading.Event()
        if self._waiters is None:
            with _NEW_WAITERS:
                if self._waiters is None:
                    self._waiters = []
        self._waiters.append(event)
        if not self._finished and not event.wait(timeout):
            raise TimeoutError(f"command {self.request_id} not done within {timeout}s")

    def _complete(self, outcome: Committed | None, error: BaseException | None) -> None:
        if self._finished:
            return  # completed once already (only one thread completes a command)
        self._outcome, self._error = outcome, error
        self._finished = True
        if self._waiters is not None:
            for event in list(self._waiters):
                event.set()
        if self._callbacks:
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        callbacks = self._callbacks
        while True:
            try:
                fn = callbacks.pop(0)
            except IndexError:
                return
            try:
                fn(self)
            except Exception:
                log.exception("command future callback failed", request_id=self.request_id)


class Client:
    def __init__(
        self,
        system: ActorSystem,
        addresses: Sequence[str],
        *,
        attempt_timeout: float = 1.0,
        backoff_initial: float = 0.02,
        backoff_max: float = 0.5,
        rng: random.Random | None = None,
        max_batch: int = 1024,
        max_batch_bytes: int = 256 * 1024,
        max_inflight_batches: int = 4,
        sessions: bool = True,
        session_timeout: float = 30.0,
    ) -> None:
        if not addresses:
            raise ValueError("a client needs at least one node address")
        if max_batch < 1 or max_batch_bytes < 1 or max_inflight_batches < 1:
            raise ValueError("max_batch, max_batch_bytes and max_inflight_batches must be >= 1")
        if not 0.01 <= session_timeout <= 7 * 24 * 3600:
            raise ValueError(f"session_timeout {session_timeout}s outside 0.01 s .. 7 days")
        self.system = system
        self.addresses = list(addresses)
        self.attempt_timeout = attempt_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.max_inflight_batches = max_inflight_batches
        self.client_id = uuid.uuid4().hex[:12]
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._leader: str | None = None
        self._next_address = 0
        # the batcher's state, under _lock
        self._queue: collections.deque[CommandFuture] = collections.deque()
        self._inflight = 0
        self._pumping = False
        self._completing = 0
        self._retrying = 0  # retries waiting for their backoff: newer commands wait too
        self.batches_sent = 0  # for tests and benchmarks: commands / batches = batching factor
        self.batches_retried = 0
        # sessions (see the module docstring); _session and _registering under _lock
        self.use_sessions = sessions
        self.session_timeout = session_timeout
        self._session: _Session | None = None
        self._registering = False
        self._register_backoff = backoff_initial
        self.sessions_opened = 0  # for tests: sessions this client registered
        self.keepalives_sent = 0
        self._lose_answers = 0  # fault injection for tests: see lose_answers()

    # ------------------------------------------------------------------ public API

    def submit(self, payload: bytes, timeout: float = 10.0) -> Committed:
        """Replicate a command; returns its outcome once committed and applied."""
        future = self.submit_async(payload, timeout)
        # The future always completes by its deadline; the margin covers an answer in flight.
        return future.result(timeout + self.attempt_timeout + 5.0)

    def submit_async(self, payload: bytes, timeout: float = 10.0) -> CommandFuture:
        """Queue a command; the future completes with its outcome (or a ClientError)."""
        seq = next(self._seq)
        command = CommandFuture(
            seq,
            f"{self.client_id}-{seq}",
            payload,
            timeout,
            self.backoff_initial,
            time.monotonic(),
        )
        if not self.use_sessions:
            command.wire = encode_plain(payload)
        with self._lock:
            self._queue.append(command)
            if self._busy():
                return command  # the thread sending (or about to) takes it along
            self._pumping = True
        self._pump_loop()
        return command

    def submit_many(self, payloads: Iterable[bytes], timeout: float = 10.0) -> list[CommandFuture]:
        """Queue several commands at once, applied in this order (each with its own future)."""
        now = time.monotonic()
        client_id, backoff = self.client_id, self.backoff_initial
        commands = [
            CommandFuture(seq, f"{client_id}-{seq}", p, timeout, backoff, now)
            for p, seq in zip(payloads, self._seq, strict=False)  # payloads first: no seq lost
        ]
        if not self.use_sessions:
            for command in commands:
                command.wire = encode_plain(command.payload)
        with self._lock:
            self._queue.extend(commands)
            if self._busy():
                return commands
            self._pumping = True
        self._pump_loop()
        return commands

    def query(self, payload: bytes, *, stale: bool = False, timeout: float = 10.0) -> Any:
        """A linearizable read (or a stale one from any node with ``stale=True``)."""
        request_id = f"{self.client_id}-q{next(self._seq)}"
        answer = self._until_done(lambda: ClientQuery(request_id, payload, stale), timeout)
        assert isinstance(answer, QueryResponse)
        return answer

    def status(self, address: str, timeout: float = 2.0) -> NodeStatus:
        answer = self._ask(address, StatusRequest(), timeout)
        assert isinstance(answer, NodeStatus)
        return answer

    @property
    def leader(self) -> str | None:
        return self._leader

    @property
    def session_id(self) -> int | None:
        """The session the client's new commands are numbered in (None before it has one)."""
        session = self._session
        return None if session is None else session.id

    def close(self, timeout: float = 2.0) -> None:
        """Close the session (best effort: an unanswered close leaves it to expire) and stop
        the keep-alives. Commands submitted afterwards would open a new session."""
        with self._lock:
            session, self._session = self._session, None
        if session is None:
            return
        with _suppress_errors():
            self._until_done(lambda: ClientBatch([encode_unregister(session.id)]), timeout)

    def lose_answers(self, count: int) -> None:
        """Fault injection for tests: drop the next ``count`` successful batch answers as if
        the network had lost them (the commands were applied; the client retries them)."""
        with self._lock:
            self._lose_answers += count

    # ------------------------------------------------------------------ the batcher

    def _busy(self) -> bool:
        """Under the lock: will someone else send what was just queued?"""
        return (
            self._pumping
            or self._registering
            or self._completing > 0
            or self._retrying > 0
            or self._inflight >= self._window()
        )

    def _window(self) -> int:
        # Until the leader is known, one batch at a time: batches sprayed over several nodes
        # would be applied in whatever order the refusals and retries happen to come back.
        return self.max_inflight_batches if self._leader is not None else 1

    def _pump(self) -> None:
        """Send what is queued, one batch per free in-flight slot. Only one thread pumps at a
        time; the others just queue, and the pumping thread picks their commands up."""
        with self._lock:
            if self._pumping or self._completing:
                return
            self._pumping = True
        self._pump_loop()

    def _pump_loop(self) -> None:
        while True:
            expired: list[CommandFuture] = []
            with self._lock:
                if self._inflight >= self._window() or self._retrying or not self._queue:
                    self._pumping = False
                    return
                if self.use_sessions and self._session is None:
                    # Nothing leaves before the session is open; one thread registers.
                    self._pumping = False
                    if self._registering:
                        return
                    self._registering = True
                    address = self._target()
                    batch = None
                else:
                    batch = self._take(expired)
                    if batch:
                        self._inflight += 1
                        address = self._target()
            for command in expired:
                self._give_up(command)
            if batch is None:
                self._register(address)
                return
            if batch:
                self._send(address, batch)

    def _take(self, expired: list[CommandFuture]) -> list[CommandFuture]:
        queue, batch = self._queue, []
        size, now = 0, time.monotonic()
        while queue and len(batch) < self.max_batch:
            command = queue[0]
            if batch and size + len(command.payload) > self.max_batch_bytes:
                break
            queue.popleft()
            if command.deadline <= now:
                expired.append(command)
                continue
            batch.append(command)
            size += len(command.payload)
        session = self._session
        if session is not None:
            for command in batch:
                if command.sseq == 0:
                    session.number(command)  # numbered once, in submission order
            session.last_sent = now
        return batch

    def _target(self) -> str:
        if self._leader is not None:
            return self._leader
        self._next_address += 1
        return self.addresses[self._next_address % len(self.addresses)]

    def _send(self, address: str, batch: list[CommandFuture]) -> None:
        remaining = max(c.deadline for c in batch) - time.monotonic()
        timeout = max(0.001, min(self.attempt_timeout, remaining))
        session = self._session
        if session is not None:
            ack = session.ack()
            for c in batch:
                if c.wire is None:
                    c.wire = encode_command(c.session, c.sseq, ack, c.payload)
        message = ClientBatch([c.wire for c in batch])  # type: ignore[misc]  # all set
        self.batches_sent += 1
        try:
            ref = self.system.ref(f"coterie://_@{address}/user/node")
            future = ref.ask(message, timeout=timeout)
        except Exception as exc:  # the system shut down, a bad address: nothing was sent
            self._answered(address, batch, None, exc)
            return
        future.add_done_callback(lambda f: self._on_answer(address, batch, f))

    def _on_answer(self, address: str, batch: list[CommandFuture], future: Future[Any]) -> None:
        try:
            answer = future.result()
        except Exception as exc:
            self._answered(address, batch, None, exc)
        else:
            self._answered(address, batch, answer, None)

    def _answered(
        self,
        address: str,
        batch: list[CommandFuture],
        answer: ClientBatchResponse | None,
        error: BaseException | None,
    ) -> None:
        with self._lock:
            self._inflight -= 1
            # Commands submitted by the futures' callbacks below join the next batch instead
            # of leaving one by one.
            self._completing += 1
        try:
            self._settle(address, batch, answer, error)
        finally:
            with self._lock:
                self._completing -= 1
            self._pump()

    def _settle(
        self,
        address: str,
        batch: list[CommandFuture],
        answer: ClientBatchResponse | None,
        error: BaseException | None,
    ) -> None:
        if answer is None:
            reason = f"{address}: {error}"
            if not isinstance(error, AskError | OSError):
                for command in batch:
                    command.last_error = reason
                    self._give_up(command, permanent=True)
                return
            self._forget_leader(address)
            self._retry(batch, reason, immediately=False)
            return
        if answer.ok and self._lose_answers > 0:
            with self._lock:
                lost = self._lose_answers > 0
                self._lose_answers -= lost
            if lost:
                reason = f"{address}: answer lost (test fault injection)"
                self._retry(batch, reason, immediately=False)
                return
        if answer.ok:
            self._leader = address
            results = answer.results
            if len(results) != len(batch):
                results = [None] * len(batch)
            index = answer.index
            gaps: list[CommandFuture] = []
            for command, result in zip(batch, results, strict=True):
                if command.sseq and type(result) is dict and session_error(result) is not None:
                    self._session_refused(command, result, address, gaps)
                    continue
                command._complete(Committed(command.request_id, index, result), None)
            if gaps:
                self._retry(gaps, f"{address}: {SEQUENCE_GAP}", immediately=False)
            return
        reason = f"{address}: {answer.error}"
        if answer.error not in RETRYABLE:
            for command in batch:
                command.last_error = reason
                self._give_up(command, permanent=True)
            return
        hint = answer.leader_hint
        if hint and hint != address:
            self._leader = hint
            self._retry(batch, reason, immediately=True)  # a fresh hint: follow it at once
            return
        self._forget_leader(address)
        self._retry(batch, reason, immediately=False)

    def _retry(self, batch: list[CommandFuture], reason: str, *, immediately: bool) -> None:
        self.batches_retried += 1
        now = time.monotonic()
        live: list[CommandFuture] = []
        delay = 0.0
        for command in batch:
            command.last_error = reason
            if command.deadline <= now:
                self._give_up(command)
                continue
            live.append(command)
            if not immediately:
                delay = max(delay, self.rng.uniform(0, command.backoff))
                command.backoff = min(command.backoff * 2, self.backoff_max)
        if not live:
            return
        if delay <= 0:
            self._requeue(live)
            return
        with self._lock:
            self._retrying += 1
        try:
            self.system.scheduler.schedule_once(delay, lambda: self._requeue_and_pump(live))
        except Exception:  # the scheduler stopped with the system: retry at once instead
            self._requeue(live, scheduled=True)

    def _requeue(self, commands: list[CommandFuture], *, scheduled: bool = False) -> None:
        """Put commands back in submission order, ahead of anything newer."""
        with self._lock:
            if scheduled:
                self._retrying -= 1
            merged = sorted([*commands, *self._queue], key=lambda c: c.seq)
            self._queue = collections.deque(merged)

    def _requeue_and_pump(self, commands: list[CommandFuture]) -> None:
        self._requeue(commands, scheduled=True)
        self._pump()

    def _session_refused(
        self, command: CommandFuture, result: dict[str, Any], address: str, gaps: list[Any]
    ) -> None:
        """A sessioned command answered with a session error instead of a result."""
        code = session_error(result)
        current = self._session
        if code == SEQUENCE_GAP and current is not None and current.id == command.session:
            gaps.append(command)  # an earlier one is still on its way: resend after it
            return
        if code == UNKNOWN_SESSION:
            command.last_error = f"{address}: session {command.session} expired or was closed"
            command._complete(None, SessionExpired(command.last_error))
            self._abandon(command.session)
            return
        if code == SEQUENCE_GAP:
            # Its session was given up after an earlier command's fate was lost. This attempt
            # was not applied, but that earlier command may still commit late (its last
            # attempt in some leader's log), and then an older attempt of this one still in
            # flight could follow it: the outcome is unknown, like any timeout's.
            command.last_error = (
                f"{address}: outcome unknown: an earlier command of session {command.session} "
                "was given up before this one could be applied"
            )
        else:
            command.last_error = f"{address}: {code}: {result}"
        self._give_up(command, permanent=True)

    def _abandon(self, session_id: int) -> None:
        """Stop numbering new commands in ``session_id``: the next ones open a new session."""
        with self._lock:
            if self._session is not None and self._session.id == session_id:
                self._session = None

    def _give_up(self, command: CommandFuture, *, permanent: bool = False) -> None:
        if command.sseq:
            # Its fate may be unknown, and no later number of its session passes it.
            self._abandon(command.session)
        if permanent:
            error = ClientError(command.last_error)
        else:
            error = ClientError(
                f"gave up after {command.timeout:.1f}s; last error: {command.last_error}"
            )
        command._complete(None, error)

    # ------------------------------------------------------------------ the session

    def _register(self, address: str) -> None:
        """One attempt to open a session (``_registering`` is set): on success commands flow;
        on failure another attempt after a backoff with jitter, for as long as commands wait.
        (A register retried after a lost answer opens a second session; the first expires.)"""
        message = ClientBatch([encode_register(max(1, int(self.session_timeout * 1000)))])
        try:
            ref = self.system.ref(f"coterie://_@{address}/user/node")
            future = ref.ask(message, timeout=self.attempt_timeout)
        except Exception as exc:  # the system shut down: fail what waits
            self._registered(address, None, exc)
            return
        future.add_done_callback(lambda f: self._on_register_answer(address, f))

    def _on_register_answer(self, address: str, future: Future[Any]) -> None:
        try:
            answer = future.result()
        except Exception as exc:
            self._registered(address, None, exc)
        else:
            self._registered(address, answer, None)

    def _registered(
        self, address: str, answer: ClientBatchResponse | None, error: BaseException | None
    ) -> None:
        result = answer.results[0] if answer is not None and answer.ok and answer.results else None
        if type(result) is dict and type(result.get("session")) is int:
            now = time.monotonic()
            session = _Session(result["session"], now)
            with self._lock:
                self._session = session
                self._registering = False
                self._register_backoff = self.backoff_initial
                self._leader = address
            self.sessions_opened += 1
            log.debug("client session opened", client=self.client_id, session=result["session"])
            self._schedule_keepalive(session)
            self._pump()
            return
        if answer is None and not isinstance(error, AskError | OSError):
            # Nothing can be sent any more (the actor system stopped): fail what waits.
            with self._lock:
                waiting, self._queue = list(self._queue), collections.deque()
                self._registering = False
            for command in waiting:
                command.last_error = f"cannot open a session: {error}"
                self._give_up(command, permanent=True)
            return
        hint = answer.leader_hint if answer is not None else None
        reason = answer.error if answer is not None else error
        if hint and hint != address:
            self._leader = hint
            delay = 0.0
        else:
            self._forget_leader(address)
            delay = self.rng.uniform(0, self._register_backoff)
            self._register_backoff = min(self._register_backoff * 2, self.backoff_max)
        log.debug("client session register retried", address=address, reason=str(reason))
        # Commands whose deadline passed while waiting fail now; with none left, stop.
        now, expired = time.monotonic(), []
        with self._lock:
            keep = collections.deque()
            for command in self._queue:
                (expired if command.deadline <= now else keep).append(command)
            self._queue = keep
            if not keep:
                self._registering = False
        for command in expired:
            command.last_error = f"{address}: cannot open a session yet: {reason}"
            self._give_up(command)
        if not keep:
            self._pump()  # a command queued since the check above must not be stranded
            return
        try:
            self.system.scheduler.schedule_once(delay, self._register_again)
        except Exception:  # the scheduler stopped with the system
            self._registered(address, None, RuntimeError("the actor system stopped"))

    def _register_again(self) -> None:
        with self._lock:
            address = self._target()
        self._register(address)

    def _schedule_keepalive(self, session: _Session) -> None:
        try:
            self.system.scheduler.schedule_once(
                self.session_timeout / 3, lambda: self._keepalive(session)
            )
        except Exception:
            return  # the system stopped: nothing to keep alive

    def _keepalive(self, session: _Session) -> None:
        """Renew an idle session: a keep-alive entry when nothing was sent for a third of the
        timeout (any command renews it too). Stops once the session is no longer current."""
        if self._session is not session:
            return
        if time.monotonic() - session.last_sent >= self.session_timeout / 3:
            session.last_sent = time.monotonic()
            message = ClientBatch([encode_keepalive(session.id, session.ack())])
            with self._lock:
                address = self._target()
            try:
                ref = self.system.ref(f"coterie://_@{address}/user/node")
                future = ref.ask(message, timeout=self.attempt_timeout)
            except Exception:
                return
            self.keepalives_sent += 1
            future.add_done_callback(lambda f: self._on_keepalive(session, address, f))
        self._schedule_keepalive(session)

    def _on_keepalive(self, session: _Session, address: str, future: Future[Any]) -> None:
        try:
            answer = future.result()
        except Exception:
            self._forget_leader(address)
            return  # the next tick tries again (sooner: last_sent was not the answer)
        if not answer.ok:
            if answer.leader_hint and answer.leader_hint != address:
                self._leader = answer.leader_hint
            else:
                self._forget_leader(address)
            session.last_sent = 0.0  # not renewed: try again at the next tick
            return
        if answer.results and session_error(answer.results[0]) == UNKNOWN_SESSION:
            self._abandon(session.id)  # expired: the next command opens a new session

    # ------------------------------------------------------------------ queries: one ask each

    def _until_done(self, make: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        backoff = self.backoff_initial
        last_error = "no attempt made"
        for attempt in itertools.count():
            address = self._pick(attempt)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                answer = self._ask(address, make(), min(self.attempt_timeout, remaining))
            except (AskError, OSError) as exc:
                last_error = f"{address}: {exc}"
                self._forget_leader(address)
            else:
                if answer.ok:
                    self._leader = address
                    return answer
                last_error = f"{address}: {answer.error}"
                if answer.error not in RETRYABLE:
                    raise ClientError(last_error)
                if answer.leader_hint and answer.leader_hint != address:
                    self._leader = answer.leader_hint
                    continue  # a fresh hint: follow it at once
                self._forget_leader(address)
            sleep = self.rng.uniform(0, backoff)
            time.sleep(max(0.0, min(sleep, deadline - time.monotonic())))
            backoff = min(backoff * 2, self.backoff_max)
        raise ClientError(f"gave up after {timeout:.1f}s; last error: {last_error}")

    def _pick(self, attempt: int) -> str:
        with self._lock:
            if self._leader is not None:
                return self._leader
            return self.addresses[attempt % len(self.addresses)]

    def _forget_leader(self, address: str) -> None:
        with self._lock:
            if self._leader == address:
                self._leader = None

    def _ask(self, address: str, message: Any, timeout: float) -> Any:
        # "_" addresses whichever node listens there: the client knows addresses, not ids.
        ref = self.system.ref(f"coterie://_@{address}/user/node")
        return ref.ask(message, timeout=timeout).result(timeout + 1.0)
