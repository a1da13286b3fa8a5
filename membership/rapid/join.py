"""Joining a Rapid cluster, the joiner's side: two phases with retries. Sans-IO.

Theory of operation
-------------------
1. *Gateway.* The joiner sends ``PreJoin`` to a seed (any member). The seed answers with a
   ``JoinGateway``: its configuration (epoch and id) and the joiner's K expected observers in
   it, the members that will observe the joiner once it is in.
2. *Request.* The joiner sends one ``JoinRequest`` to each distinct expected observer, naming
   the configuration and the rings on which that member is its observer. Each of them, a
   *gatekeeper*, reports the joiner (an UP alert) through the cut detector, so joins are
   batched exactly like failures: every joiner that reaches H reports before the cut settles
   enters in the same view change. When the view change is decided, the gatekeepers send the
   joiner the new configuration (a ``ViewSnapshot``); the first one makes it a member.

A seed admits joiners only while no view change is in progress, so a steady stream of
joiners comes in as batches, one per view change, instead of keeping the cut detector forever
unclear. Rapid answers a joiner that asks during a view change with "retry later"; joiners
then hit the short gaps between view changes only by chance and a burst ends in a tail of
small view changes. Here the seed *holds* such joiners (up to ``join_hold_max``, then
``JoinRetry``) and sends all of them their gateway as the view change ends, so they enter
together with the next one. If the configuration changed before the joiner got in, a
gatekeeper answers ``JoinRetry`` and the joiner starts over at phase 1. Lost messages are
covered by timeouts: no gateway within
``join_timeout`` asks the next seed; no view within ``join_timeout`` resends the requests (a
gatekeeper that already reported the joiner reports nothing new: masks are idempotent) and
after ``join_phase2_attempts`` starts over. Back-off doubles per attempt up to
``join_backoff_max`` with equal jitter from the ``random.Random`` handed in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from membership.rapid.messages import JoinGateway, JoinRequest, PreJoin

if TYPE_CHECKING:
    import random

    from membership.rapid.config import RapidConfig


class JoinProcess:
    def __init__(
        self,
        node: str,
        incarnation: int,
        seeds: tuple[str, ...],
        cfg: RapidConfig,
        rng: random.Random,
    ) -> None:
        if not seeds:
            raise ValueError("joining needs at least one seed")
        self.node = node
        self.incarnation = incarnation
        self.seeds = seeds
        self.cfg = cfg
        self.rng = rng
        self.phase = 1
        self.attempts = 0  # phase-1 attempts since the last gateway
        self.requests_sent = 0  # phase-2 sends for the current gateway
        self.restarts = 0
        self.deadline: float | None = None
        self._requests: list[tuple[str, JoinRequest]] = []
        self.gateway_epoch: int | None = None

    def start(self, now: float) -> list[tuple[str, Any]]:
        self.phase = 1
        self.attempts = 0
        self.deadline = now  # the first PreJoin goes out at once
        return self.due(now)

    def _backoff(self, attempt: int) -> float:
        base = min(self.cfg.join_backoff_max, self.cfg.join_timeout * 2.0 ** min(attempt, 20))
        return base / 2 + self.rng.uniform(0.0, base / 2)

    def due(self, now: float) -> list[tuple[str, Any]]:
        """What to (re)send now that the deadline passed."""
        if self.deadline is None or now < self.deadline:
            return []
        if self.phase == 2 and self.requests_sent < self.cfg.join_phase2_attempts:
            self.requests_sent += 1
            self.deadline = now + self.cfg.join_timeout
            return list(self._requests)
        if self.phase == 2:
            self.restarts += 1
        self.phase = 1
        seed = self.seeds[self.attempts % len(self.seeds)]
        self.attempts += 1
        self.deadline = now + self._backoff(self.attempts - 1)
        return [(seed, PreJoin(self.node, self.incarnation))]

    def on_gateway(self, gateway: JoinGateway, now: float) -> list[tuple[str, Any]]:
        if self.phase != 1 or not gateway.observers:
            return []
        rings: dict[str, list[int]] = {}
        for r, observer in enumerate(gateway.observers):
            rings.setdefault(observer, []).append(r)
        self._requests = [
            (
                observer,
                JoinRequest(
                    self.node, self.incarnation, gateway.epoch, gateway.config_id, tuple(rs)
                ),
            )
            for observer, rs in rings.items()
        ]
        self.phase = 2
        self.gateway_epoch = gateway.epoch
        self.requests_sent = 1
        self.attempts = 0
        self.deadline = now + self.cfg.join_timeout
        return list(self._requests)

    def on_retry(self, epoch: int, now: float) -> list[tuple[str, Any]]:
        """A seed says a view change is in progress (phase 1), or a gatekeeper says the
        configuration moved on without us (phase 2): try again a little later."""
        if self.phase == 1:
            # The seed admits joiners only between view changes; those that wait come in
            # together with the next batch.
            self.deadline = now + self.rng.uniform(0.5, 1.5) * self.cfg.join_timeout / 4
            return []
        if self.gateway_epoch is not None and epoch <= self.gateway_epoch:
            return []
        self.phase = 1
        self.restarts += 1
        self.deadline = now + self.rng.uniform(0.0, self.cfg.join_timeout / 4)
        return []
