"""SessionClient: a client of the simulated cluster that uses an exactly-once session the way
a real client library must, and retries everything.

It registers a session, then keeps up to ``window`` numbered commands outstanding (sometimes
several packed in one entry, as the shell's batching does). Every answer it accepts is checked
against the one application of that command (``Checker.on_session_ack``). It retries:

* a refusal (not leader, leadership transfer, superseded, outcome unknown) or a
  ``sequence_gap`` answer: everything unanswered again, in sequence order;
* silence for ``retry_after`` ms (a lost request, a crashed node, or an answer lost on the way
  back: ``lose_reply`` drops answers on arrival): the same;
* an expired session (``unknown_session``): a new session; the commands of the old one may or
  may not have been applied, as for any real client.

``ack`` in each command is the first sequence number not yet answered, so the state machine
forgets cached answers the client holds.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from consensus.messages import ClientResponse
from consensus.sessions import (
    SEQUENCE_GAP,
    UNKNOWN_SESSION,
    encode_command,
    encode_register,
    session_error,
)
from consensus.shell.batching import encode_commands

if TYPE_CHECKING:
    from .cluster import SimCluster


class SessionClient:
    def __init__(
        self,
        cluster: SimCluster,
        name: str,
        rng: random.Random,
        *,
        timeout_ms: int = 1000,
        window: int = 3,
        lose_reply: float = 0.0,
        retry_after: int = 150,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.rng = rng
        self.timeout_ms = timeout_ms
        self.window = window
        self.lose_reply = lose_reply
        self.retry_after = retry_after
        self.session: int | None = None
        self.registering_since: int | None = None
        self.next_seq = 1
        self.unanswered: dict[int, int] = {}  # seq -> time last sent
        self.answers: dict[int, Any] = {}  # seq -> result, this session
        self.sessions_opened = 0
        self.sessions_lost = 0
        self.retries = 0
        self.lost_replies = 0
        self.answered = 0

    @property
    def ack(self) -> int:
        return min(self.unanswered) if self.unanswered else self.next_seq

    def payload_of(self, seq: int) -> bytes:
        return f"s{self.session}:{seq}".encode()

    # ------------------------------------------------------------------ driving

    def step(self, *, new_commands: bool = True) -> None:
        """Called by the schedule now and then: register, send new commands, retry."""
        now = self.cluster.now
        if self.session is None:
            if self.registering_since is None or now - self.registering_since >= self.retry_after:
                self._register()
            return
        stale = [seq for seq, sent in self.unanswered.items() if now - sent >= self.retry_after]
        if stale:
            self.retries += 1
            self._send(sorted(self.unanswered))
            return
        if new_commands and len(self.unanswered) < self.window:
            count = self.rng.randint(1, self.window - len(self.unanswered))
            seqs = list(range(self.next_seq, self.next_seq + count))
            self.next_seq += count
            self._send(seqs)

    def _register(self) -> None:
        self.registering_since = self.cluster.now
        self.cluster.submit(
            encode_commands([encode_register(self.timeout_ms)]), callback=self._on_register
        )

    def _send(self, seqs: list[int]) -> None:
        """Send ``seqs`` in order: one entry each, or packed together."""
        now = self.cluster.now
        for seq in seqs:
            self.unanswered[seq] = now
        session, ack = self.session, self.ack
        assert session is not None
        groups = [seqs] if len(seqs) > 1 and self.rng.random() < 0.5 else [[s] for s in seqs]
        for group in groups:
            commands = [encode_command(session, s, ack, self.payload_of(s)) for s in group]
            self.cluster.submit(
                encode_commands(commands),
                callback=lambda response, g=group, sid=session: self._on_answer(response, g, sid),
            )

    # ------------------------------------------------------------------ answers

    def _lost(self) -> bool:
        if self.lose_reply and self.rng.random() < self.lose_reply:
            self.lost_replies += 1
            return True
        return False

    def _on_register(self, response: ClientResponse) -> None:
        if self._lost() or not response.ok or self.session is not None:
            return  # retried by step(); an extra session simply expires
        (result,) = response.result
        if session_error(result) is not None:
            return
        self.session = result["session"]
        self.sessions_opened += 1
        self.registering_since = None
        self.next_seq = 1
        self.unanswered.clear()
        self.answers.clear()

    def _on_answer(self, response: ClientResponse, seqs: list[int], session: int) -> None:
        if session != self.session or self._lost():
            return
        if not response.ok:
            for seq in seqs:
                if seq in self.unanswered:
                    self.unanswered[seq] = -self.retry_after  # retry at the next step
            return
        for seq, result in zip(seqs, response.result, strict=True):
            error = session_error(result)
            if error == UNKNOWN_SESSION:
                self.sessions_lost += 1
                self.session = None
                return
            if error == SEQUENCE_GAP:
                if seq in self.unanswered:
                    self.unanswered[seq] = -self.retry_after
                continue
            if error is not None:
                self.cluster.checker.fail(f"client {self.name}: command {seq} answered {result}")
            self.cluster.checker.on_session_ack(session, seq, result)
            if seq in self.unanswered:
                del self.unanswered[seq]
                self.answered += 1
            known = self.answers.setdefault(seq, result)
            if known != result:
                self.cluster.checker.fail(
                    f"client {self.name}: command {seq} answered {result}, before {known}"
                )
