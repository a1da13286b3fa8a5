"""RaftNode: the one entry point of a Raft node. Every input (a peer message, the passing of
time, a client's commands or reads, the caller's reports of persistence and application) goes
through a method here and returns one :class:`~consensus.ready.Ready` with all the work it
caused.

Theory of operation
-------------------
``step`` first applies the rules every role shares (etcd raft's ``Step``):

* a message from a higher term makes this node a follower in that term, *except* a (pre)vote
  request arriving while this node still hears from a live leader (leader stickiness, which
  keeps a server that was cut off, or removed, from deposing a healthy leader), and pre-vote
  traffic, which never changes a term;
* a message from a lower term is answered only so that its stale sender learns the newer term;
* vote requests are decided here, since the rules do not depend on the role.

It then hands the message to the current role object (:class:`Follower`, :class:`Candidate`
or :class:`Leader`), which owns the role's volatile state. Only :meth:`become_follower`,
:meth:`become_candidate` and :meth:`become_leader` replace the role, each checked against
:data:`ALLOWED_TRANSITIONS` and reported as a :class:`RoleChange` with term and reason.

Time and chance are inputs: ``now`` (ms) is passed to every call (and never goes backwards
inside the core), and election timeouts are drawn from the ``random.Random`` handed in, so a
seed fixes a whole run.

Membership: a message that could disrupt a leader (a vote or pre-vote request) is ignored
unless its sender is a voter of this node's configuration, and answers from non-members are
ignored, so a removed server cannot depose anyone; leader traffic (appends, heartbeats,
snapshots) is accepted from any sender, since a node being added does not know its leader as
a member yet. A node that is not a voter of its own configuration never campaigns. See
``consensus.configuration`` for how configurations change.

Snapshots: see ``consensus.snapshots`` for the flow; this class holds the latest snapshot the
caller reported, asks for new ones, hands out compaction, and installs received ones.

State shared by all roles lives here: the hard state (term, vote), the log view, the commit
and apply indexes, the configuration, the latest snapshot, the client proposals awaiting their
results, and the reads waiting to be served once the state machine catches up.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from consensus.candidate import Candidate
from consensus.config import RaftConfig
from consensus.configuration import CONFIGURATION, ConfigState, Membership, MembershipChange
from consensus.errors import IllegalTransition, LocalProtocolError, RemoteProtocolError
from consensus.follower import Follower
from consensus.leader import Leader
from consensus.log import LogReader
from consensus.messages import (
    ERROR_NOT_LEADER,
    ERROR_SUPERSEDED,
    PEER_MESSAGES,
    AppendEntries,
    AppendEntriesResponse,
    ClientCommand,
    ClientResponse,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
)
from consensus.node_snapshots import SnapshotEntryPoints
from consensus.raftlog import RaftLog
from consensus.ready import HardState, ReadState, Ready, Role, RoleChange
from consensus.snapshots import ChunkRead, ChunkWrite, SnapshotInfo

if TYPE_CHECKING:
    import random

RoleBehaviour = Follower | Candidate | Leader
# Answers: from a sender that is no member they are ignored (a removed server's higher term
# must not depose anyone), unless the leader still tracks it (it is being removed).
RESPONSES = (
    PreVoteResponse,
    RequestVoteResponse,
    AppendEntriesResponse,
    HeartbeatResponse,
    InstallSnapshotResponse,
)

ALLOWED_TRANSITIONS: dict[Role, frozenset[Role]] = {
    Role.FOLLOWER: frozenset({Role.FOLLOWER, Role.CANDIDATE}),
    Role.CANDIDATE: frozenset({Role.FOLLOWER, Role.CANDIDATE, Role.LEADER}),
    Role.LEADER: frozenset({Role.FOLLOWER}),
}


class RaftNode(SnapshotEntryPoints):
    """One Raft node's consensus logic, with no IO. See ``consensus.ready`` for the contract
    the caller follows with each returned Ready (the snapshot entry points are in
    ``consensus.node_snapshots``)."""

    def __init__(
        self,
        config: RaftConfig,
        storage: LogReader,
        hard_state: HardState,
        rng: random.Random,
        now: int,
        snapshot: SnapshotInfo | None = None,
    ) -> None:
        self.id = config.node_id
        self.rng = rng
        self.now = now
        self.log = RaftLog(storage)
        self.term = hard_state.term
        self.voted_for = hard_state.voted_for
        self._hard_state_dirty = False
        boundary = storage.first_index - 1
        if snapshot is None and boundary > 0:
            raise LocalProtocolError(
                f"{self.id}: the log is compacted through {boundary}; the snapshot covering it "
                "must be given"
            )
        if snapshot is not None and (
            snapshot.index < boundary or storage.term_at(snapshot.index) != snapshot.term
        ):
            raise LocalProtocolError(
                f"{self.id}: the log ({boundary + 1}..{storage.last_index}) does not continue "
                f"the snapshot at ({snapshot.index}, term {snapshot.term}); reconcile it first "
                "(consensus.snapshots.reconcile_log)"
            )
        # The latest snapshot the caller holds (what a follower behind the log is sent).
        self.snapshot = snapshot
        start = snapshot.index if snapshot is not None else boundary
        # Entries up to the snapshot are committed and (by the snapshot) applied.
        self.commit_index = start
        self.applied_index = start  # reported applied by the caller
        self._handed_out_index = start  # given to the caller to apply
        self._compacted = boundary  # the log prefix the caller was told to drop
        self._compact_target = boundary
        self._snapshot_asked_at: tuple[int, int] | None = None  # (applied index, bytes) then
        self._applied_bytes = 0  # bytes of entries handed out to apply since the snapshot
        self._snapshot_checked_at = start  # the applied index _wants_snapshot last saw
        base = (
            snapshot.membership
            if snapshot is not None
            else Membership(config.voters, config.learners)
        )
        self.configs = ConfigState(base, start)
        self._load_configs(storage, start)
        self.config = config
        self._sync_config()
        self.leader_id: str | None = None
        self.leader_contact_at = now
        # A node just (re)started may have acknowledged a leader's lease before it crashed and
        # cannot remember; it ignores vote requests for one minimum election timeout, as if it
        # had just heard from that leader, so leases stay safe across restarts.
        self._vote_hold_until = now + config.election_timeout_min
        self.last_timestamp = max(
            self._read_last_timestamp(storage), snapshot.timestamp if snapshot else 0
        )
        # client commands appended by this node and not yet resolved: (index, term, request id)
        self.pending: collections.deque[tuple[int, int, str]] = collections.deque()
        # confirmed reads waiting for the state machine: (read index, request id)
        self.reads_to_serve: collections.deque[tuple[int, str]] = collections.deque()
        self._out = Ready()
        self.role: RoleBehaviour = Follower(self)

    # ================================================================== entry points

    def step(self, message: Any, now: int) -> Ready:
        """A message from a peer."""
        self._advance_clock(now)
        if not isinstance(message, PEER_MESSAGES):
            raise LocalProtocolError(f"step() takes peer messages, not {type(message).__name__}")
        try:
            self._step(message)
        except RemoteProtocolError as exc:
            self._out.dropped.append(f"{type(message).__name__} from {message.source}: {exc}")
        return self._ready()

    def tick(self, now: int) -> Ready:
        """Time passed. Call it by ``Ready.deadline`` at the latest (earlier is harmless)."""
        self._advance_clock(now)
        self.role.tick()
        return self._ready()

    def propose(self, commands: Sequence[ClientCommand], now: int) -> Ready:
        """Client commands, in order. A leader appends them all as one batch; anywhere else
        each is answered at once with ``not_leader`` and a hint of who leads."""
        self._advance_clock(now)
        if isinstance(self.role, Leader):
            self.role.propose(commands)
        else:
            for command in commands:
                self.reply(command.request_id, ERROR_NOT_LEADER)
        return self._ready()

    def read(self, request_id: str, now: int, *, stale: bool = False) -> Ready:
        """A read. Linearizable by default: only a leader serves it, once it has confirmed its
        leadership (read index, or lease per ``config.read_mode``) and applied far enough.
        ``stale=True`` serves at once from whatever this node has applied, on any role."""
        return self.read_batch([request_id], now, stale=stale)

    def read_batch(self, request_ids: Sequence[str], now: int, *, stale: bool = False) -> Ready:
        """Several reads that arrived together: on a leader they share one confirmation round.
        (Reads passed one call at a time share a round only when they arrive while another
        round is under way: a read may only be confirmed by a round that began after it
        arrived, or a leader deposed in between could answer it with stale data.)"""
        self._advance_clock(now)
        if stale:
            self._out.reads.extend(ReadState(r, True, self.applied_index) for r in request_ids)
        elif isinstance(self.role, Leader):
            self.role.read(request_ids)
        else:
            self._out.reads.extend(
                ReadState(r, False, 0, ERROR_NOT_LEADER, self.leader_id) for r in request_ids
            )
        return self._ready()

    def persisted(self, index: int, term: int, now: int) -> Ready:
        """The caller made the log durable up to ``(index, term)``."""
        self._advance_clock(now)
        if self.log.persisted(index, term):
            self.role.on_persisted()
        return self._ready()

    def applied(self, index: int, results: Mapping[int, Any], now: int) -> Ready:
        """The caller applied every handed-out entry up to ``index``; ``results`` maps the
        index of each command to the state machine's result."""
        self._advance_clock(now)
        if index > self._handed_out_index:
            raise LocalProtocolError(
                f"applied({index}) but entries were only handed out up to {self._handed_out_index}"
            )
        self.applied_index = max(self.applied_index, index)
        pending = self.pending
        while pending and pending[0][0] <= index:
            entry_index, term, request_id = pending.popleft()
            if self.log.term_at(entry_index) in (term, None):
                result = results.get(entry_index)
                self._out.results.append(
                    ClientResponse(request_id, True, entry_index, result, None, None)
                )
            else:
                self.reply(request_id, ERROR_SUPERSEDED)
        return self._ready()

    def campaign(self, now: int) -> Ready:
        """Start an election now, as if the election timer had fired. Refused (nothing
        happens) while this node is leader or still hears from a live leader: its own vote
        is bound by leader stickiness like any other, or a forced campaign could elect a
        second leader while the first one's read lease is still running."""
        self._advance_clock(now)
        if not isinstance(self.role, Leader) and not self.in_lease() and self.config.is_voter:
            self.start_election("campaign requested")
        return self._ready()

    def transfer_leadership(self, target: str, now: int) -> Ready:
        """Leader only: hand leadership to ``target`` once its log is caught up."""
        self._advance_clock(now)
        if not isinstance(self.role, Leader):
            raise LocalProtocolError(f"{self.id} is not leader; it cannot transfer leadership")
        self.role.transfer(target)
        return self._ready()

    def change_membership(self, request_id: str, change: MembershipChange, now: int) -> Ready:
        """A membership change (``consensus.configuration``): add a learner, promote one,
        remove a server. Answered in ``Ready.results`` under ``request_id``: ok once the
        configuration entry is applied, or refused (not leader, another change in progress,
        learner behind, leadership transfer under way: all retryable; an invalid change)."""
        self._advance_clock(now)
        if isinstance(self.role, Leader):
            self.role.change_membership(request_id, change)
        else:
            self.reply(request_id, ERROR_NOT_LEADER)
        return self._ready()

    # ================================================================== inspection

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for)

    @property
    def role_kind(self) -> Role:
        return self.role.kind

    @property
    def is_leader(self) -> bool:
        return isinstance(self.role, Leader)

    @property
    def membership(self) -> Membership:
        """The configuration in effect (the newest in the log, committed or not)."""
        return self.configs.current

    def membership_at(self, index: int) -> Membership:
        """The configuration in effect after entry ``index`` (not below the snapshot)."""
        return self.configs.at(index)

    # ================================================================== shared rules

    def _step(self, msg: Any) -> None:
        source = msg.source
        if source == self.id:
            raise RemoteProtocolError(f"{source!r} claims to be {self.id} itself")
        if isinstance(msg, PreVote | RequestVote):
            if source not in self.config.voters:
                raise RemoteProtocolError(f"{source!r} asks for votes but is no voter here")
        elif (
            isinstance(msg, RESPONSES)
            and source not in self.config.voters
            and source not in self.config.learners
            and not (isinstance(self.role, Leader) and source in self.role.progress)
        ):
            raise RemoteProtocolError(f"{source!r} is not a member of {self.id}'s configuration")
        if msg.term > self.term:
            disruptive = isinstance(msg, PreVote) or (
                isinstance(msg, RequestVote) and not msg.transfer
            )
            if disruptive and self.in_lease():
                return  # a live leader exists: do not let this candidate disrupt it
            if isinstance(msg, PreVote) or (isinstance(msg, PreVoteResponse) and msg.granted):
                pass  # pre-votes never change anyone's term
            else:
                claims = isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot)
                leader = msg.source if claims else None
                self.become_follower(
                    msg.term, leader, f"{type(msg).__name__} from {msg.source} at term {msg.term}"
                )
        elif msg.term < self.term:
            self._answer_stale(msg)
            return
        if isinstance(msg, RequestVote):
            self._decide_vote(msg)
        elif isinstance(msg, PreVote):
            self._decide_pre_vote(msg)
        else:
            self.role.handle(msg)

    def _answer_stale(self, msg: Any) -> None:
        """Tell a sender from an older term about ours, so a deposed leader or a stale
        candidate steps down instead of retrying forever. Stale replies are just dropped."""
        if isinstance(msg, AppendEntries):
            self.send(
                msg.source,
                AppendEntriesResponse(self.term, self.id, False, 0, 0, 0, 0, 0, 0),
            )
        elif isinstance(msg, Heartbeat):
            self.send(msg.source, HeartbeatResponse(self.term, self.id, 0))
        elif isinstance(msg, InstallSnapshot):
            self.send(
                msg.source,
                InstallSnapshotResponse(
                    self.term, self.id, msg.last_index, msg.last_term, msg.offset, 0, False, 0
                ),
            )
        elif isinstance(msg, PreVote):
            self.send(msg.source, PreVoteResponse(self.term, self.id, False))
        elif isinstance(msg, RequestVote):
            self.send(msg.source, RequestVoteResponse(self.term, self.id, False))

    def in_lease(self) -> bool:
        """Does this node believe a live leader exists, so vote requests must be ignored?"""
        if not self.config.check_quorum:
            return False
        if isinstance(self.role, Leader) or self.now < self._vote_hold_until:
            return True
        return (
            self.leader_id is not None
            and self.now - self.leader_contact_at < self.config.election_timeout_min
        )

    def _decide_vote(self, msg: RequestVote) -> None:
        # Same term here (the shared rules ran). One vote per term: for whoever we voted for
        # already, or anyone if we have voted for nobody and know of no leader.
        can_vote = self.voted_for == msg.source or (
            self.voted_for is None and self.leader_id is None
        )
        granted = can_vote and self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)
        if granted:
            if self.voted_for != msg.source:
                self.voted_for = msg.source
                self._hard_state_dirty = True
            self.role.vote_granted()
        self.send(msg.source, RequestVoteResponse(self.term, self.id, granted))

    def _decide_pre_vote(self, msg: PreVote) -> None:
        granted = msg.term > self.term and self.log.is_up_to_date(
            msg.last_log_index, msg.last_log_term
        )
        self.send(msg.source, PreVoteResponse(msg.term if granted else self.term, self.id, granted))

    # ================================================================== transitions

    def _check_transition(self, new: Role, reason: str) -> Role:
        old = self.role.kind
        if new not in ALLOWED_TRANSITIONS[old]:
            raise IllegalTransition(self.id, str(old), str(new), reason)
        return old

    def become_follower(self, term: int, leader: str | None, reason: str) -> None:
        old = self._check_transition(Role.FOLLOWER, reason)
        if term < self.term:
            raise LocalProtocolError(f"{self.id}: follower term {term} < current {self.term}")
        if term > self.term:
            self.term = term
            self.voted_for = None
            self._hard_state_dirty = True
        self._leave_role()
        self.leader_id = leader
        if leader is not None:
            self.leader_contact_at = self.now
        self.role = Follower(self)
        self._out.role_changes.append(RoleChange(self.id, old, Role.FOLLOWER, self.term, reason))

    def become_candidate(self, reason: str, *, pre_vote: bool, transfer: bool = False) -> None:
        old = self._check_transition(Role.CANDIDATE, reason)
        self._leave_role()
        if not pre_vote:
            self.term += 1
            self.voted_for = self.id
            self._hard_state_dirty = True
        self.leader_id = None
        self.role = Candidate(self, pre_vote=pre_vote, transfer=transfer)
        self._out.role_changes.append(
            RoleChange(self.id, old, Role.CANDIDATE, self.term, reason, pre_vote)
        )
        self.role.start()

    def become_leader(self, reason: str) -> None:
        old = self._check_transition(Role.LEADER, reason)
        self._leave_role()
        self.leader_id = self.id
        self.role = Leader(self)
        self._out.role_changes.append(RoleChange(self.id, old, Role.LEADER, self.term, reason))
        self.role.start()

    def start_election(self, reason: str) -> None:
        if not self.config.is_voter:
            raise LocalProtocolError(f"{self.id} is no voter; it must never campaign ({reason})")
        self.become_candidate(reason, pre_vote=self.config.pre_vote)

    def _leave_role(self) -> None:
        if isinstance(self.role, Leader):
            for request_id in self.role.reads.abandon():
                self._out.reads.append(ReadState(request_id, False, 0, ERROR_NOT_LEADER, None))

    # ================================================================== helpers for roles

    def send(self, to: str, message: Any) -> None:
        self._out.messages.append((to, message))

    def reply(
        self, request_id: str, error: str, *, hint: str | None = None, detail: Any = None
    ) -> None:
        """Refuse a client command with ``error`` and a hint of who leads."""
        self._out.results.append(
            ClientResponse(request_id, False, 0, detail, error, hint or self.leader_id)
        )

    def random_election_timeout(self) -> int:
        return self.rng.randrange(
            self.config.election_timeout_min, self.config.election_timeout_max
        )

    def advance_commit(self, index: int) -> None:
        self.commit_index = max(self.commit_index, index)

    def appended(self, entries: Sequence[Entry]) -> None:
        """Entries were put at the end of the log (by either role), replacing any suffix
        from the first one: configurations take effect (or are reverted) at once."""
        self.last_timestamp = entries[-1].timestamp
        configs = self.configs
        touches = (configs.indexes and configs.indexes[-1] >= entries[0].index) or any(
            entry.kind == CONFIGURATION for entry in entries
        )
        if touches and configs.appended(entries):
            self._config_changed()

    def _config_changed(self) -> None:
        self._sync_config()
        self._out.membership = self.configs.current
        self.role.config_changed()

    def _sync_config(self) -> None:
        current = self.configs.current
        if (current.voters, current.learners) != (self.config.voters, self.config.learners):
            self.config = dataclasses.replace(
                self.config, voters=current.voters, learners=current.learners
            )

    def _load_configs(self, storage: LogReader, start: int) -> None:
        """The configuration entries of the log after the snapshot (one streamed pass)."""
        last = storage.last_index
        if last <= start:
            return
        for entry in storage.entries(start + 1, last + 1, 1 << 62):
            if entry.kind == CONFIGURATION:
                try:
                    self.configs.appended([entry])
                except RemoteProtocolError as exc:
                    raise LocalProtocolError(f"{self.id}: the log's {exc}") from exc

    def supersede_pending_from(self, index: int) -> None:
        """The log is being cut at ``index``: our proposals from there on were lost."""
        while self.pending and self.pending[-1][0] >= index:
            self.reply(self.pending.pop()[2], ERROR_SUPERSEDED)

    def queue_snapshot_write(self, write: ChunkWrite) -> None:
        self._out.snapshot_writes.append(write)

    def queue_snapshot_read(self, read: ChunkRead) -> None:
        self._out.snapshot_reads.append(read)

    def note_need_snapshot(self, peer: str) -> None:
        if peer not in self._out.need_snapshot:
            self._out.need_snapshot.append(peer)

    # ================================================================== Ready assembly

    def _advance_clock(self, now: int) -> None:
        # A clock that steps back (wall clock adjusted) must not rewind timers or timestamps.
        self.now = max(self.now, now)

    @staticmethod
    def _read_last_timestamp(storage: LogReader) -> int:
        last = storage.last_index
        if last < storage.first_index:
            return 0
        return next(iter(storage.entries(last, last + 1, 1 << 62))).timestamp

    def _ready(self) -> Ready:
        out = self._out
        self._out = Ready()
        out.truncate_after, out.entries = self.log.take_writes()
        if self._hard_state_dirty:
            out.hard_state = HardState(self.term, self.voted_for)
            self._hard_state_dirty = False
        limit = min(self.commit_index, self.applied_index + self.config.max_apply_entries)
        if limit > self._handed_out_index:
            out.committed = self.log.slice(
                self._handed_out_index + 1, limit + 1, limit - self._handed_out_index, 1 << 62
            )
            self._handed_out_index = limit
            if self.config.snapshot_threshold_bytes:
                self._applied_bytes += sum(entry.size for entry in out.committed)
        out.commit_index = self.commit_index
        if self._compact_target > self._compacted:
            compact = min(self._compact_target, self.log.durable_index)
            if compact > self._compacted:
                out.compact_through = self._compacted = compact
        if self.applied_index != self._snapshot_checked_at:
            self._snapshot_checked_at = self.applied_index
            out.snapshot_wanted = self._wants_snapshot()
        serve = self.reads_to_serve
        while serve and serve[0][0] <= self.applied_index:
            read_index, request_id = serve.popleft()
            out.reads.append(ReadState(request_id, True, read_index))
        out.deadline = self.role.deadline
        return out

    def __repr__(self) -> str:
        return (
            f"RaftNode({self.id}, {self.role.kind}, term={self.term}, commit={self.commit_index}, "
            f"applied={self.applied_index}, {self.log!r})"
        )
