"""NodeSettings: everything one Raft node process needs to start, already validated.

Built from the cluster configuration file (or directly in tests). Node ids double as actor
system names, so the path of node ``n2``'s supervisor is ``coterie://n2@<address>/user/node``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import TYPE_CHECKING

from consensus.config import RaftConfig

if TYPE_CHECKING:
    from membership.supervisor import AnyMembershipConfig

SUPERVISOR_NAME = "node"
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_ADDRESS = re.compile(r"[A-Za-z0-9.:\[\]-]+:\d{1,5}\Z")
DURABILITY_POLICIES = ("always", "group", "never")


class SettingsError(ValueError):
    """A bad setting; the message names it."""


@dataclasses.dataclass(frozen=True)
class NodeSettings:
    raft: RaftConfig
    # node id -> "host:port" of every node known at start: the voters, this node (also when
    # it is joining: not a voter of its bootstrap configuration) and any other it may reach
    addresses: dict[str, str]
    data_dir: pathlib.Path
    cluster_id: str = "coterie"
    durability: str = "always"
    group_commit_ms: float = 2.0
    segment_bytes: int = 64 << 20
    membership: AnyMembershipConfig | None = None

    def __post_init__(self) -> None:
        for node_id in dict.fromkeys((*self.raft.voters, self.raft.node_id, *self.addresses)):
            if not _NODE_ID.match(node_id):
                raise SettingsError(
                    f"node id {node_id!r}: use letters, digits, '-' and '_' (at most 64)"
                )
            address = self.addresses.get(node_id)
            if address is None:
                raise SettingsError(f"addresses: no address for node {node_id!r}")
            if not _ADDRESS.match(address):
                raise SettingsError(f"addresses.{node_id}: {address!r} is not host:port")
            port = int(address.rsplit(":", 1)[1])
            if not 0 < port < 65536:
                raise SettingsError(f"addresses.{node_id}: port {port} out of range")
        if self.durability not in DURABILITY_POLICIES:
            raise SettingsError(
                f"durability: {self.durability!r} is not one of {', '.join(DURABILITY_POLICIES)}"
            )
        if not self.group_commit_ms > 0:
            raise SettingsError("group_commit_ms: must be positive")

    @property
    def node_id(self) -> str:
        return self.raft.node_id

    @property
    def address(self) -> str:
        return self.addresses[self.raft.node_id]

    @property
    def joining(self) -> bool:
        """Not a voter of the bootstrap configuration: it waits to be added, never campaigns."""
        return not self.raft.is_voter

    def supervisor_path(self, node_id: str) -> str:
        return supervisor_path(node_id, self.addresses[node_id])


def supervisor_path(node_id: str, address: str) -> str:
    """The path of node ``node_id``'s supervisor, listening at ``address`` (host:port)."""
    return f"coterie://{node_id}@{address}/user/{SUPERVISOR_NAME}"
