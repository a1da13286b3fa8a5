"""Raft consensus: sans-IO role behaviours (follower, candidate, leader), the role actors that
host them, client sessions and snapshots. Built on `actors` and `wal`; never touches a socket or
a file directly.

The core is :class:`RaftNode`: feed it peer messages (``step``), the time (``tick``), client
commands (``propose``), reads (``read``, ``read_batch``) and membership changes
(``change_membership``), and the caller's reports (``persisted``, ``applied``, and for
snapshots ``snapshot_taken``, ``snapshot_chunk``, ``snapshot_written``); each call returns a
:class:`Ready` to carry out as ``consensus.ready`` describes. ``consensus.configuration`` holds
cluster membership, ``consensus.snapshots`` the snapshot flow, ``consensus.sessions`` the
exactly-once session layer that wraps a user's state machine.
``consensus.wal_storage.WalLogStorage`` puts a ``wal.SegmentedLog`` behind the core's log
interface::

    node = RaftNode(RaftConfig("n1", ("n1", "n2", "n3")), MemoryLog(), HardState(),
                    random.Random(seed), now=0)
    ready = node.tick(now=300)      # persist ready.hard_state, then send ready.messages, ...
"""

from consensus.config import RaftConfig, ReadMode
from consensus.configuration import (
    AddLearner,
    InvalidChange,
    Membership,
    MembershipChange,
    PromoteLearner,
    RemoveServer,
)
from consensus.errors import (
    ConsensusError,
    IllegalTransition,
    LocalProtocolError,
    RemoteProtocolError,
    SafetyViolation,
)
from consensus.log import LogReader, LogStorage, MemoryLog
from consensus.messages import ClientCommand, ClientResponse, Entry, EntryKind
from consensus.node import ALLOWED_TRANSITIONS, RaftNode
from consensus.ready import HardState, ReadState, Ready, Role, RoleChange
from consensus.sessions import SessionStateMachine
from consensus.snapshots import ChunkRead, ChunkWrite, SnapshotInfo, SnapshotInstall

__all__ = [
    "ALLOWED_TRANSITIONS",
    "AddLearner",
    "ChunkRead",
    "ChunkWrite",
    "ClientCommand",
    "ClientResponse",
    "ConsensusError",
    "Entry",
    "EntryKind",
    "HardState",
    "IllegalTransition",
    "InvalidChange",
    "LocalProtocolError",
    "LogReader",
    "LogStorage",
    "Membership",
    "MembershipChange",
    "MemoryLog",
    "PromoteLearner",
    "RaftConfig",
    "RaftNode",
    "ReadMode",
    "ReadState",
    "Ready",
    "RemoteProtocolError",
    "RemoveServer",
    "Role",
    "RoleChange",
    "SafetyViolation",
    "SessionStateMachine",
    "SnapshotInfo",
    "SnapshotInstall",
]
