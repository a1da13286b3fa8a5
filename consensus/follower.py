"""Follower: accepts the leader's entries, acknowledges them once durable, and starts an
election when the leader falls silent.

Theory of operation
-------------------
``AppendEntries`` is checked against the log at ``prev_log_index``. On a mismatch the follower
rejects at once with hints: when its log is too short, its last index (the leader jumps to
it); otherwise the conflicting term and the first index of that term in its log (the leader
skips the whole term). On a match it appends whatever is new, cutting a conflicting suffix
(never a committed entry), and records ``accepted``: the highest index known to agree with this
term's leader.

Acknowledgements only ever claim durable entries (``min(accepted, durable_index)``). When an
AppendEntries brought entries that are not yet durable, the answer is *owed* and sent when the
caller reports them persisted; one answer then covers every batch written together, so group
commit on the follower also batches its replies.

``InstallSnapshot`` chunks become ``ChunkWrite`` effects for the caller, who reports what it
holds (``RaftNode.snapshot_written``); a chunk of a snapshot that brings nothing beyond the
commit index is answered as done at once. A learner, or any node that is not a voter of its own
configuration, follows like any other but never starts an election.

The commit index follows the leader's, bounded by ``accepted`` (never past what is known to
match). Heartbeats carry no log check, only a commit index the leader knows this follower holds
(its match), and a round number that is echoed back for read confirmation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consensus.configuration import Membership, check_entries
from consensus.errors import RemoteProtocolError
from consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
)
from consensus.ready import Role
from consensus.snapshots import ChunkWrite

if TYPE_CHECKING:
    from consensus.node import RaftNode


class Follower:
    kind = Role.FOLLOWER
    __slots__ = ("accepted", "ack_owed", "acked", "election_deadline", "node", "round_seen")

    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self.election_deadline = node.now + node.random_election_timeout()
        self.accepted = 0  # highest index known to match the current leader's log
        self.acked = 0  # highest match index reported to the leader
        self.ack_owed = False
        self.round_seen = 0

    @property
    def deadline(self) -> int:
        return self.election_deadline

    def tick(self) -> None:
        node = self.node
        if node.now >= self.election_deadline:
            if node.config.is_voter:
                node.start_election("election timeout")
            else:
                # A learner, a removed server or a node waiting to be added: never campaigns.
                self.election_deadline = node.now + node.random_election_timeout()

    def config_changed(self) -> None:
        """Nothing to do: whether to campaign is decided when the timer fires."""

    def snapshot_installed(self, index: int, *, reset: bool) -> None:
        if reset:  # the log now ends at the snapshot: nothing after it is known to match
            self.accepted = self.acked = index
        else:
            self.accepted = max(self.accepted, index)

    def vote_granted(self) -> None:
        # Having just voted, give that candidate a full timeout to win before competing.
        self.election_deadline = self.node.now + self.node.random_election_timeout()

    def handle(self, msg: Any) -> None:
        if isinstance(msg, AppendEntries):
            self._on_append(msg)
        elif isinstance(msg, Heartbeat):
            self._on_heartbeat(msg)
        elif isinstance(msg, InstallSnapshot):
            self._on_install_snapshot(msg)
        elif (
            isinstance(msg, TimeoutNow)
            and msg.source == self.node.leader_id
            and self.node.config.is_voter
        ):
            self.node.become_candidate(
                f"leadership transfer from {msg.source}", pre_vote=False, transfer=True
            )
        # Other messages of this term (late vote or append answers from when this node was
        # candidate or leader in it) no longer concern a follower.

    # ------------------------------------------------------------------ leader contact

    def _hear_from_leader(self, leader: str) -> None:
        node = self.node
        if node.leader_id is None:
            node.leader_id = leader
        elif node.leader_id != leader:
            raise RemoteProtocolError(
                f"claims leadership of term {node.term}, which {node.leader_id} leads"
            )
        node.leader_contact_at = node.now
        self.election_deadline = node.now + node.random_election_timeout()

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        self._hear_from_leader(msg.source)
        node = self.node
        self.round_seen = max(self.round_seen, msg.round)
        # msg.commit is at most what the leader knows we durably hold in agreement with it.
        node.advance_commit(min(msg.commit, node.log.last_index))
        node.send(msg.source, HeartbeatResponse(node.term, node.id, self.round_seen))

    # ------------------------------------------------------------------ InstallSnapshot

    def _on_install_snapshot(self, msg: InstallSnapshot) -> None:
        self._hear_from_leader(msg.source)
        node = self.node
        self.round_seen = max(self.round_seen, msg.round)
        end = msg.offset + len(msg.data)
        if (
            msg.last_index < 1
            or msg.last_term > msg.term
            or msg.offset < 0
            or end > msg.size
            or (msg.done and end != msg.size)
        ):
            raise RemoteProtocolError(
                f"snapshot ({msg.last_index}, term {msg.last_term}) chunk {msg.offset}+"
                f"{len(msg.data)} of {msg.size} bytes (done={msg.done}) is inconsistent"
            )
        try:
            membership = Membership.decode(msg.membership)
        except ValueError as exc:
            raise RemoteProtocolError(f"snapshot configuration: {exc}") from exc
        if msg.last_index <= node.commit_index:
            # Everything it covers is committed here already: nothing to install.
            node.send(
                msg.source,
                InstallSnapshotResponse(
                    node.term,
                    node.id,
                    msg.last_index,
                    msg.last_term,
                    msg.offset,
                    msg.size,
                    True,
                    self.round_seen,
                ),
            )
            return
        node.queue_snapshot_write(
            ChunkWrite(
                msg.source,
                msg.last_index,
                msg.last_term,
                msg.size,
                msg.crc,
                msg.timestamp,
                membership,
                msg.offset,
                msg.data,
                msg.done,
                self.round_seen,
            )
        )

    # ------------------------------------------------------------------ AppendEntries

    def _on_append(self, msg: AppendEntries) -> None:
        self._hear_from_leader(msg.source)
        node = self.node
        log = node.log
        _check_entries(msg)
        self.round_seen = max(self.round_seen, msg.round)
        prev_index, prev_term, entries = msg.prev_log_index, msg.prev_log_term, msg.entries
        last_new = prev_index + len(entries)
        check = True
        if prev_index < node.commit_index:
            # Everything up to our commit index agrees with every leader's log (leader
            # completeness), so check from the commit index instead; this also works when
            # that prefix was compacted away. A message entirely below it brings nothing new.
            skip = node.commit_index - prev_index
            if skip >= len(entries):
                check, entries = False, []
            else:
                prev_index, prev_term = node.commit_index, entries[skip - 1].term
                entries = entries[skip:]
        if check and not log.matches(prev_index, prev_term):
            self._reject(msg, prev_index)
            return
        new_from = len(entries)
        for position, entry in enumerate(entries):
            if log.term_at(entry.index) != entry.term:
                new_from = position
                break
        if new_from < len(entries):
            fresh = entries[new_from:]
            if fresh[0].index <= log.last_index:
                node.supersede_pending_from(fresh[0].index)
            log.append(fresh, node.commit_index)
            node.appended(fresh)
        self.accepted = max(self.accepted, last_new)
        node.advance_commit(min(msg.leader_commit, self.accepted))
        if last_new > log.durable_index:
            self.ack_owed = True  # answered when persisted() covers them
        else:
            self._acknowledge(force=True)

    def _reject(self, msg: AppendEntries, prev_index: int) -> None:
        node = self.node
        log = node.log
        last = log.last_index
        if prev_index > last:
            conflict_index, conflict_term = last + 1, 0
        else:
            conflict_term = log.term_at(prev_index) or 0
            conflict_index = log.first_index_of_term(prev_index)
        node.send(
            msg.source,
            AppendEntriesResponse(
                node.term,
                node.id,
                False,
                0,
                msg.prev_log_index,
                conflict_index,
                conflict_term,
                last,
                self.round_seen,
            ),
        )

    def _acknowledge(self, *, force: bool) -> None:
        node = self.node
        durable = node.log.durable_index
        match = min(self.accepted, durable)
        if self.accepted <= durable:
            self.ack_owed = False
        if match > self.acked or force:
            self.acked = max(self.acked, match)
            assert node.leader_id is not None
            node.send(
                node.leader_id,
                AppendEntriesResponse(
                    node.term, node.id, True, match, 0, 0, 0, node.log.last_index, self.round_seen
                ),
            )

    def on_persisted(self) -> None:
        if self.ack_owed:
            self._acknowledge(force=False)


def _check_entries(msg: AppendEntries) -> None:
    """A correct leader sends contiguous entries right after prev, of terms <= its own."""
    expected = msg.prev_log_index + 1
    last_term = msg.prev_log_term
    for entry in msg.entries:
        if entry.index != expected:
            raise RemoteProtocolError(f"entry {entry.index} where {expected} was expected")
        if entry.term > msg.term or entry.term < last_term:
            raise RemoteProtocolError(f"entry {entry.index} has term {entry.term} out of order")
        last_term = entry.term
        expected += 1
    if msg.prev_log_index < 0 or msg.leader_commit < 0:
        raise RemoteProtocolError("negative index")
    check_entries(msg.entries)
