"""ReadTracker: how a leader proves it is still leader before serving reads (ReadIndex), and the
lease it earns as a by-product.

Theory of operation
-------------------
A leader numbers its *rounds*. It starts one at every heartbeat broadcast and whenever reads
are waiting with no round under way; every message it sends carries the current round, and
followers echo the highest round they saw. Round ``r`` is *confirmed* once a majority
(counting the leader) has echoed ``r`` or later: each of them still accepted this leader after
``r`` began, so no other leader could have committed anything before ``r`` began.

A read waits for the first round that starts *after* it arrived (an older round's answers
could predate a newer leader), takes the commit index at that moment as its read index, and
is released once the round is confirmed. Reads arriving together share one round. A new
leader starts no round until an entry of its own term is committed, since until then it
does not know the true commit index.

Lease: a confirmed round that began at time ``t`` also tells the leader that a majority will
ignore vote requests until ``t + election_timeout_min`` by their clocks (leader stickiness);
discounted by the allowed clock drift, the leader may serve reads without a round until then.
"""

from __future__ import annotations

import collections

# Rounds started but never confirmed (a leader cut off without check-quorum) are forgotten
# beyond this many, to bound memory; forgetting only delays a lease, never makes one unsafe.
MAX_TRACKED_ROUNDS = 1024


class ReadTracker:
    __slots__ = (
        "confirmed_round",
        "lease_duration",
        "lease_until",
        "pending",
        "round",
        "round_started",
        "waiting",
    )

    def __init__(self, lease_duration: int) -> None:
        self.lease_duration = lease_duration
        self.round = 0
        self.round_started: dict[int, int] = {}
        self.confirmed_round = 0
        self.lease_until: int | None = None
        self.waiting: list[str] = []  # request ids waiting for a round to start
        # rounds under way that reads wait on: (round, read index, request ids)
        self.pending: collections.deque[tuple[int, int, list[str]]] = collections.deque()

    def start_round(self, now: int, commit_index: int, reads_allowed: bool) -> int:
        """Begin a new round; the waiting reads join it when ``reads_allowed`` (the leader has
        committed an entry of its term, so ``commit_index`` is a valid read index)."""
        self.round += 1
        self.round_started[self.round] = now
        if len(self.round_started) > MAX_TRACKED_ROUNDS:
            del self.round_started[min(self.round_started)]
        if reads_allowed and self.waiting:
            self.pending.append((self.round, commit_index, self.waiting))
            self.waiting = []
        return self.round

    @property
    def wants_round(self) -> bool:
        """Reads are waiting and no read round is under way: start one now rather than at the
        next heartbeat. While one is under way, newcomers wait and then share the next."""
        return bool(self.waiting) and not self.pending

    def lease_valid(self, now: int) -> bool:
        return self.lease_until is not None and now < self.lease_until

    def confirm(
        self, peer_rounds: list[int], quorum: int, *, include_self: bool = True
    ) -> list[tuple[int, str]]:
        """Recompute the confirmed round from the rounds each voting peer echoed (the leader
        counts itself at the current round while it is a voter). Returns the reads now
        confirmed: (read index, id)."""
        rounds = sorted([self.round, *peer_rounds] if include_self else peer_rounds, reverse=True)
        if len(rounds) < quorum:
            return []
        confirmed = rounds[quorum - 1]
        if confirmed <= self.confirmed_round:
            return []
        self.confirmed_round = confirmed
        started = self.round_started.get(confirmed)
        if started is not None:
            self.lease_until = started + self.lease_duration
        for old in [r for r in self.round_started if r < confirmed]:
            del self.round_started[old]
        released: list[tuple[int, str]] = []
        while self.pending and self.pending[0][0] <= confirmed:
            _, read_index, ids = self.pending.popleft()
            released.extend((read_index, request_id) for request_id in ids)
        return released

    def abandon(self) -> list[str]:
        """The leader is stepping down: every read not yet confirmed must be refused."""
        ids = list(self.waiting)
        for _, _, waiting in self.pending:
            ids.extend(waiting)
        self.waiting = []
        self.pending.clear()
        return ids
