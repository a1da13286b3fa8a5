"""Joining a cluster through seed nodes: retries with exponential back-off and jitter. Sans-IO.

Theory of operation
-------------------
A starting node sends ``Join`` to every seed at once (any member that is up accepts it, so the
first to answer wins) and then again after a delay that doubles per attempt up to
``join_backoff_max``, with "equal jitter": half the delay is fixed, half is drawn from the
``random.Random`` handed in, so restarted nodes do not retry in lock-step and a seed fixes the
whole schedule in tests.

A welcome is not yet membership: the node is ``joining`` until some member has seen it answer
a ping and gossiped it ``up``. Until then the process keeps retrying, and adds the members the
welcome named to its targets, so a seed that dies right after welcoming cannot strand it.

Cluster formation follows Akka's rule. With no seeds, or only itself, a node forms a new
cluster at once. The *first* seed tries the other seeds for ``seed_timeout`` and forms a new
cluster only if none of them answers, so restarting it does not split an existing cluster.
Any other node, seed or not, only ever joins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from membership.config import MembershipConfig, membership_path
from membership.effects import Effect, Log, Send
from membership.messages import Join

if TYPE_CHECKING:  # the caller hands in the source of chance; this module never makes one
    import random


class JoinProcess:
    def __init__(
        self,
        node: str,
        incarnation: int,
        config: MembershipConfig,
        rng: random.Random,
        now: float,
    ) -> None:
        self.node = node
        self.incarnation = incarnation
        self.config = config
        self.rng = rng
        seeds = list(config.seeds)
        self.targets: list[str] = [s for s in seeds if s != node]
        self.form_at: float | None
        if not self.targets:
            self.form_at = now
        elif seeds[0] == node:
            self.form_at = now + config.seed_timeout
        else:
            self.form_at = None
        self.attempt = 0
        self.next_attempt_at = now
        self.welcomed_by: str | None = None

    def should_form(self, now: float) -> bool:
        return self.welcomed_by is None and self.form_at is not None and now >= self.form_at

    def welcomed(self, sender: str, members: list[str]) -> None:
        if self.welcomed_by is None:
            self.welcomed_by = sender
        for member in members:
            if member != self.node and member not in self.targets:
                self.targets.append(member)

    def backoff(self, attempt: int) -> float:
        """The delay after attempt number `attempt` (1-based)."""
        base = min(
            self.config.join_backoff_max,
            self.config.join_backoff_initial * 2.0 ** min(attempt - 1, 30),
        )
        return base / 2 + self.rng.uniform(0.0, base / 2)

    def due(self, now: float) -> list[Effect]:
        """The Join messages to send now, if an attempt is due."""
        if now < self.next_attempt_at or not self.targets:
            return []
        self.attempt += 1
        delay = self.backoff(self.attempt)
        self.next_attempt_at = now + delay
        effects: list[Effect] = [
            Send(membership_path(target), Join(self.node, self.incarnation))
            for target in self.targets
        ]
        effects.append(
            Log(
                "joining via seeds" if self.welcomed_by is None else "waiting to be seen up",
                "info" if self.attempt <= 3 or self.attempt % 10 == 0 else "debug",
                {
                    "attempt": self.attempt,
                    "targets": len(self.targets),
                    "retry_in_s": round(delay, 3),
                },
            )
        )
        return effects
