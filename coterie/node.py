"""``coterie node --config FILE --id ID``: run one node of a cluster in this process.

Starts the actor system on the node's address, then the node supervisor at ``/user/node``
(which starts the log writer, the state machine actor, membership and the Raft role actors),
and serves until SIGTERM or SIGINT, on which it shuts down cleanly. With ``metrics_address``
set for the node in the config, its Prometheus metrics are served at
``http://<metrics_address>/metrics``. With ``[follow.serve]`` naming the node, its committed
log is served over HTTP (``follow/``). An id of ``[[follow.followers]]`` (or ``--follow URI``)
runs a follower-only node instead: it pulls the log over HTTP and never votes.
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import threading
import time
from typing import Any

import structlog

from actors import ActorRef, ActorSystem, configure_logging
from consensus.shell.metrics import NodeMetrics
from consensus.shell.protocol import StatusRequest, TransferLeadership
from coterie.config import ClusterConfig, ConfigError, load
from coterie.errors import CliError
from follow.config import FollowConfig, FollowConfigError
from follow.node import follow_config, follower_entry, raft_node_props, run_follower
from wal.errors import WalError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("node", help="run one node of a cluster")
    parser.add_argument("--config", required=True, help="the cluster's TOML file")
    parser.add_argument("--id", required=True, dest="node_id", help="this node's id")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--json-logs", action="store_true", help="JSON logs even on a terminal")
    parser.add_argument(
        "--follow",
        metavar="URI",
        help="run follower ID of [[follow.followers]]: pull the committed log from URI "
        "(http://host:port of a node, a follower or a load balancer); never votes",
    )
    parser.add_argument(
        "--data-dir", type=pathlib.Path, help="a follower's data directory (one not in the file)"
    )
    parser.add_argument(
        "--serve", metavar="HOST:PORT", help="a follower's /log and /query endpoint"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=True if args.json_logs else None)
    try:
        config = load(args.config)
        follow = follow_config(config)
        if args.follow or args.data_dir or args.serve or args.node_id in follow.followers:
            return run_follower_node(args, config, follow)
        settings = config.settings_for(args.node_id)
        metrics_address = config.node(args.node_id).metrics_address
        machine = config.load_state_machine_class()()
        curve = config.curve_for(args.node_id)  # reads the key files: a bad one fails here
    except (ConfigError, FollowConfigError) as exc:
        raise CliError(str(exc)) from exc
    host, _, port = settings.address.rpartition(":")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    system = ActorSystem(
        settings.node_id, host=host, port=int(port), cluster_id=settings.cluster_id, curve=curve
    )
    metrics = NodeMetrics(settings.node_id, system.stats)
    log_server = None
    try:
        if metrics_address is not None:
            try:
                metrics.serve(metrics_address)
            except OSError as exc:
                raise CliError(f"metrics_address {metrics_address}: cannot listen: {exc}") from exc
            structlog.get_logger("coterie.node").info("metrics served", address=metrics_address)
        log_address = follow.serve.get(args.node_id)
        try:
            props, log_server = raft_node_props(settings, machine, metrics, log_address)
        except OSError as exc:
            raise CliError(f"follow.serve.{args.node_id}: cannot listen: {exc}") from exc
        node = system.spawn(props, "node")
        stop.wait()
        hand_over_leadership(node, settings.raft.election_timeout_max / 1000.0)
    finally:
        system.shutdown()
        metrics.close()
        if log_server is not None:
            log_server.close()
    return 0


def run_follower_node(args: argparse.Namespace, config: ClusterConfig, follow: FollowConfig) -> int:
    """``--follow``, or an id of ``[[follow.followers]]``: a follower-only node (follow/)."""
    if args.node_id in {n.id for n in config.nodes}:
        raise CliError(
            f"{args.node_id!r} is a Raft node of {config.path}; a follower has its own id"
        )
    try:
        entry = follower_entry(follow, args.node_id, args.follow, args.data_dir)
        log_address = args.serve or follow.serve.get(args.node_id)
        if log_address is not None and not _is_host_port(log_address):
            raise CliError(f"--serve {log_address!r} is not host:port")
        machine = config.load_state_machine_class()()
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        run_follower(
            entry,
            machine,
            stop,
            log_address=log_address,
            durability=config.wal.get("durability", "always"),
            segment_bytes=int(config.wal.get("segment_mb", 64)) << 20,
        )
    except (OSError, WalError) as exc:  # a port in use, a log open elsewhere, ...
        raise CliError(f"follower {args.node_id}: {exc}") from exc
    return 0


def hand_over_leadership(node: ActorRef, within: float) -> None:
    """On a graceful stop, a leader first hands leadership to its most caught-up follower, so
    the cluster does not wait an election timeout to notice it is gone."""
    log = structlog.get_logger("coterie.node")
    try:
        status = node.ask(StatusRequest(), timeout=1.0).result(2.0)
        if status.role != "leader":
            return
        node.ask(TransferLeadership(""), timeout=1.0).result(2.0)
        deadline = time.monotonic() + 2 * within
        while time.monotonic() < deadline:
            status = node.ask(StatusRequest(), timeout=1.0).result(2.0)
            if status.role != "leader":
                log.info("leadership handed over before shutdown", leader=status.leader)
                return
            time.sleep(0.02)
        log.warning("leadership transfer did not complete before shutdown")
    except Exception as exc:
        log.warning("leadership transfer before shutdown failed", error=repr(exc))


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536
