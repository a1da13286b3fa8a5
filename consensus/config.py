"""RaftConfig: the settings of one Raft node (who it is, who its peers are, its timers, its
replication, snapshot and membership limits), validated once at construction so the core never
meets a nonsense value.

``voters`` and ``learners`` are the *bootstrap* configuration: what a node uses while neither
its snapshot nor its log holds a configuration entry. Once one does, the core keeps
``node.config`` in step with the configuration in effect (``dataclasses.replace``), so
``config.voters``, ``config.peers`` and ``config.quorum`` always describe the current one.
A node whose id is not among the voters is *joining*: it never campaigns, and waits for a
leader to add it (a node that is not named must never start a cluster of its own: Copycat's
split brain at start-up).

All durations are milliseconds of the clock the caller passes as ``now``.
"""

from __future__ import annotations

import dataclasses
import enum


class ReadMode(enum.Enum):
    """How a leader confirms it may serve a linearizable read."""

    READ_INDEX = "read_index"  # a heartbeat round acknowledged by a majority, per batch of reads
    LEASE = "lease"  # a recent majority acknowledgement; needs check_quorum and bounded drift


@dataclasses.dataclass(frozen=True, slots=True)
class RaftConfig:
    """Settings of one node. ``voters`` lists every voting member (this node included, unless
    it is joining an existing cluster), ``learners`` the non-voting members."""

    node_id: str
    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    election_timeout_min: int = 150
    election_timeout_max: int = 300
    heartbeat_interval: int = 50
    max_entries_per_message: int = 64
    max_bytes_per_message: int = 1 << 20
    max_inflight: int = 8
    max_apply_entries: int = 1024
    pre_vote: bool = True
    # check_quorum also turns on leader stickiness (a node that heard from its leader within
    # election_timeout_min ignores vote requests). The two go together, as in etcd: stickiness
    # without check-quorum would let a leader that can send but not receive hold its
    # followers forever, while it can no longer commit anything.
    check_quorum: bool = True
    read_mode: ReadMode = ReadMode.READ_INDEX
    # How much faster than the leader's clock a follower's clock may run, as a fraction.
    # A lease lasts election_timeout_min * (1 - max_clock_drift) from the round that earned it.
    max_clock_drift: float = 0.1
    # Snapshots: ask the caller for one when the applied log since the last snapshot passes
    # this many entries or bytes (0: never ask; the caller may still take one at any time).
    snapshot_threshold_entries: int = 0
    snapshot_threshold_bytes: int = 0
    # Entries kept in the log behind a snapshot, so a follower only a little behind catches
    # up from the log rather than by a whole snapshot.
    snapshot_trailing_entries: int = 128
    snapshot_chunk_bytes: int = 1 << 20  # content bytes per InstallSnapshot message
    snapshot_retry_interval: int = 200  # probe a follower silent this long during a transfer
    # Membership: a learner within promote_lag entries of the leader's last index may become
    # a voter; with auto_promote the leader promotes such learners by itself, one at a time.
    promote_lag: int = 16
    auto_promote: bool = True

    def __post_init__(self) -> None:
        voters = tuple(self.voters)
        learners = tuple(self.learners)
        object.__setattr__(self, "voters", voters)
        object.__setattr__(self, "learners", learners)
        if not self.node_id:
            raise ValueError("node_id must be a non-empty string")
        if len(set(voters + learners)) != len(voters) + len(learners):
            raise ValueError(f"voters {voters} / learners {learners} list a node twice")
        if not 0 < self.heartbeat_interval < self.election_timeout_min:
            raise ValueError(
                "need 0 < heartbeat_interval < election_timeout_min, got "
                f"{self.heartbeat_interval} and {self.election_timeout_min}"
            )
        if self.election_timeout_max <= self.election_timeout_min:
            raise ValueError(
                "election_timeout_max must exceed election_timeout_min so that timeouts are "
                f"randomized, got {self.election_timeout_min}..{self.election_timeout_max}"
            )
        for name in ("max_entries_per_message", "max_bytes_per_message", "max_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_apply_entries < 1:
            raise ValueError("max_apply_entries must be at least 1")
        if self.read_mode is ReadMode.LEASE and not self.check_quorum:
            raise ValueError(
                "lease reads need check_quorum: without it a deposed leader keeps serving reads"
            )
        if not 0.0 <= self.max_clock_drift < 1.0:
            raise ValueError("max_clock_drift is a fraction in [0, 1)")
        for name in (
            "snapshot_threshold_entries",
            "snapshot_threshold_bytes",
            "snapshot_trailing_entries",
            "promote_lag",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("snapshot_chunk_bytes", "snapshot_retry_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def is_voter(self) -> bool:
        """Is this node a voter of the configuration these settings describe?"""
        return self.node_id in self.voters

    @property
    def peers(self) -> tuple[str, ...]:
        """The other voters."""
        return tuple(v for v in self.voters if v != self.node_id)

    @property
    def replicas(self) -> tuple[str, ...]:
        """Every other member, voter or learner: whom a leader replicates to."""
        return tuple(v for v in self.voters + self.learners if v != self.node_id)

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    @property
    def lease_duration(self) -> int:
        return int(self.election_timeout_min * (1.0 - self.max_clock_drift))
