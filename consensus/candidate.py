"""Candidate: collects pre-votes, then votes, and becomes leader with a majority.

Theory of operation
-------------------
A candidate runs in two phases. In the *pre-vote* phase its term is unchanged: it asks every
voter whether it would vote for it in ``term + 1`` (log at least as up to date, no live leader
heard from recently). Only with a majority of pre-votes does it become a real candidate: bump
the term, vote for itself (persisted before any request leaves, per the Ready contract) and
send ``RequestVote``. A majority of votes makes it leader; a majority of refusals, or an
AppendEntries/Heartbeat from a leader of its term, makes it a follower again; the election
timer running out starts over (with a freshly randomized timeout).

With pre-vote off (``config.pre_vote=False``), or when the current leader hands over
leadership (``TimeoutNow``), the candidate skips the pre-vote phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consensus.messages import (
    AppendEntries,
    Heartbeat,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
)
from consensus.ready import Role

if TYPE_CHECKING:
    from consensus.node import RaftNode


class Candidate:
    kind = Role.CANDIDATE
    __slots__ = ("election_deadline", "granted", "node", "pre_vote", "refused", "transfer")

    def __init__(self, node: RaftNode, *, pre_vote: bool, transfer: bool) -> None:
        self.node = node
        self.pre_vote = pre_vote
        self.transfer = transfer
        self.granted: set[str] = {node.id}
        self.refused: set[str] = set()
        self.election_deadline = node.now + node.random_election_timeout()

    @property
    def deadline(self) -> int:
        return self.election_deadline

    @property
    def campaign_term(self) -> int:
        """The term this candidate is asking for."""
        return self.node.term + 1 if self.pre_vote else self.node.term

    def start(self) -> None:
        node = self.node
        if self._count():
            return
        log = node.log
        for peer in node.config.peers:
            if self.pre_vote:
                request: Any = PreVote(self.campaign_term, node.id, log.last_index, log.last_term)
            else:
                request = RequestVote(
                    node.term, node.id, log.last_index, log.last_term, self.transfer
                )
            node.send(peer, request)

    def tick(self) -> None:
        if self.node.now >= self.election_deadline:
            self.node.start_election(f"election for term {self.campaign_term} timed out")

    def vote_granted(self) -> None:
        """Unreachable in practice (a candidate has voted for itself); kept for the role API."""

    def on_persisted(self) -> None:
        """Candidates acknowledge nothing."""

    def config_changed(self) -> None:
        """Unreachable: a candidate appends nothing."""

    def snapshot_installed(self, index: int, *, reset: bool) -> None:
        """Unreachable: only followers install snapshots."""

    def handle(self, msg: Any) -> None:
        node = self.node
        if isinstance(msg, AppendEntries | Heartbeat):
            # A leader of our term exists: it won. Follow it and let the follower handle this.
            node.become_follower(node.term, msg.source, f"{msg.source} leads term {node.term}")
            node.role.handle(msg)
        elif isinstance(msg, PreVoteResponse):
            if self.pre_vote and (not msg.granted or msg.term == self.campaign_term):
                self._record(msg.source, msg.granted)
        elif isinstance(msg, RequestVoteResponse) and not self.pre_vote:
            self._record(msg.source, msg.granted)

    def _record(self, voter: str, granted: bool) -> None:
        if voter not in self.node.config.voters:
            return
        (self.granted if granted else self.refused).add(voter)
        self._count()

    def _count(self) -> bool:
        """Act on the tally; True if the election is decided."""
        node = self.node
        quorum = node.config.quorum
        if len(self.granted) >= quorum:
            if self.pre_vote:
                node.become_candidate(
                    f"won pre-vote for term {self.campaign_term} with {sorted(self.granted)}",
                    pre_vote=False,
                )
            else:
                node.become_leader(f"won election with votes {sorted(self.granted)}")
            return True
        if len(self.refused) >= quorum:
            what = "pre-vote" if self.pre_vote else "election"
            node.become_follower(
                node.term,
                None,
                f"lost {what} for term {self.campaign_term}: refused by {sorted(self.refused)}",
            )
            return True
        return False
