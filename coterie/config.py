"""The cluster configuration file (TOML): parsed, every key validated, turned into the
:class:`~consensus.shell.settings.NodeSettings` of one node.

One file describes the whole cluster, so every node reads the same file::

    cluster_id = "demo"
    state_machine = "examples.counter:Counter"

    [[nodes]]
    id = "n1"
    address = "127.0.0.1:7101"
    data_dir = "data/n1"          # relative paths are relative to this file
    metrics_address = "127.0.0.1:9101"  # optional: Prometheus /metrics here; off when absent
    join = false                  # optional: true for a node added later (see below)

    [raft]                        # all optional
    election_timeout_min_ms = 300
    election_timeout_max_ms = 600
    heartbeat_interval_ms = 75
    read_mode = "read_index"      # or "lease"
    snapshot_threshold_entries = 100000   # snapshot + compact past this many applied entries
    snapshot_trailing_entries = 128       # entries kept behind a snapshot for slow followers
    snapshot_chunk_bytes = 1048576        # InstallSnapshot chunk size
    promote_lag_entries = 16      # a learner this close to the leader's log may become a voter
    auto_promote = true           # the leader promotes them itself (false: `nodetool add` does)

    [wal]                         # all optional
    durability = "always"         # "group" or "never"; configuration entries are always synced
    group_commit_ms = 2.0
    segment_mb = 64

    [membership]                  # optional
    protocol = "gossip"           # or "rapid": K observers per member, consistent views

    [security]                    # required; see coterie/security.py
    curve = true                  # false runs without authentication or encryption
    secret_key_file = "keys/{id}.key_secret"   # {id}: the node id (`coterie keygen`)
    public_key_file = "keys/{id}.key"
    allowed_keys = ["keys/client.key"]         # optional: clients and tools that may connect

The nodes without ``join = true`` form the cluster: they are its first voters, and a node
started with an empty log among them joins them as a member. A node with ``join = true`` is
not part of that first configuration: started, it never campaigns and never forms a cluster
of its own (Copycat's split brain at start-up); it waits until the leader adds it
(``coterie nodetool add``) and replicates the log to it. Once its log holds a configuration
entry, that entry, not this file, says who the members are, also after a restart.

An unknown key, a missing key or a bad value raises :class:`ConfigError` naming the key
(``nodes[1].address: '127.0.0.1' is not host:port``).
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import tomllib
from typing import Any

from actors.security import CurveConfig, KeyFileError
from consensus.config import RaftConfig, ReadMode
from consensus.shell.settings import NodeSettings, SettingsError
from coterie.security import SecuritySettings, parse_security
from membership.config import MembershipConfig
from membership.rapid.actor import RapidMembershipConfig


class ConfigError(ValueError):
    """A bad configuration; the message starts with the file and the key."""


_TOP = {"cluster_id", "state_machine", "nodes", "raft", "wal", "security", "follow", "membership"}
# [membership] protocol: the gossip membership (phi accrual, every node watches every other)
# or Rapid (K observers per member, consistent view changes; for large actor systems).
MEMBERSHIP_PROTOCOLS = ("gossip", "rapid")
_NODE = {"id", "address", "data_dir", "metrics_address", "join"}
_RAFT = {
    "election_timeout_min_ms": ("election_timeout_min", int),
    "election_timeout_max_ms": ("election_timeout_max", int),
    "heartbeat_interval_ms": ("heartbeat_interval", int),
    "max_entries_per_message": ("max_entries_per_message", int),
    "max_bytes_per_message": ("max_bytes_per_message", int),
    "max_inflight": ("max_inflight", int),
    "pre_vote": ("pre_vote", bool),
    "check_quorum": ("check_quorum", bool),
    "read_mode": ("read_mode", str),
    # Snapshots: take one when the applied log since the last one passes this many entries
    # (0: never); keep this many entries behind it; send it in chunks of this many bytes.
    "snapshot_threshold_entries": ("snapshot_threshold_entries", int),
    "snapshot_trailing_entries": ("snapshot_trailing_entries", int),
    "snapshot_chunk_bytes": ("snapshot_chunk_bytes", int),
    # Membership changes: a learner within this many entries of the leader's log may become a
    # voter; with auto_promote the leader promotes such learners by itself, one at a time.
    "promote_lag_entries": ("promote_lag", int),
    "auto_promote": ("auto_promote", bool),
}
# The least value of each snapshot key (checked here, so the error names the TOML key).
_RAFT_MINIMUM = {
    "snapshot_threshold_entries": 0,
    "snapshot_trailing_entries": 0,
    "snapshot_chunk_bytes": 1,
    "promote_lag_entries": 0,
}
_WAL = {"durability": str, "group_commit_ms": (int, float), "segment_mb": int}


@dataclasses.dataclass(frozen=True)
class NodeEntry:
    id: str
    address: str
    data_dir: pathlib.Path
    metrics_address: str | None = None
    join: bool = False  # not in the first configuration: waits to be added


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    path: pathlib.Path
    cluster_id: str
    state_machine: str
    nodes: tuple[NodeEntry, ...]
    raft: dict[str, Any]
    wal: dict[str, Any]
    security: SecuritySettings
    membership_protocol: str = "gossip"

    def node(self, node_id: str) -> NodeEntry:
        for node in self.nodes:
            if node.id == node_id:
                return node
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError(f"{self.path}: no node with id {node_id!r} (nodes: {known})")

    def settings_for(self, node_id: str) -> NodeSettings:
        node = self.node(node_id)
        raft_kwargs = dict(self.raft)
        if "read_mode" in raft_kwargs:
            raft_kwargs["read_mode"] = ReadMode(raft_kwargs["read_mode"])
        # Every node of the file is a seed; the first one listed forms the cluster.
        seeds = tuple(f"coterie://{n.id}@{n.address}" for n in self.nodes)
        # The first configuration: the nodes not marked join (a joining node is not a voter
        # of its own bootstrap configuration, so it never campaigns).
        voters = tuple(n.id for n in self.nodes if not n.join)
        try:
            raft = RaftConfig(node_id, voters, **raft_kwargs)
            return NodeSettings(
                raft=raft,
                addresses={n.id: n.address for n in self.nodes},
                data_dir=node.data_dir,
                cluster_id=self.cluster_id,
                durability=self.wal.get("durability", "always"),
                group_commit_ms=float(self.wal.get("group_commit_ms", 2.0)),
                segment_bytes=int(self.wal.get("segment_mb", 64)) << 20,
                membership=(
                    RapidMembershipConfig(seeds=seeds)
                    if self.membership_protocol == "rapid"
                    else MembershipConfig(seeds=seeds)
                ),
            )
        except (ValueError, SettingsError) as exc:
            raise ConfigError(f"{self.path}: {exc}") from exc

    def curve_for(self, node_id: str) -> CurveConfig | None:
        """Node `node_id`'s CURVE keys (reads the key files), or None with curve = false."""
        self.node(node_id)
        try:
            return self.security.node_curve(node_id, [(n.id, n.address) for n in self.nodes])
        except KeyFileError as exc:
            raise ConfigError(f"{self.path}: {exc}") from exc

    def client_curve(self, secret_key_file: str | pathlib.Path) -> CurveConfig | None:
        """CURVE keys for a client or tool with its own secret key (listed in allowed_keys)."""
        try:
            return self.security.client_curve(
                pathlib.Path(secret_key_file), [(n.id, n.address) for n in self.nodes]
            )
        except KeyFileError as exc:
            raise ConfigError(f"{self.path}: {exc}") from exc

    def load_state_machine_class(self) -> type:
        module_name, _, class_name = self.state_machine.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, class_name)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"{self.path}: state_machine: cannot load {self.state_machine!r}: {exc}"
            ) from exc


