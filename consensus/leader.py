"""Leader: appends client commands, replicates them with batching and pipelining, commits by
majority, confirms reads, watches for losing its quorum and hands leadership over on request.

Theory of operation
-------------------
* **Start of term.** The new leader appends a no-op of its term at once: entries of earlier
  terms can only be committed indirectly, through an entry of the current term (the Raft
  paper's figure 8), and until that no-op commits the leader does not know the true commit
  index, so it serves no reads.
* **Replication.** Each follower has a :class:`~consensus.progress.Progress`. Whenever there is
  something to send (new proposals, a freed inflight slot, an answered probe) the leader sends
  at once, in batches of at most ``max_entries_per_message`` / ``max_bytes_per_message``;
  nothing waits for a timer. The leader's own entries go to its disk in parallel (the Ready's
  ``entries``), and it counts itself in a majority only up to its ``durable_index``.
* **Commit.** The highest index durable on a majority is committed if it holds an entry of the
  current term; earlier-term entries are committed with it, never by counting replicas alone.
* **Loss recovery.** A rejection resyncs the follower through probing with conflict hints. A
  batch lost with nothing after it would draw no rejection, so every heartbeat answer from a
  follower that is behind triggers a send: the next batch or, with everything sent, an empty
  AppendEntries at the end of what was sent, which the follower rejects if a batch went missing.
* **Heartbeats** go out every ``heartbeat_interval``, each starting a new read round.
* **Check-quorum.** A leader that has not heard from a majority (itself included) within
  ``election_timeout_max`` steps down. Each follower counts as heard at the start of the term,
  so a fresh leader gets a full window rather than being judged by an older term's silence.
* **Leadership transfer.** Proposals (and membership changes) are refused with a retryable
  error, the target is caught up, then sent ``TimeoutNow``; the attempt is abandoned after
  ``election_timeout_max``.
* **Snapshots.** A follower whose next entry is compacted away gets the latest snapshot in
  chunks (``consensus.snapshots``): a probe, then one chunk in flight at a time from the offset
  the follower reports, read by the caller; a silent follower is probed again after
  ``snapshot_retry_interval``. Once it has installed it, replication goes on from there.
* **Membership** (``consensus.configuration``). Everyone in the configuration, learners
  included, is replicated to; only voters count for commit, check-quorum and read rounds, the
  leader itself only while it is one. A change is accepted only once an entry of this term is
  committed and no other change is uncommitted. Learners within ``promote_lag`` are promoted
  (``auto_promote``). A leader that removed itself keeps leading until the change commits,
  then hands over with ``TimeoutNow`` to the most caught-up voter and steps down; asked to
  remove itself with ``transfer_first``, it transfers leadership first instead. A removed
  follower is still sent entries until its removal commits, so it can learn of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from consensus.config import ReadMode
from consensus.errors import LocalProtocolError, RemoteProtocolError
from consensus.leader_membership import MembershipDuties
from consensus.leader_snapshots import SnapshotSender
from consensus.messages import (
    ERROR_TRANSFERRING,
    AppendEntries,
    AppendEntriesResponse,
    ClientCommand,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
)
from consensus.progress import Progress, ProgressState
from consensus.reads import ReadTracker
from consensus.ready import Role

if TYPE_CHECKING:
    from consensus.node import RaftNode


class Leader(SnapshotSender, MembershipDuties):
    kind = Role.LEADER
    __slots__ = (
        "committed_in_term",
        "heartbeat_due",
        "lease_allowed",
        "node",
        "progress",
        "reads",
        "snapshot_peers",
        "term_start",
        "transfer_deadline",
        "transfer_sent",
        "transfer_target",
    )

    def __init__(self, node: RaftNode) -> None:
        self.node = node
        config = node.config
        now = node.now
        next_index = node.log.last_index + 1
        self.progress = {
            peer: Progress(next_index, config.max_inflight, now) for peer in config.replicas
        }
        self.reads = ReadTracker(config.lease_duration)
        self.term_start = now
        self.heartbeat_due = now + config.heartbeat_interval
        self.committed_in_term = False
        self.snapshot_peers: set[str] = set()  # followers a snapshot is being sent to
        self.transfer_target: str | None = None
        self.transfer_deadline = 0
        self.transfer_sent = False
        # Lease reads rely on every voter ignoring vote requests for a while after hearing
        # from us; a TimeoutNow lets its target (and its voters) skip that rule, now or
        # whenever the message finally arrives, so once one has left, no more lease reads in
        # this term (read index stays safe: it does not rely on stickiness).
        self.lease_allowed = True

    @property
    def deadline(self) -> int:
        deadline = self.heartbeat_due
        if self.transfer_target is not None:
            deadline = min(deadline, self.transfer_deadline)
        snapshot = self.snapshot_deadline
        return deadline if snapshot is None else min(deadline, snapshot)

    def start(self) -> None:
        node = self.node
        self._append([(int(EntryKind.NOOP), b"")])
        self.reads.start_round(node.now, node.commit_index, reads_allowed=False)
        self.broadcast_append()

    # ------------------------------------------------------------------ appending

    def _append(self, items: Sequence[tuple[int, bytes]]) -> list[Entry]:
        node = self.node
        log = node.log
        # The state machine's clock is the entries' timestamps: never behind the last entry,
        # whatever this leader's clock says.
        timestamp = max(node.now, node.last_timestamp)
        first = log.last_index + 1
        term = node.term
        entries = [
            Entry(first + offset, term, kind, timestamp, payload)
            for offset, (kind, payload) in enumerate(items)
        ]
        log.append(entries, node.commit_index)
        node.appended(entries)
        return entries

    def propose(self, commands: Sequence[ClientCommand]) -> None:
        node = self.node
        if self.transfer_target is not None:
            for command in commands:
                node.reply(command.request_id, ERROR_TRANSFERRING)
            return
        if not commands:
            return
        command_kind = int(EntryKind.COMMAND)
        entries = self._append([(command_kind, command.payload) for command in commands])
        term = node.term
        node.pending.extend(
            (entry.index, term, command.request_id)
            for entry, command in zip(entries, commands, strict=True)
        )
        self.broadcast_append()

    # ------------------------------------------------------------------ sending

    def broadcast_append(self) -> None:
        for peer in self.progress:
            self.send_append(peer)

    def send_append(self, peer: str, *, allow_empty: bool = False) -> None:
        """Send ``peer`` whatever its flow control allows now."""
        node = self.node
        log = node.log
        config = node.config
        progress = self.progress[peer]
        while progress.can_send:
            prev_index = progress.next - 1
            prev_term = log.term_at(prev_index)
            if prev_term is None or progress.next < log.first_index:
                self._start_snapshot(peer, progress)
                return
            entries = log.slice(
                progress.next,
                log.last_index + 1,
                config.max_entries_per_message,
                config.max_bytes_per_message,
            )
            if not entries and not allow_empty:
                return
            node.send(
                peer,
                AppendEntries(
                    node.term,
                    node.id,
                    prev_index,
                    prev_term,
                    entries,
                    node.commit_index,
                    self.reads.round,
                ),
            )
            progress.sent(entries[-1].index if entries else prev_index, bool(entries))
            progress.commit_sent = node.commit_index
            if not entries:
                return
            allow_empty = False

    def broadcast_heartbeat(self) -> None:
        node = self.node
        self.heartbeat_due = node.now + node.config.heartbeat_interval
        round_ = self.reads.start_round(node.now, node.commit_index, self.committed_in_term)
        commit = node.commit_index
        for peer, progress in self.progress.items():
            told = min(progress.match, commit)
            progress.commit_sent = max(progress.commit_sent, told)
            node.send(peer, Heartbeat(node.term, node.id, told, round_))
        self._confirm_reads()

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        node = self.node
        now = node.now
        if self.transfer_target is not None and now >= self.transfer_deadline:
            self.transfer_target = None  # the target did not take over in time: carry on
        if node.config.check_quorum:
            window = node.config.election_timeout_max
            voters = node.config.voters
            active = (node.id in voters) + sum(
                1
                for peer, p in self.progress.items()
                if peer in voters and now - p.last_heard < window
            )
            if active < node.config.quorum:
                node.become_follower(
                    node.term,
                    None,
                    f"check-quorum: heard from {active} of {len(node.config.voters)} voters "
                    f"in the last {window} ms",
                )
                return
        if now >= self.heartbeat_due:
            self.broadcast_heartbeat()
        if self.snapshot_peers:
            self.retry_snapshots()

    def vote_granted(self) -> None:
        """Unreachable: a leader has voted for itself in its term."""

    def snapshot_installed(self, index: int, *, reset: bool) -> None:
        """Unreachable: only followers install snapshots."""

    def on_persisted(self) -> None:
        self._maybe_commit()

    def handle(self, msg: Any) -> None:
        if isinstance(msg, AppendEntriesResponse):
            self._on_append_response(msg)
        elif isinstance(msg, HeartbeatResponse):
            self._on_heartbeat_response(msg)
        elif isinstance(msg, InstallSnapshotResponse):
            self._on_snapshot_response(msg)
        elif isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
            raise RemoteProtocolError(f"claims leadership of term {msg.term}, which we lead")
        # Late vote answers of our own election and the like need nothing.

    def _heard(self, progress: Progress, round_: int) -> None:
        progress.last_heard = self.node.now
        if round_ > progress.acked_round:
            progress.acked_round = round_
            self._confirm_reads()

    def _on_append_response(self, msg: AppendEntriesResponse) -> None:
        node = self.node
        progress = self.progress.get(msg.source)
        if progress is None:
            return
        self._heard(progress, msg.round)
        if msg.success:
            if msg.match_index > node.log.last_index:
                raise RemoteProtocolError(
                    f"claims match {msg.match_index} beyond our last index {node.log.last_index}"
                )
            if progress.acknowledged(msg.match_index):
                self._maybe_commit()
                if node.role is not self:
                    return  # stepped down (removed from the configuration)
                if msg.source == self.transfer_target:
                    self._maybe_send_timeout_now()
                if msg.source in node.config.learners:
                    self._maybe_promote()
            self.send_append(msg.source)
            self._tell_commit(msg.source, progress)
            return
        if not 0 <= msg.reject_index <= node.log.last_index:
            # We never sent a prev_log_index beyond our log; a reply claiming so is bogus and
            # would otherwise push this follower's next index past our end.
            raise RemoteProtocolError(
                f"rejects prev index {msg.reject_index}; our last index is {node.log.last_index}"
            )
        if progress.rejected(msg.reject_index, self._next_after_rejection(msg)):
            self.send_append(msg.source)

    def _next_after_rejection(self, msg: AppendEntriesResponse) -> int:
        if msg.conflict_term == 0:
            return msg.conflict_index  # the follower's log ends before: continue after its end
        # Skip the follower's whole conflicting term: if we hold that term too, our last entry
        # of it is where the logs agree up to; if not, none of that term can match.
        last_of_term = self.node.log.last_index_of_term(msg.conflict_term, msg.reject_index)
        return last_of_term + 1 if last_of_term is not None else msg.conflict_index

    def _on_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        progress = self.progress.get(msg.source)
        if progress is None:
            return
        self._heard(progress, msg.round)
        if progress.state is ProgressState.PROBE:
            progress.probe_sent = False  # the probe (or its answer) may be lost: probe again
        elif progress.inflight_full:
            progress.free_oldest()
        if progress.match < self.node.log.last_index:
            self.send_append(msg.source, allow_empty=True)

    # ------------------------------------------------------------------ commit and reads

    def _maybe_commit(self) -> None:
        node = self.node
        log = node.log
        voters = node.config.voters
        matches = [p.match for peer, p in self.progress.items() if peer in voters]
        if node.id in voters:
            matches.append(log.durable_index)
        quorum = node.config.quorum
        if len(matches) < quorum:
            return
        matches.sort(reverse=True)
        candidate = matches[quorum - 1]
        if candidate <= node.commit_index or log.term_at(candidate) != node.term:
            return
        node.advance_commit(candidate)
        if not self.committed_in_term:
            self.committed_in_term = True
            if self.reads.wants_round:
                self.broadcast_heartbeat()
        for peer, progress in self.progress.items():
            self._tell_commit(peer, progress)
        if node.configs.latest_index <= node.commit_index:
            self._configuration_committed()

    def _tell_commit(self, peer: str, progress: Progress) -> None:
        """A follower with nothing in flight would learn a commit index it could use only at
        the next heartbeat (its acknowledgement may arrive after the commit it made possible);
        an empty append at its end tells it now. Batches in flight carry it anyway."""
        if (
            progress.state is ProgressState.REPLICATE
            and not progress.inflight
            and progress.next > self.node.log.last_index
            and progress.commit_sent < min(self.node.commit_index, progress.match)
        ):
            self.send_append(peer, allow_empty=True)

    def _confirm_reads(self) -> None:
        node = self.node
        voters = node.config.voters
        released = self.reads.confirm(
            [p.acked_round for peer, p in self.progress.items() if peer in voters],
            node.config.quorum,
            include_self=node.id in voters,
        )
        if released:
            node.reads_to_serve.extend(released)
        if self.committed_in_term and self.reads.wants_round:
            self.broadcast_heartbeat()

    def read(self, request_ids: Sequence[str]) -> None:
        node = self.node
        if (
            node.config.read_mode is ReadMode.LEASE
            and self.lease_allowed
            and self.committed_in_term
            and self.reads.lease_valid(node.now)
        ):
            node.reads_to_serve.extend((node.commit_index, r) for r in request_ids)
            return
        self.reads.waiting.extend(request_ids)
        if self.committed_in_term and self.reads.wants_round:
            self.broadcast_heartbeat()

    # ------------------------------------------------------------------ leadership transfer

    def transfer(self, target: str) -> None:
        node = self.node
        if target not in self.progress or target not in node.config.voters:
            raise LocalProtocolError(f"{target!r} is not a voting peer of {node.id}")
        self.transfer_target = target
        self.transfer_deadline = node.now + node.config.election_timeout_max
        self.transfer_sent = False
        self._maybe_send_timeout_now()
        if not self.transfer_sent:
            self.send_append(target)

    def _maybe_send_timeout_now(self) -> None:
        target = self.transfer_target
        if target is None or self.transfer_sent:
            return
        node = self.node
        if self.progress[target].match >= node.log.last_index:
            self.lease_allowed = False
            node.send(target, TimeoutNow(node.term, node.id))
            self.transfer_sent = True
