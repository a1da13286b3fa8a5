"""Client: submit commands and queries to a cluster, given any of its nodes' addresses.

It finds the leader (following the ``leader_hint`` a non-leader answers with), fails over when
the node it talks to stops answering, and retries with exponential backoff and full jitter
until the caller's deadline instead of giving up on the first refusal (Copycat's client failed
outright when it could not reach a leader). Each attempt is an ask to the node supervisor at
``coterie://_@<address>/user/node`` (``_``: whichever node listens there).

Without client sessions a command retried after a timeout may be applied twice (the first try
may have committed); exactly-once retries come with sessions.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from actors import ActorSystem
from actors.errors import AskError
from consensus.messages import ClientCommand, ClientResponse
from consensus.shell.protocol import ClientQuery, NodeStatus, QueryResponse, StatusRequest

RETRYABLE = {"not_leader", "superseded", "leader_changed", "no_leader"}


class ClientError(Exception):
    """A command or query that failed for good, or ran out of time; says why."""


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
    ) -> None:
        if not addresses:
            raise ValueError("a client needs at least one node address")
        self.system = system
        self.addresses = list(addresses)
        self.attempt_timeout = attempt_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self.client_id = uuid.uuid4().hex[:12]
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._leader: str | None = None

    # ------------------------------------------------------------------ public API

    def submit(self, payload: bytes, timeout: float = 10.0) -> ClientResponse:
        """Replicate a command; returns its response once committed and applied."""
        request_id = f"{self.client_id}-{next(self._seq)}"
        answer = self._until_done(lambda: ClientCommand(request_id, payload), timeout)
        assert isinstance(answer, ClientResponse)
        return answer

    def query(self, payload: bytes, *, stale: bool = False, timeout: float = 10.0) -> Any:
        """A linearizable read (or a stale one from any node with ``stale=True``)."""
        request_id = f"{self.client_id}-q{next(self._seq)}"
        answer = self._until_done(lambda: ClientQuery(request_id, payload, stale), timeout)
        assert isinstance(answer, QueryResponse)
        return answer

    def submit_async(self, payload: bytes, timeout: float = 10.0) -> Future[ClientResponse]:
        future: Future[ClientResponse] = Future()

        def work() -> None:
            try:
                future.set_result(self.submit(payload, timeout))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=work, daemon=True, name="coterie-client").start()
        return future

    def status(self, address: str, timeout: float = 2.0) -> NodeStatus:
        answer = self._ask(address, StatusRequest(), timeout)
        assert isinstance(answer, NodeStatus)
        return answer

    @property
    def leader(self) -> str | None:
        return self._leader

    # ------------------------------------------------------------------ the retry loop

    def _until_done(self, make: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        backoff = self.backoff_initial
        tried: list[str] = []
        last_error = "no attempt made"
        for attempt in itertools.count():
            address = self._pick(attempt)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            tried.append(address)
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
