"""``coterie node --config FILE --id ID``: run one node of a cluster in this process.

Starts the actor system on the node's address, then the node supervisor at ``/user/node``
(which starts the log writer, the state machine actor, membership and the Raft role actors),
and serves until SIGTERM or SIGINT, on which it shuts down cleanly. With ``metrics_address``
set for the node in the config, its Prometheus metrics are served at
``http://<metrics_address>/metrics``.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

import structlog

from actors import ActorRef, ActorSystem, Props, configure_logging
from consensus.shell.metrics import NodeMetrics
from consensus.shell.protocol import StatusRequest, TransferLeadership
from consensus.shell.supervisor import RaftSupervisor
from coterie.config import ConfigError, load
from coterie.errors import CliError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("node", help="run one node of a cluster")
    parser.add_argument("--config", required=True, help="the cluster's TOML file")
    parser.add_argument("--id", required=True, dest="node_id", help="this node's id")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--json-logs", action="store_true", help="JSON logs even on a terminal")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=True if args.json_logs else None)
    try:
        config = load(args.config)
        settings = config.settings_for(args.node_id)
        metrics_address = config.node(args.node_id).metrics_address
        machine = config.load_state_machine_class()()
        curve = config.curve_for(args.node_id)  # reads the key files: a bad one fails here
    except ConfigError as exc:
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
    try:
        if metrics_address is not None:
            try:
                metrics.serve(metrics_address)
            except OSError as exc:
                raise CliError(f"metrics_address {metrics_address}: cannot listen: {exc}") from exc
            structlog.get_logger("coterie.node").info("metrics served", address=metrics_address)
        node = system.spawn(Props(RaftSupervisor, settings, machine, None, metrics), "node")
        stop.wait()
        hand_over_leadership(node, settings.raft.election_timeout_max / 1000.0)
    finally:
        system.shutdown()
        metrics.close()
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
