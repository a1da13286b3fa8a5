"""Ready: the batch of work the core hands its caller after every input, and the small value
types inside it (hard state, role changes, read results).

The contract (the caller's side of etcd raft's Ready/Advance)
-----------------------------------------------------------
Every entry point of :class:`~consensus.node.RaftNode` returns one Ready holding *all* work
queued since the previous one. The caller carries it out in this order:

1. ``hard_state``: if not None, make (term, voted_for) durable **before sending any message of
   this Ready or of any later Ready**. Every message a node sends speaks for its current term,
   and a vote reply speaks for its vote: were either lost in a crash after the message left,
   the node could vote twice in one term (two leaders). A caller that saves asynchronously
   holds back all outgoing messages, in order, until the save is confirmed.
2. ``install_snapshot``: if not None (a follower received a whole snapshot), restore the state
   machine from that snapshot and reset or compact the log as it says, before anything below.
   ``truncate_after`` / ``entries``: cut the log after ``truncate_after`` (if not None), then
   append ``entries`` (a truncation always comes with the entries that replace the cut
   suffix). Writes are carried out in Ready order, but need not be durable before messages
   go out: a leader writes its own entries while sending them. Once the entries of a Ready
   (and of every earlier one) are durable, call ``persisted(last.index, last.term, now)``;
   one call for the last of several Readys covers them all, and a late call for entries
   since replaced is recognised by its term and ignored. ``compact_through``: if not None,
   drop the log prefix through that index (a snapshot the caller reported covers it, and it is
   durable); the order against the writes does not matter.
3. ``messages``: send each ``(node_id, message)``, in order, once step 1 allows. Nothing else
   needs to be durable first: the core itself holds back every reply that claims entries are
   durable (a follower's AppendEntriesResponse) until ``persisted`` covers them, and a leader
   counts itself in a commit majority only up to what it has been told is durable.
   ``snapshot_reads`` (leader) and ``snapshot_writes`` (follower): chunks of a snapshot
   transfer to read from, or write to, the snapshot store, each reported back when done
   (``snapshot_chunk``, ``snapshot_written``), possibly later; see ``consensus.snapshots``.
4. ``committed``: apply these entries to the state machine in order (they follow the entries of
   the previous Ready's ``committed``), then call ``applied(index, results, now)`` with the
   result of each command by index. Entries come at most ``max_apply_entries`` beyond the
   last index reported applied; more follow in the Ready ``applied`` returns.
5. ``results`` (answers to clients) and ``reads`` may be delivered at once. A read with
   ``ok=True`` is released only once every entry up to its read index has been reported
   applied, so it may be served from the state machine as it stands.
   ``snapshot_wanted``: the applied log has grown past the configured threshold; take a
   snapshot at an applied index and report it (``snapshot_taken``) when it is durable.
   ``membership``: the configuration in effect changed (it takes effect when appended); the
   caller updates whom it can reach (addresses) and may shut a node down that was removed.
6. ``deadline``: call ``tick(now)`` again at that time (earlier is harmless, later delays
   heartbeats and elections).

What the core reads through its :class:`~consensus.log.LogReader` must be what the caller
wrote, in the same thread as the core's calls (the core reads it during them).

A crash may lose anything not yet durable. The node is then rebuilt from what storage holds
and the last durable hard state; that is all it needs (commit and apply indexes restart from
the snapshot boundary, and the state machine is rebuilt by re-applying committed entries).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from consensus.configuration import Membership
from consensus.messages import ClientResponse, Entry
from consensus.snapshots import ChunkRead, ChunkWrite, SnapshotInstall


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash besides the log: the current term and the vote cast in it."""

    term: int = 0
    voted_for: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RoleChange:
    """A role transition, for logs and traces: ``"n1 became candidate at term 2 (...)"``."""

    node: str
    old: Role
    new: Role
    term: int
    reason: str
    pre_vote: bool = False  # a candidate still collecting pre-votes (term not yet bumped)

    def __str__(self) -> str:
        what = "pre-candidate" if self.pre_vote else str(self.new)
        return f"{self.node} became {what} at term {self.term} ({self.reason})"


@dataclasses.dataclass(frozen=True, slots=True)
class ReadState:
    """A read the caller may now serve from its state machine (``ok``), or must refuse.

    ``index`` is the read index: the state machine has applied at least this far, so a read
    served now observes every write acknowledged before the read was requested."""

    request_id: str
    ok: bool
    index: int
    error: str | None = None
    leader_hint: str | None = None


@dataclasses.dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None
    truncate_after: int | None = None
    entries: list[Entry] = dataclasses.field(default_factory=list)
    messages: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    committed: list[Entry] = dataclasses.field(default_factory=list)
    commit_index: int = 0
    role_changes: list[RoleChange] = dataclasses.field(default_factory=list)
    results: list[ClientResponse] = dataclasses.field(default_factory=list)
    reads: list[ReadState] = dataclasses.field(default_factory=list)
    # Peers the leader cannot catch up from its log because it was compacted past them: a
    # snapshot transfer to them starts (for logs and metrics; the work is in snapshot_reads).
    need_snapshot: list[str] = dataclasses.field(default_factory=list)
    install_snapshot: SnapshotInstall | None = None
    compact_through: int | None = None
    snapshot_reads: list[ChunkRead] = dataclasses.field(default_factory=list)
    snapshot_writes: list[ChunkWrite] = dataclasses.field(default_factory=list)
    snapshot_wanted: bool = False
    membership: Membership | None = None
    # Peer messages dropped as protocol violations, with the reason (for logs and counters).
    dropped: list[str] = dataclasses.field(default_factory=list)
    # The time by which the caller must call tick() again (ms, the caller's clock).
    deadline: int = 0

    @property
    def empty(self) -> bool:
        """Nothing to persist, send, apply or answer."""
        return not (
            self.hard_state
            or self.entries
            or self.messages
            or self.committed
            or self.role_changes
            or self.results
            or self.reads
            or self.need_snapshot
            or self.dropped
            or self.install_snapshot
            or self.compact_through is not None
            or self.snapshot_reads
            or self.snapshot_writes
            or self.snapshot_wanted
            or self.membership
        )