def load(path: str | pathlib.Path) -> ClusterConfig:
    path = pathlib.Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse(data, path)


def parse(data: dict[str, Any], path: pathlib.Path) -> ClusterConfig:
    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {reason}")

    _reject_unknown(data, _TOP, "", fail)
    cluster_id = _required(data, "cluster_id", str, fail)
    state_machine = _required(data, "state_machine", str, fail)
    if ":" not in state_machine:
        raise fail("state_machine", f"{state_machine!r} is not 'module:Class'")
    nodes = _parse_nodes(data.get("nodes"), path, fail)
    raft = _section(data, "raft", fail)
    raft_kwargs = {}
    for key, value in raft.items():
        if key not in _RAFT:
            raise fail(f"raft.{key}", f"unknown key (known: {', '.join(sorted(_RAFT))})")
        name, kind = _RAFT[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise fail(f"raft.{key}", f"must be {kind.__name__}, got {value!r}")
        if key == "read_mode" and value not in {m.value for m in ReadMode}:
            raise fail(f"raft.{key}", f"{value!r} is not one of read_index, lease")
        if key in _RAFT_MINIMUM and value < _RAFT_MINIMUM[key]:
            raise fail(f"raft.{key}", f"must be at least {_RAFT_MINIMUM[key]}, got {value!r}")
        raft_kwargs[name] = value
    wal = _section(data, "wal", fail)
    for key, value in wal.items():
        if key not in _WAL:
            raise fail(f"wal.{key}", f"unknown key (known: {', '.join(sorted(_WAL))})")
        kind = _WAL[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise fail(f"wal.{key}", f"bad value {value!r}")
    if wal.get("durability", "always") not in ("always", "group", "never"):
        raise fail("wal.durability", f"{wal['durability']!r} is not one of always, group, never")
    security = parse_security(data.get("security"), path, fail)
    membership = _section(data, "membership", fail)
    _reject_unknown(membership, {"protocol"}, "membership.", fail)
    protocol = membership.get("protocol", "gossip")
    if protocol not in MEMBERSHIP_PROTOCOLS:
        raise fail(
            "membership.protocol", f"{protocol!r} is not one of {', '.join(MEMBERSHIP_PROTOCOLS)}"
        )
    config = ClusterConfig(
        path,
        cluster_id,
        state_machine,
        tuple(nodes),
        raft_kwargs,
        wal,
        security=security,
        membership_protocol=protocol,
    )
    # Check the cross-field rules (timeouts, ...) once, against the first node.
    config.settings_for(nodes[0].id)
    return config


def _parse_nodes(raw_nodes: Any, path: pathlib.Path, fail: Any) -> list[NodeEntry]:
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise fail("nodes", "at least one [[nodes]] table is required")
    nodes = []
    seen_ids: set[str] = set()
    seen_addresses: set[str] = set()
    for n, raw in enumerate(raw_nodes):
        where = f"nodes[{n}]"
        if not isinstance(raw, dict):
            raise fail(where, "must be a table")
        _reject_unknown(raw, _NODE, where + ".", fail)
        node_id = _required(raw, "id", str, fail, where + ".")
        address = _required(raw, "address", str, fail, where + ".")
        data_dir = pathlib.Path(_required(raw, "data_dir", str, fail, where + "."))
        if not data_dir.is_absolute():
            data_dir = path.parent / data_dir
        if node_id in seen_ids:
            raise fail(f"{where}.id", f"duplicate node id {node_id!r}")
        if address in seen_addresses:
            raise fail(f"{where}.address", f"duplicate address {address!r}")
        if not _is_host_port(address):
            raise fail(f"{where}.address", f"{address!r} is not host:port")
        seen_ids.add(node_id)
        seen_addresses.add(address)
        metrics_address = raw.get("metrics_address")
        if metrics_address is not None:
            key = f"{where}.metrics_address"
            if not isinstance(metrics_address, str) or not _is_host_port(metrics_address):
                raise fail(key, f"{metrics_address!r} is not host:port")
            if metrics_address in seen_addresses:
                raise fail(key, f"{metrics_address!r} is already in use by another endpoint")
            seen_addresses.add(metrics_address)
        join = raw.get("join", False)
        if not isinstance(join, bool):
            raise fail(f"{where}.join", f"must be true or false, got {join!r}")
        nodes.append(NodeEntry(node_id, address, data_dir, metrics_address, join))
    if all(node.join for node in nodes):
        raise fail("nodes", "every node has join = true; the nodes without it form the cluster")
    return nodes


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _reject_unknown(table: dict[str, Any], known: set[str], prefix: str, fail: Any) -> None:
    for key in table:
        if key not in known:
            raise fail(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(known))})")


def _required(table: dict[str, Any], key: str, kind: type, fail: Any, prefix: str = "") -> Any:
    if key not in table:
        raise fail(f"{prefix}{key}", "missing")
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, str) and not value):
        raise fail(f"{prefix}{key}", f"must be a non-empty {kind.__name__}, got {value!r}")
    return value


def _section(data: dict[str, Any], name: str, fail: Any) -> dict[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise fail(name, "must be a table")
    return section
