"""``coterie node --config FILE --id ID``: run one node of a cluster in this process.

Starts the actor system on the node's address, then the node supervisor at ``/user/node``
(which starts the log writer, the state machine actor, membership and the Raft role actors),
and serves until SIGTERM or SIGINT, on which it shuts down cleanly.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from actors import ActorSystem, Props, configure_logging
from coterie.cli import CliError
from coterie.config import ConfigError, load


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("node", help="run one node of a cluster")
    parser.add_argument("--config", required=True, help="the cluster's TOML file")
    parser.add_argument("--id", required=True, dest="node_id", help="this node's id")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--json-logs", action="store_true", help="JSON logs even on a terminal")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from consensus.shell.supervisor import RaftSupervisor  # noqa: PLC0415

    configure_logging(args.log_level, json=True if args.json_logs else None)
    try:
        config = load(args.config)
        settings = config.settings_for(args.node_id)
        machine = config.load_state_machine_class()()
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    host, _, port = settings.address.rpartition(":")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    system = ActorSystem(
        settings.node_id, host=host, port=int(port), cluster_id=settings.cluster_id
    )
    try:
        system.spawn(Props(RaftSupervisor, settings, machine), "node")
        stop.wait()
    finally:
        system.shutdown()
    return 0
