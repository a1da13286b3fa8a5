"""Agreement on the next view: a Fast Paxos fast round with a classic Paxos fallback. Sans-IO.

Theory of operation
-------------------
One :class:`Consensus` instance decides the single view change out of one configuration of n
members. Ranks are ``(round, member index + 1)`` tuples compared lexicographically; round 1 is
the only fast round, rounds 2 and up are classic and owned by one coordinator each.

*Fast round.* A member whose cut detector produces a proposal votes for it, once: this is
accepting the proposal at the fast rank ``(1, 0)``. Votes are not sent one by one to
everyone (n^2 messages); they are aggregated as one voter bitset per proposal and spread by
gossip (:mod:`membership.rapid.gossip`), merging by union. Any member that sees a proposal
with a **fast quorum** of ``n - floor((n-1)/4)`` votes decides it. Since the cut detector
makes almost every member propose the same cut, this is one step for everyone.

*Classic fallback.* A member that voted or saw votes and has not decided after
``fast_round_timeout`` plus a random delay (mean ``classic_jitter_per_member * n``, so about
one coordinator per that many seconds across the cluster) starts a classic round: Phase 1a to
every member; acceptors promise the rank and return what they accepted (``vrnd``, ``vval``);
with a majority of promises the coordinator picks a value by Fast Paxos' rule:

* the highest ``vrnd`` is a classic rank: its value (one coordinator per rank, so unique);
* the highest is the fast rank: a value v was possibly chosen only if v got a fast quorum, so
  at least ``|Q| - (n - fast quorum)`` of the promises carry it; at most one value can, since
  a majority Q and two such counts cannot fit; if one does, it must be picked;
* otherwise any value is safe: the most voted one (ties broken by id), or if no member
  accepted anything, the coordinator's own proposal.

Phase 2a goes to every member, acceptors answer Phase 2b to the coordinator, and with a
majority the coordinator decides and tells everyone (``Decided``). A member that accepted or
promised a classic rank never votes in the fast round afterwards. When the votes already cast
leave no proposal able to reach a fast quorum, members skip the fixed timeout and only wait
the random delay.

Messages to send come back as ``(recipient node, message)`` pairs; the coordinator's own
acceptor is handled in place.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from membership.errors import ProtocolViolation
from membership.rapid.messages import Decided, Phase1a, Phase1b, Phase2a, Phase2b, Proposal
from membership.rapid.topology import Configuration, cut_digest

if TYPE_CHECKING:
    import random

    from membership.rapid.config import RapidConfig

Rank = tuple[int, int]
NO_RANK: Rank = (0, 0)
FAST_RANK: Rank = (1, 0)
Outgoing = list[tuple[str, Any]]


def fast_quorum(n: int) -> int:
    return n - (n - 1) // 4


def majority(n: int) -> int:
    return n // 2 + 1


def make_proposal(changes: tuple[tuple[str, int], ...]) -> Proposal:
    """A proposal for `changes` (sorted here), with its id."""
    ordered = tuple(sorted(changes))
    return Proposal(cut_digest(ordered), ordered)


class Consensus:
    def __init__(
        self, config: Configuration, me: str, cfg: RapidConfig, rng: random.Random
    ) -> None:
        self.config = config
        self.n = config.size
        self.me = me
        self.cfg = cfg
        self.rng = rng
        self.index = config.index_of(me)  # None: not a member, may learn but not vote
        self.fast_quorum = fast_quorum(self.n)
        self.proposals: dict[str, Proposal] = {}
        self.votes: dict[str, int] = {}  # proposal id -> voter bitset
        self.voters = 0  # everyone who voted in the fast round, whatever for
        self.my_vote: str | None = None
        self.decision: Proposal | None = None
        self.decided_via = ""
        # acceptor
        self.rnd: Rank = NO_RANK
        self.vrnd: Rank = NO_RANK
        self.vval: Proposal | None = None
        # coordinator
        self.crnd: Rank = NO_RANK
        self.cval: Proposal | None = None
        self._promises: dict[int, tuple[Rank, Proposal | None]] = {}
        self._accepts: set[int] = set()
        self._fallback: Proposal | None = None
        self._highest_round = 1
        self.classic_at: float | None = None
        self.classic_rounds = 0

    # ------------------------------------------------------------------ fast round

    def learn(self, proposal: Proposal) -> Proposal:
        """The canonical object for `proposal`; a new one's id is checked against its cut."""
        known = self.proposals.get(proposal.pid)
        if known is not None:
            return known
        if cut_digest(proposal.changes) != proposal.pid or list(proposal.changes) != sorted(
            proposal.changes
        ):
            raise ProtocolViolation(f"proposal {proposal.pid} does not match its cut")
        if not proposal.changes:
            raise ProtocolViolation("an empty proposal")
        self.proposals[proposal.pid] = proposal
        return proposal

    def vote(self, proposal: Proposal, now: float) -> bool:
        """Cast this member's one fast-round vote; False if it may not (or already did)."""
        if self.index is None or self.my_vote is not None or self.decision is not None:
            return False
        if self.rnd > FAST_RANK:
            return False  # promised a classic round: the fast round is over for us
        proposal = self.learn(proposal)
        self.my_vote = proposal.pid
        self.rnd = self.vrnd = FAST_RANK
        self.vval = proposal
        self.merge(proposal, 1 << self.index, now)
        return True

    def merge(self, proposal: Proposal, bits: int, now: float) -> bool:
        """Add voters for `proposal` (already learned); True if anything was new."""
        if bits <= 0 or bits >> self.n:
            raise ProtocolViolation(f"voter bitset out of range for {self.n} members")
        pid = proposal.pid
        old = self.votes.get(pid, 0)
        new = old | bits
        if new == old:
            return False
        self.votes[pid] = new
        self.voters |= bits
        if self.decision is not None:
            return True
        if new.bit_count() >= self.fast_quorum:
            self._decide(self.proposals[pid], "fast")
            return True
        self._arm(now)
        if self._hopeless():
            # Nobody can reach a fast quorum any more: only the random delay remains.
            soon = now + self._jitter()
            if self.classic_at is None or soon < self.classic_at:
                self.classic_at = soon
        return True

    def _hopeless(self) -> bool:
        cast = self.voters.bit_count()
        best = max(bits.bit_count() for bits in self.votes.values())
        return best + (self.n - cast) < self.fast_quorum

    def _jitter(self) -> float:
        return self.rng.expovariate(1.0 / (self.cfg.classic_jitter_per_member * self.n))

    def _arm(self, now: float) -> None:
        if self.classic_at is None and self.index is not None:
            self.classic_at = now + self.cfg.fast_round_timeout + self._jitter()

    def _decide(self, proposal: Proposal, via: str) -> None:
        if self.decision is None:
            self.decision = proposal
            self.decided_via = via
            self.classic_at = None

    # ------------------------------------------------------------------ classic rounds

    def start_classic(self, now: float, fallback: Proposal | None) -> Outgoing:
        """Coordinate a new classic round (the classic timer fired)."""
        self.classic_at = None
        if self.index is None or self.decision is not None:
            return []
        self._highest_round = max(self._highest_round, self.crnd[0], self.rnd[0]) + 1
        self.crnd = (self._highest_round, self.index + 1)
        self.cval = None
        self._promises = {}
        self._accepts = set()
        self._fallback = fallback
        self.classic_rounds += 1
        # If this round does not decide, try again (higher) after a while.
        self.classic_at = now + self.cfg.classic_retry + self.rng.uniform(0, self.cfg.classic_retry)
        message = Phase1a(self.me, self.config.epoch, self.config.id, self.crnd)
        out: Outgoing = [(node, message) for node in self.config.nodes if node != self.me]
        out.extend(self.on_phase1a(message, now, local=True))
        return out

    def on_phase1a(self, m: Phase1a, now: float, local: bool = False) -> Outgoing:
        rank = tuple(m.rank)
        self._highest_round = max(self._highest_round, rank[0])
        if self.index is None:
            return []
        if rank > self.rnd:
            self.rnd = rank  # type: ignore[assignment]
            reply = Phase1b(
                self.me, self.config.epoch, self.config.id, rank, True, self.vrnd, self.vval
            )
            if not local and self.crnd < rank and self.classic_at is not None:
                # Someone else coordinates a higher round: give it time before competing.
                self.classic_at = max(self.classic_at, now + self.cfg.classic_retry)
        else:
            reply = Phase1b(
                self.me, self.config.epoch, self.config.id, self.rnd, False, NO_RANK, None
            )
        if local:
            return self.on_phase1b(reply, now)
        return [(m.sender, reply)]

    def on_phase1b(self, m: Phase1b, now: float) -> Outgoing:
        sender = self.config.index_of(m.sender)
        if sender is None or self.index is None:
            return []
        rank = tuple(m.rank)
        if not m.promised:
            self._highest_round = max(self._highest_round, rank[0])
            return []
        if rank != self.crnd or self.cval is not None:
            return []
        vval = self.learn(m.vval) if m.vval is not None else None
        self._promises[sender] = (tuple(m.vrnd), vval)  # type: ignore[assignment]
        if len(self._promises) < majority(self.n):
            return []
        value = self._choose() or self._fallback
        if value is None:
            return []  # nobody accepted anything yet, and we have nothing to propose
        self.cval = self.learn(value)
        message = Phase2a(self.me, self.config.epoch, self.config.id, self.crnd, self.cval)
        out: Outgoing = [(node, message) for node in self.config.nodes if node != self.me]
        out.extend(self.on_phase2a(message, now, local=True))
        return out

    def _choose(self) -> Proposal | None:
        top = max(vrnd for vrnd, _ in self._promises.values())
        if top == NO_RANK:
            return None
        values = [v for vrnd, v in self._promises.values() if vrnd == top and v is not None]
        if top != FAST_RANK:
            return values[0]
        counts = Counter(v.pid for v in values)
        slack = self.n - self.fast_quorum
        needed = len(self._promises) - slack
        for pid, count in counts.items():
            if count >= needed:
                return self.proposals[pid]  # possibly chosen in the fast round: must keep it
        pid = max(counts, key=lambda p: (counts[p], p))
        return self.proposals[pid]

    def on_phase2a(self, m: Phase2a, now: float, local: bool = False) -> Outgoing:
        rank = tuple(m.rank)
        self._highest_round = max(self._highest_round, rank[0])
        if self.index is None or rank < self.rnd or rank == self.vrnd:
            return []
        value = self.learn(m.value)
        self.rnd = self.vrnd = rank  # type: ignore[assignment]
        self.vval = value
        reply = Phase2b(self.me, self.config.epoch, self.config.id, rank)
        if local:
            return self.on_phase2b(reply, now)
        return [(m.sender, reply)]

    def on_phase2b(self, m: Phase2b, now: float) -> Outgoing:
        sender = self.config.index_of(m.sender)
        if sender is None or tuple(m.rank) != self.crnd or self.cval is None:
            return []
        if self.decision is not None:
            return []
        self._accepts.add(sender)
        if len(self._accepts) < majority(self.n):
            return []
        value = self.cval
        self._decide(value, "classic")
        message = Decided(self.me, self.config.epoch, self.config.id, value)
        return [(node, message) for node in self.config.nodes if node != self.me]

    def on_decided(self, m: Decided) -> None:
        self._decide(self.learn(m.value), "decided")
