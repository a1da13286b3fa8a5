"""The Raft wire messages: log entries, elections, replication, leadership transfer and the
client envelopes. Each is a frozen, slotted dataclass registered with the actor wire codec.

Every peer message carries ``term`` and ``source`` (the sender's node id). Node ids, not actor
paths, go on the wire: the actor shell maps ids to paths, so the core never sees a path.

Theory of operation
-------------------
* Elections: a node whose election timer fires first asks for *pre-votes* (``PreVote``) for
  the term it would start, without changing its own term; only with a majority of pre-votes
  does it start a real election (``RequestVote``). A node rejoining from a partition therefore
  cannot bump the cluster's term and depose a healthy leader.
* Replication: ``AppendEntries`` carries a batch of entries after ``prev_log_index``; the
  follower answers with ``AppendEntriesResponse``, whose ``match_index`` only ever counts
  entries it has *persisted*. A rejection carries hints (``conflict_index``, ``conflict_term``,
  ``last_index``) so that the leader skips a whole conflicting term, or the whole missing
  suffix, per round trip.
* Snapshots: a follower behind the leader's first log index gets ``InstallSnapshot`` chunks
  (never the whole snapshot in one message), each answered by ``InstallSnapshotResponse``
  naming the byte offset the follower holds durably, so a transfer cut by a partition or a
  crash resumes where it stopped (see ``consensus.snapshots``).
* ``Heartbeat`` has no log check: it carries the commit index the follower is known to hold
  (min of its match and the leader's commit) and a *round* number. Every message a leader
  sends carries its current round; a follower echoes the highest round it saw, and a round
  acknowledged by a majority proves the leader was still leader when that round began.
  Read-index and lease reads are built on rounds.
"""

from __future__ import annotations

from typing import Any

from actors.wire import message

# The entry kinds are the WAL's (COMMAND=0, NOOP=1, CONFIGURATION=2), re-exported so that an
# entry's kind byte means the same on disk and on the wire: COMMAND is a client command for the
# user's state machine, NOOP is appended by every new leader to commit the entries of earlier
# terms, CONFIGURATION is cluster membership (the WAL always fsyncs it).
from wal.entry import EntryKind

__all__ = [
    "ERROR_CONFIG_IN_PROGRESS",
    "ERROR_INVALID_CHANGE",
    "ERROR_LEARNER_BEHIND",
    "ERROR_NOT_LEADER",
    "ERROR_OUTCOME_UNKNOWN",
    "ERROR_SUPERSEDED",
    "ERROR_TRANSFERRING",
    "PEER_MESSAGES",
    "RETRYABLE_ERRORS",
    "AppendEntries",
    "AppendEntriesResponse",
    "ClientCommand",
    "ClientResponse",
    "Entry",
    "EntryKind",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "PeerMessage",
    "PreVote",
    "PreVoteResponse",
    "RequestVote",
    "RequestVoteResponse",
    "TimeoutNow",
]

# Bytes an entry costs on the wire besides its payload; used to respect max_bytes_per_message.
ENTRY_OVERHEAD = 24


@message("raft.entry")
class Entry:
    """One log entry. ``timestamp`` is the leader's clock in ms when it appended the entry,
    never less than the previous entry's: the state machine's notion of time comes from here,
    so it never goes backwards, even across leaders with skewed clocks."""

    index: int
    term: int
    kind: int
    timestamp: int
    payload: bytes

    @property
    def size(self) -> int:
        return len(self.payload) + ENTRY_OVERHEAD


@message("raft.pre_vote")
class PreVote:
    """Would you vote for me in ``term``? Changes nobody's term."""

    term: int  # the term the sender would campaign in: its own term + 1
    source: str
    last_log_index: int
    last_log_term: int


@message("raft.pre_vote_response")
class PreVoteResponse:
    term: int  # the asked-for term when granted, else the responder's own term
    source: str
    granted: bool


@message("raft.request_vote")
class RequestVote:
    term: int
    source: str
    last_log_index: int
    last_log_term: int
    # Set when the current leader handed leadership over (TimeoutNow): voters then skip the
    # "recently heard from a leader" rule that otherwise makes them ignore the request.
    transfer: bool = False


@message("raft.request_vote_response")
class RequestVoteResponse:
    term: int
    source: str
    granted: bool


