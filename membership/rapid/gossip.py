"""Dissemination: push gossip of aggregated reports and votes within one configuration. Sans-IO.

Theory of operation
-------------------
Rapid needs every member to see every alert and, for the fast round, every vote. Sending each
one to each member costs n messages per alert and n^2 per view change (the 10,000-node Akka
experiment drowned in exactly that). Like the paper's implementation, coterie spreads them by
gossip and *aggregates* on the way:

* reports are one K-bit ring mask per subject, merged by bitwise or;
* votes are one voter bitset per proposal (bit i: member i of the configuration), merged by
  bitwise or, so a message carries any number of votes at the cost of n/8 bytes.

An entry becomes *hot* when it changes here (a local alert, a local vote, or a merge that
added bits) and stays hot for ``gossip_rounds`` rounds. Every ``gossip_interval``, while
something is hot, the member sends the current value of its hot entries to ``gossip_fanout``
members picked at random from the configuration. Merges are idempotent and commutative, so
duplicates and reordering are harmless and a lost message only costs time: every member that
learns a change pushes it on, so news reaches all n members in O(log n) rounds with high
probability. A quiet cluster sends no gossip at all.

A member that still misses the last bits (bad luck, a lossy link) is caught up by
anti-entropy once the others decide (:mod:`membership.rapid.view`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from membership.rapid.messages import Gossip, VoteSet
from membership.rapid.topology import Member

if TYPE_CHECKING:
    import random

    from membership.rapid.config import RapidConfig
    from membership.rapid.consensus import Consensus
    from membership.rapid.cut_detector import CutDetector
    from membership.rapid.topology import Configuration


def bits_to_bytes(bits: int, n: int) -> bytes:
    return bits.to_bytes((n + 7) // 8, "little")


def bytes_to_bits(data: bytes) -> int:
    return int.from_bytes(data, "little")


class Gossiper:
    def __init__(self, cfg: RapidConfig) -> None:
        self.rounds = cfg.gossip_rounds
        self.fanout = cfg.gossip_fanout
        self.interval = cfg.gossip_interval
        self.hot_reports: dict[Member, int] = {}
        self.hot_votes: dict[str, int] = {}
        self.next_at: float | None = None
        self._last_round: float | None = None
        self.messages_sent = 0

    def reset(self) -> None:
        self.hot_reports.clear()
        self.hot_votes.clear()
        self.next_at = None
        self._last_round = None

    def _schedule(self, now: float) -> None:
        # News goes out at once unless a round went out less than an interval ago: the
        # interval paces rounds, so a stream of merges cannot turn into a stream of pushes.
        if self.next_at is None:
            last = self._last_round
            self.next_at = (
                now if last is None or now - last >= self.interval else last + self.interval
            )

    def touch_report(self, subject: Member, now: float) -> None:
        self.hot_reports[subject] = self.rounds
        self._schedule(now)

    def touch_vote(self, pid: str, now: float) -> None:
        self.hot_votes[pid] = self.rounds
        self._schedule(now)

    def round(
        self,
        me: str,
        config: Configuration,
        detector: CutDetector,
        consensus: Consensus,
        rng: random.Random,
        now: float,
    ) -> tuple[Gossip | None, list[str]]:
        """The message of this round and whom to send it to (the caller checked it is due)."""
        reports = tuple(
            (subject[0], subject[1], detector.reports[subject]) for subject in self.hot_reports
        )
        n = config.size
        votes = tuple(
            VoteSet(consensus.proposals[pid], bits_to_bytes(consensus.votes[pid], n))
            for pid in self.hot_votes
        )
        for hot in (self.hot_reports, self.hot_votes):
            for key in list(hot):
                left = hot[key] - 1
                if left:
                    hot[key] = left  # type: ignore[index]
                else:
                    del hot[key]  # type: ignore[arg-type]
        self._last_round = now
        self.next_at = now + self.interval if (self.hot_reports or self.hot_votes) else None
        if (not reports and not votes) or n < 2:
            return None, []
        nodes = config.nodes
        if n <= self.fanout + 1:
            targets = [node for node in nodes if node != me]
        else:
            targets = []
            while len(targets) < self.fanout:
                node = nodes[rng.randrange(n)]
                if node != me and node not in targets:
                    targets.append(node)
        self.messages_sent += len(targets)
        return Gossip(me, config.epoch, config.id, reports, votes), targets
