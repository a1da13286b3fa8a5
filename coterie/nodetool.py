"""``coterie nodetool``: look at and steer a running cluster.

Nodes are named by node id (with ``--config``), by ``host:port`` or by full actor path
(``coterie://n1@10.0.0.5:7101/user/node``); a name that is none of these is refused with what is
wrong with it. Commands:

* ``status``: one row per node (role, Raft membership as the leader sees it: voter, learner or
  ``-`` for none, term, last/commit/applied index, lag behind the leader's commit, the failure
  detector's membership state); an unreachable node gets a row saying so.
* ``leader``: the leader's id and address.
* ``transfer-leader NODE``: ask the leader to hand leadership to NODE, and wait until it has.
* ``add NODE_ID [ADDRESS]``: add a node (started with ``join = true``) as a learner, watch it
  catch up, then promote it to voter (the leader may promote it first, on its own); prints
  its progress. ADDRESS may be left out when ``--config`` lists the node.
* ``remove NODE_ID``: remove a node. Removing the leader hands leadership to the most
  caught-up voter first, then the new leader removes it; the old leader steps down and stops
  its Raft once the change commits.

Membership changes go to the leader (``consensus.shell.membership_changes``), one at a time;
nodetool follows leader hints and retries refusals that are only "not now" (another change in
progress, a leadership transfer, the learner still behind) until ``--wait`` runs out.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from actors import ActorRef, ActorSystem, CurveConfig, configure_logging
from actors.paths import ANY_SYSTEM, ActorPath, InvalidActorPath
from consensus.shell.protocol import NodeStatus, StatusRequest, TransferLeadership
from coterie import membership_tool
from coterie.config import ClusterConfig, ConfigError, load
from coterie.errors import CliError
from membership.messages import GetMembershipStatus

NODE_PATH = ("user", "node")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("nodetool", help="inspect and steer a running cluster")
    parser.add_argument("--config", help="the cluster's TOML file (for node ids and cluster id)")
    parser.add_argument(
        "--node", action="append", default=[], help="a node: id, host:port or actor path"
    )
    parser.add_argument("--cluster-id", help="the cluster id (default: from --config)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    parser.add_argument(
        "--key",
        metavar="FILE",
        help="this tool's CURVE secret key (its public key listed in security.allowed_keys)",
    )
    commands = parser.add_subparsers(dest="nodetool_command", metavar="COMMAND", required=True)
    commands.add_parser("status", help="a table of every node")
    commands.add_parser("leader", help="which node leads")
    transfer = commands.add_parser("transfer-leader", help="hand leadership to NODE")
    transfer.add_argument("target", metavar="NODE")
    add = commands.add_parser("add", help="add NODE_ID as a learner, then promote it to voter")
    add.add_argument("node_id", metavar="NODE_ID")
    add.add_argument("address", metavar="ADDRESS", nargs="?", help="its host:port")
    add.add_argument("--wait", type=float, default=60.0, help="seconds to wait in all")
    remove = commands.add_parser("remove", help="remove NODE_ID from the cluster")
    remove.add_argument("node_id", metavar="NODE_ID")
    remove.add_argument("--wait", type=float, default=30.0, help="seconds to wait in all")
    parser.set_defaults(func=run)


def resolve(text: str, config: ClusterConfig | None) -> str:
    """The supervisor path of a node named by id, host:port or path; CliError if it is none."""
    text = text.strip()
    if "://" in text:
        try:
            path = ActorPath.parse(text)
        except InvalidActorPath as exc:
            raise CliError(f"node {text!r}: {exc.part}: {exc.reason}") from exc
        if path.address.endpoint is None:
            raise CliError(f"node {text!r}: the path has no host:port")
        if path.elements != NODE_PATH:
            raise CliError(f"node {text!r}: a node is addressed at /user/node, not {path.key}")
        return path.text
    if ":" in text:
        try:
            return ActorPath.parse(f"coterie://{ANY_SYSTEM}@{text}/user/node").text
        except InvalidActorPath as exc:
            raise CliError(f"node {text!r}: {exc.part}: {exc.reason}") from exc
    if config is None:
        raise CliError(f"node {text!r}: not host:port or an actor path (node ids need --config)")
    try:
        node = config.node(text)
    except ConfigError as exc:
        raise CliError(f"node {text!r}: {exc}") from exc
    return f"coterie://{node.id}@{node.address}/user/node"


class Tool:
    def __init__(self, args: argparse.Namespace) -> None:
        self.config: ClusterConfig | None = None
        if args.config:
            try:
                self.config = load(args.config)
            except ConfigError as exc:
                raise CliError(str(exc)) from exc
        names = args.node or ([n.id for n in self.config.nodes] if self.config else [])
        if not names:
            raise CliError("name the nodes with --node (repeatable) or give --config")
        self.paths = [resolve(name, self.config) for name in names]
        cluster_id = args.cluster_id or (self.config.cluster_id if self.config else "coterie")
        self.timeout = args.timeout
        curve = self._curve(getattr(args, "key", None))
        self.system = ActorSystem("nodetool", host="127.0.0.1", cluster_id=cluster_id, curve=curve)

    def _curve(self, key: str | None) -> CurveConfig | None:
        """The tool's CURVE keys: a cluster with curve on answers no one without them, so
        asking anyway would only time out; say what is missing instead."""
        if self.config is None:
            if key:
                raise CliError("--key needs --config (the nodes' public keys are named there)")
            return None
        if not self.config.security.curve:
            return None
        if not key:
            raise CliError(
                f"{self.config.path}: security.curve = true: give --key FILE, a secret key "
                "whose public key is listed in security.allowed_keys (see coterie keygen)"
            )
        try:
            return self.config.client_curve(key)
        except ConfigError as exc:
            raise CliError(str(exc)) from exc

    def close(self) -> None:
        self.system.shutdown()

    def ask(self, path: str, message: Any) -> Any:
        ref: ActorRef = self.system.ref(path)
        return ref.ask(message, timeout=self.timeout).result(self.timeout + 1)

    def statuses(self) -> dict[str, NodeStatus | Exception]:
        futures = {
            path: self.system.ref(path).ask(StatusRequest(), timeout=self.timeout)
            for path in self.paths
        }
        out: dict[str, NodeStatus | Exception] = {}
        for path, future in futures.items():
            try:
                out[path] = future.result(self.timeout + 1)
            except Exception as exc:
                out[path] = exc
        return out

    def membership_state(self, path: str) -> str:
        try:
            return str(self.ask(f"{path}/membership", GetMembershipStatus()).state)
        except Exception:
            return "-"

    def leader(self) -> tuple[str, NodeStatus] | None:
        """The node that says it leads, in the highest term if a deposed one still thinks so."""
        leaders = [
            (path, status)
            for path, status in self.statuses().items()
            if isinstance(status, NodeStatus) and status.role == "leader"
        ]
        return max(leaders, key=lambda found: found[1].term) if leaders else None


def run(args: argparse.Namespace) -> int:
    configure_logging("error", json=False)
    tool = Tool(args)
    try:
        match args.nodetool_command:
            case "status":
                return status(tool)
            case "leader":
                found = tool.leader()
                if found is None:
                    print("no leader among the reachable nodes", file=sys.stderr)
                    return 1
                path, st = found
                print(f"{st.node_id} {path.split('@', 1)[1].split('/', 1)[0]} term {st.term}")
                return 0
            case "transfer-leader":
                return transfer(tool, args.target)
            case "add":
                return membership_tool.add(tool, args.node_id, args.address, args.wait)
            case "remove":
                return membership_tool.remove(tool, args.node_id, args.wait)
        raise CliError(f"unknown command {args.nodetool_command!r}")
    finally:
        tool.close()


def status(tool: Tool) -> int:
    statuses = tool.statuses()
    leaders = [s for s in statuses.values() if isinstance(s, NodeStatus) and s.role == "leader"]
    leader = max(leaders, key=lambda s: s.term) if leaders else None
    commit = leader.commit_index if leader is not None else None
    header = (
        "node",
        "address",
        "role",
        "member",
        "term",
        "last",
        "commit",
        "applied",
        "lag",
        "membership",
    )
    rows = [header]
    for path, st in statuses.items():
        address = path.split("@", 1)[1].split("/", 1)[0]
        if isinstance(st, Exception):
            rows.append(("?", address, "unreachable", "", "", "", "", "", "", type(st).__name__))
            continue
        lag = "" if commit is None else str(max(0, commit - st.applied_index))
        rows.append(
            (
                st.node_id,
                address,
                st.role,
                member_of(st, leader),
                str(st.term),
                str(st.last_index),
                str(st.commit_index),
                str(st.applied_index),
                lag,
                tool.membership_state(path),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    reachable = sum(isinstance(s, NodeStatus) for s in statuses.values())
    return 0 if reachable == len(statuses) else 1


def member_of(status: NodeStatus, leader: NodeStatus | None) -> str:
    """voter, learner or - (no member), by the leader's configuration (the node's own view
    when no leader answers)."""
    view = leader or status
    if status.node_id in view.voters:
        return "voter"
    return "learner" if status.node_id in view.learners else "-"


def transfer(tool: Tool, target_name: str) -> int:
    target_path = resolve(target_name, tool.config)
    try:
        target: NodeStatus = tool.ask(target_path, StatusRequest())
    except Exception as exc:
        raise CliError(f"node {target_name!r} does not answer: {exc}") from exc
    found = tool.leader()
    if found is None:
        raise CliError("no leader among the reachable nodes")
    leader_path, leader = found
    if leader.node_id == target.node_id:
        print(f"{target.node_id} already leads (term {leader.term})")
        return 0
    tool.ask(leader_path, TransferLeadership(target.node_id))
    deadline = time.monotonic() + 10 * tool.timeout
    while time.monotonic() < deadline:
        try:
            now: NodeStatus = tool.ask(target_path, StatusRequest())
        except Exception:
            now = target
        if now.role == "leader":
            print(f"{now.node_id} leads now (term {now.term})")
            return 0
        time.sleep(0.05)
    print(f"leadership did not move to {target.node_id} in time", file=sys.stderr)
    return 1