@message("raft.append_entries")
class AppendEntries:
    term: int
    source: str
    prev_log_index: int
    prev_log_term: int
    entries: list[Entry]
    leader_commit: int
    round: int


@message("raft.append_entries_response")
class AppendEntriesResponse:
    term: int
    source: str
    success: bool
    # On success: entries up to here match the leader's log and are durable on the follower.
    match_index: int
    # On rejection: the prev_log_index that did not match (lets the leader drop stale replies).
    reject_index: int
    # On rejection: the first index of the follower's conflicting term, or its last index + 1
    # when its log is too short (conflict_term 0).
    conflict_index: int
    conflict_term: int
    last_index: int
    round: int


@message("raft.heartbeat")
class Heartbeat:
    term: int
    source: str
    commit: int
    round: int


@message("raft.heartbeat_response")
class HeartbeatResponse:
    term: int
    source: str
    round: int


@message("raft.timeout_now")
class TimeoutNow:
    """From the leader to the node it hands leadership to: start an election at once."""

    term: int
    source: str


@message("raft.install_snapshot")
class InstallSnapshot:
    """One chunk of the snapshot ending at (``last_index``, ``last_term``): ``data`` is its
    content from byte ``offset``; ``done`` marks the last chunk. An empty chunk asks the
    follower where it stands (the first message of every transfer, and the retry after
    silence). ``size`` and ``crc`` (crc32c) describe the whole content so the follower can
    verify what it assembled; ``membership`` is the configuration at ``last_index``
    (``consensus.configuration.Membership.encode``)."""

    term: int
    source: str
    last_index: int
    last_term: int
    size: int
    crc: int
    timestamp: int  # the leader timestamp of entry last_index
    membership: bytes
    offset: int
    data: bytes
    done: bool
    round: int


@message("raft.install_snapshot_response")
class InstallSnapshotResponse:
    """The follower holds ``offset`` bytes of snapshot (``last_index``, ``last_term``)
    durably (``done``: it has installed it, or already had everything it covers).
    ``chunk_offset`` echoes the offset of the chunk answered, so the leader can tell a stale
    answer from the one it waits for."""

    term: int
    source: str
    last_index: int
    last_term: int
    chunk_offset: int
    offset: int
    done: bool
    round: int


@message("raft.client_command")
class ClientCommand:
    """A command a client wants applied; ``request_id`` correlates the response."""

    request_id: str
    payload: bytes


@message("raft.client_response")
class ClientResponse:
    """The outcome of a command (or a read the core refused). ``error`` is None on success;
    otherwise one of the ERROR_* names below, with ``leader_hint`` naming the node believed to
    be leader, if any."""

    request_id: str
    ok: bool
    index: int
    result: Any
    error: str | None
    leader_hint: str | None


ERROR_NOT_LEADER = "not_leader"
ERROR_SUPERSEDED = "superseded"  # the entry was overwritten by a later leader's log
ERROR_TRANSFERRING = "leadership_transfer"  # the leader is handing over; retry at the new one
# A membership change while another is uncommitted, or before the leader committed an entry
# of its own term: retry shortly.
ERROR_CONFIG_IN_PROGRESS = "config_change_in_progress"
ERROR_LEARNER_BEHIND = "learner_behind"  # promotion refused until the learner catches up
ERROR_INVALID_CHANGE = "invalid_membership_change"  # not retryable: the change makes no sense
# The entry's slot was overwritten by an installed snapshot: it may or may not have been
# applied. Retry with a session (exactly once) or check.
ERROR_OUTCOME_UNKNOWN = "outcome_unknown"
RETRYABLE_ERRORS = frozenset(
    {
        ERROR_NOT_LEADER,
        ERROR_SUPERSEDED,
        ERROR_TRANSFERRING,
        ERROR_CONFIG_IN_PROGRESS,
        ERROR_LEARNER_BEHIND,
        ERROR_OUTCOME_UNKNOWN,
    }
)

PEER_MESSAGES = (
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    TimeoutNow,
    InstallSnapshot,
    InstallSnapshotResponse,
)
PeerMessage = (
    PreVote
    | PreVoteResponse
    | RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | TimeoutNow
    | InstallSnapshot
    | InstallSnapshotResponse
)
