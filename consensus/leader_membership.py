"""The leader's membership duties: accept or refuse a change, promote caught-up learners,
track members as configurations come and go, and step down once its own removal commits.

A mixin of :class:`~consensus.leader.Leader` (which holds the state it uses); see the leader
module's theory of operation and ``consensus.configuration``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consensus.configuration import (
    CONFIGURATION,
    InvalidChange,
    Membership,
    MembershipChange,
    PromoteLearner,
    RemoveServer,
    apply_change,
)
from consensus.messages import (
    ERROR_CONFIG_IN_PROGRESS,
    ERROR_INVALID_CHANGE,
    ERROR_LEARNER_BEHIND,
    ERROR_OUTCOME_UNKNOWN,
    ERROR_TRANSFERRING,
    AppendEntries,
    TimeoutNow,
)
from consensus.progress import Progress

if TYPE_CHECKING:
    from collections.abc import Sequence

    from consensus.messages import Entry
    from consensus.node import RaftNode
    from consensus.reads import ReadTracker


class MembershipDuties:
    __slots__ = ()
    if TYPE_CHECKING:
        node: RaftNode
        progress: dict[str, Progress]
        reads: ReadTracker
        committed_in_term: bool
        transfer_target: str | None

        def _append(self, items: Sequence[tuple[int, bytes]]) -> list[Entry]: ...
        def broadcast_append(self) -> None: ...
        def transfer(self, target: str) -> None: ...

    def change_membership(self, request_id: str, change: MembershipChange) -> None:
        node = self.node
        if self.transfer_target is not None:
            node.reply(request_id, ERROR_TRANSFERRING, hint=self.transfer_target)
            return
        if not self.committed_in_term or node.configs.uncommitted(node.commit_index):
            node.reply(request_id, ERROR_CONFIG_IN_PROGRESS)
            return
        try:
            new = apply_change(node.membership, change)
        except InvalidChange as exc:
            node.reply(request_id, ERROR_INVALID_CHANGE, detail=str(exc))
            return
        if isinstance(change, PromoteLearner) and not self._caught_up(change.node):
            node.reply(request_id, ERROR_LEARNER_BEHIND)
            return
        if isinstance(change, RemoveServer) and change.node == node.id and change.transfer_first:
            successor = self._successor(new)
            if successor is not None:
                self.transfer(successor)
                node.reply(request_id, ERROR_TRANSFERRING, hint=successor)
                return
        self._append_configuration(new, request_id)

    def _append_configuration(self, new: Membership, request_id: str | None) -> None:
        node = self.node
        (entry,) = self._append([(CONFIGURATION, new.encode())])
        if request_id is not None:
            node.pending.append((entry.index, node.term, request_id))
        self.broadcast_append()

    def _caught_up(self, peer: str) -> bool:
        progress = self.progress.get(peer)
        return (
            progress is not None
            and progress.match >= self.node.log.last_index - self.node.config.promote_lag
        )

    def _successor(self, membership: Membership) -> str | None:
        """The voter of ``membership`` (other than us) with the longest matching log."""
        candidates = [v for v in membership.voters if v != self.node.id and v in self.progress]
        if not candidates:
            return None
        return max(candidates, key=lambda v: (self.progress[v].match, v))

    def _maybe_promote(self) -> None:
        node = self.node
        if (
            not node.config.auto_promote
            or self.transfer_target is not None
            or not self.committed_in_term
            or node.configs.uncommitted(node.commit_index)
        ):
            return
        for learner in node.config.learners:
            if self._caught_up(learner):
                self._append_configuration(
                    apply_change(node.membership, PromoteLearner(learner)), None
                )
                return

    def config_changed(self) -> None:
        """The configuration in effect changed (we appended it): track new members; members
        removed keep their progress until the change commits, so they can learn of it."""
        node = self.node
        config = node.config
        next_index = node.log.last_index + 1
        for peer in config.replicas:
            if peer not in self.progress:
                self.progress[peer] = Progress(next_index, config.max_inflight, node.now)
        # A lease rests on a majority of the configuration that earned it.
        self.reads.lease_until = None

    def _configuration_committed(self) -> None:
        node = self.node
        members = set(node.config.voters) | set(node.config.learners)
        for peer in [p for p in self.progress if p not in members]:
            self._parting_word(peer)
            del self.progress[peer]
        if node.id not in node.config.voters:
            self._step_down_removed()
            return
        self._maybe_promote()

    def _parting_word(self, peer: str) -> None:
        """A last AppendEntries to a server whose removal just committed: the entries it
        lacks up to that configuration (at most one message) and the commit index. Nobody
        else would tell it the removal committed (it leaves the leader's progress now), and
        its shell waits for that before it stops its Raft. Its answer is ignored."""
        node = self.node
        config = node.config
        latest = node.configs.latest_index
        prev = min(self.progress[peer].match, latest)
        prev_term = node.log.term_at(prev)
        if prev_term is None:
            return  # compacted past it: it would need a snapshot, and is no member any more
        entries = node.log.slice(
            prev + 1, latest + 1, config.max_entries_per_message, config.max_bytes_per_message
        )
        if prev + len(entries) < latest:
            return  # too far behind for one message; it stays a non-voter that cannot campaign
        node.send(
            peer,
            AppendEntries(
                node.term, node.id, prev, prev_term, entries, node.commit_index, self.reads.round
            ),
        )

    def _step_down_removed(self) -> None:
        """We removed ourselves and that is committed: hand over and step down."""
        node = self.node
        successor = self._successor(node.membership)
        if successor is not None and self.progress[successor].match >= node.configs.latest_index:
            node.send(successor, TimeoutNow(node.term, node.id))
        # Entries after the change may still commit under the next leader; we will not hear.
        while node.pending and node.pending[-1][0] > node.commit_index:
            node.reply(node.pending.pop()[2], ERROR_OUTCOME_UNKNOWN)
        node.become_follower(node.term, None, "removed from the configuration")
