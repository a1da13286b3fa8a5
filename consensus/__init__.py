"""Raft consensus: sans-IO role behaviours (follower, candidate, leader), the role actors that
host them, client sessions and snapshots. Built on `actors` and `wal`; never touches a socket or
a file directly.

The core is :class:`RaftNode`: feed it peer messages (``step``), the time (``tick``), client
commands (``propose``) and reads (``read``, ``read_batch``), and the caller's reports
(``persisted``, ``applied``); each call returns a :class:`Ready` to carry out as
``consensus.ready`` describes. ``consensus.wal_storage.WalLogStorage`` puts a ``wal.SegmentedLog``
behind the core's log interface::

    node = RaftNode(RaftConfig("n1", ("n1", "n2", "n3")), MemoryLog(), HardState(),
                    random.Random(seed), now=0)
    ready = node.tick(now=300)      # persist ready.hard_state, then send ready.messages, ...
"""

from consensus.config import RaftConfig, ReadMode
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

__all__ = [
    "ALLOWED_TRANSITIONS",
    "ClientCommand",
    "ClientResponse",
    "ConsensusError",
    "Entry",
    "EntryKind",
    "HardState",
    "IllegalTransition",
    "LocalProtocolError",
    "LogReader",
    "LogStorage",
    "MemoryLog",
    "RaftConfig",
    "RaftNode",
    "ReadMode",
    "ReadState",
    "Ready",
    "RemoteProtocolError",
    "Role",
    "RoleChange",
    "SafetyViolation",
]
