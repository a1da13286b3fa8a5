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

Without client sessions a command retried after a timeout may be applied twice (the first try
may have committed); exactly-once retries come with sessions.
"""

from __future__ import annotations

import collections
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
from consensus.shell.protocol import (
    ClientBatch,
    ClientBatchResponse,
    ClientQuery,
    NodeStatus,
    QueryResponse,
    StatusRequest,
)

log = structlog.get_logger("coterie.client")

RETRYABLE = {"not_leader", "superseded", "leader_changed", "no_leader", "leadership_transfer"}


class ClientError(Exception):
    """A command or query that failed for good, or ran out of time; says why."""


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
        "timeout",
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
    ) -> None:
        if not addresses:
            raise ValueError("a client needs at least one node address")
        if max_batch < 1 or max_batch_bytes < 1 or max_inflight_batches < 1:
            raise ValueError("max_batch, max_batch_bytes and max_inflight_batches must be >= 1")
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

    # ------------------------------------------------------------------ the batcher

    def _busy(self) -> bool:
        """Under the lock: will someone else send what was just queued?"""
        return (
            self._pumping
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
                batch = self._take(expired)
                if batch:
                    self._inflight += 1
                    address = self._target()
            for command in expired:
                self._give_up(command)
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
        return batch

    def _target(self) -> str:
        if self._leader is not None:
            return self._leader
        self._next_address += 1
        return self.addresses[self._next_address % len(self.addresses)]

    def _send(self, address: str, batch: list[CommandFuture]) -> None:
        remaining = max(c.deadline for c in batch) - time.monotonic()
        timeout = max(0.001, min(self.attempt_timeout, remaining))
        message = ClientBatch([c.payload for c in batch])
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
        if answer.ok:
            self._leader = address
            results = answer.results
            if len(results) != len(batch):
                results = [None] * len(batch)
            index = answer.index
            for command, result in zip(batch, results, strict=True):
                command._complete(Committed(command.request_id, index, result), None)
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

    def _give_up(self, command: CommandFuture, *, permanent: bool = False) -> None:
        if permanent:
            error = ClientError(command.last_error)
        else:
            error = ClientError(
                f"gave up after {command.timeout:.1f}s; last error: {command.last_error}"
            )
        command._complete(None, error)

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
