"""Running the follow protocol inside processes: the ``/log`` server of a Raft node, and a
whole follower-only node (``coterie node --id <follower>`` or ``--follow URI``).

A Raft node's log is opened by its supervisor actor (``consensus.shell``), so the server
learns of it through :class:`LogPublishingSupervisor`, which only adds one callback after the
supervisor's own ``pre_start``: no change to the Raft shell. How far it may serve comes from
the node's published state (``NodeMetrics.state``: term and commit index), see
:mod:`follow.source`. Snapshots are read from ``<data_dir>/snapshots``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
from collections.abc import Callable
from typing import Any

import structlog

from actors import Props
from consensus.shell.metrics import NodeMetrics
from consensus.shell.settings import NodeSettings
from consensus.shell.state_machine import StateMachine
from consensus.shell.supervisor import RaftSupervisor
from follow.client import parse_uri
from follow.config import FollowConfig, FollowConfigError, FollowerEntry
from follow.config import load as load_follow
from follow.follower import Follower
from follow.server import LogServer
from follow.source import RaftServable, SharedLogLike, WalSource
from follow.window import Window

log = structlog.get_logger(__name__)

SNAPSHOT_DIR = "snapshots"


class LogPublishingSupervisor(RaftSupervisor):
    """The node supervisor, telling `on_log` about the shared log each time it opens it."""

    def __init__(
        self,
        settings: NodeSettings,
        machine: StateMachine,
        rng: Any,
        metrics: NodeMetrics | None,
        on_log: Callable[[SharedLogLike], None],
    ) -> None:
        super().__init__(settings, machine, rng, metrics)
        self._on_log = on_log

    def pre_start(self) -> None:
        super().pre_start()
        assert self.storage is not None
        self._on_log(self.storage.shared)


def raft_node_props(
    settings: NodeSettings,
    machine: StateMachine,
    metrics: NodeMetrics,
    log_address: str | None,
) -> tuple[Props, LogServer | None]:
    """The supervisor's Props for a node, and its log server when `log_address` is set
    (already listening; OSError if it cannot)."""
    if log_address is None:
        return Props(RaftSupervisor, settings, machine, None, metrics), None

    def state() -> tuple[int, int]:
        term, _role, commit, _applied, _last = metrics.state
        return term, commit

    source = WalSource(RaftServable(state), settings.data_dir / SNAPSHOT_DIR)
    server = LogServer(log_address, source)
    log.info("follow.log_served", node=settings.node_id, address=server.address)
    props = Props(LogPublishingSupervisor, settings, machine, None, metrics, source.attach)
    return props, server


def follow_config(config: Any) -> FollowConfig:
    """The ``[follow]`` table of a loaded ``coterie.config.ClusterConfig``."""
    taken = {n.address for n in config.nodes} | {
        n.metrics_address for n in config.nodes if n.metrics_address
    }
    return load_follow(config.path, {n.id for n in config.nodes}, taken)


def follower_entry(
    follow: FollowConfig, node_id: str, uri: str | None, data_dir: pathlib.Path | None = None
) -> FollowerEntry:
    """Follower `node_id`: its ``[[follow.followers]]`` entry with `uri` and `data_dir`
    overriding the file's when given; a follower not in the file needs both (so dozens of
    read replicas need not be listed in the file every voter reads)."""
    entry = follow.followers.get(node_id)
    if entry is None:
        if data_dir is None:
            raise FollowConfigError(
                f"no follower {node_id!r} in [[follow.followers]]: add one (id, data_dir) "
                "or give --data-dir"
            )
        entry = FollowerEntry(node_id, data_dir, None)
    elif data_dir is not None:
        entry = dataclasses.replace(entry, data_dir=data_dir)
    source = uri or entry.source
    if source is None:
        raise FollowConfigError(f"follower {node_id!r}: no source in the file and no --follow URI")
    parse_uri(source)  # ValueError naming it
    return dataclasses.replace(entry, source=source)


def run_follower(
    entry: FollowerEntry,
    machine: StateMachine,
    stop: threading.Event,
    *,
    log_address: str | None = None,
    durability: str = "group",
    segment_bytes: int = 64 << 20,
) -> None:
    """Follow until `stop` is set, serving ``/log`` and reads on `log_address`."""
    assert entry.source is not None
    follower = Follower(
        entry.source,
        entry.data_dir,
        machine,
        durability=durability,
        segment_bytes=segment_bytes,
        timeout=entry.timeout_s,
        window=Window(initial=entry.initial_window, maximum=entry.max_window),
        name=entry.id,
        snapshot_every=entry.snapshot_every_entries,
    )
    server = None
    try:
        if log_address is not None:
            server = LogServer(log_address, follower.source(), follower.query)
            server.extra_status = follower.status
            log.info("follow.log_served", follower=entry.id, address=server.address)
        log.info("follow.started", follower=entry.id, uri=entry.source, applied=follower.applied)
        follower.run(stop)
    finally:
        if server is not None:
            server.close()
        follower.close()
