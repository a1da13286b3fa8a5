"""The Raft actor shell in one process: hard state durable before any reply leaves, and role
switches (forced by leadership transfers under load) that lose no message."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from actors import Actor, ActorRef, ActorSystem, Props
from actors.errors import ActorNotFound, AskTimeout
from consensus.config import RaftConfig
from consensus.log import MemoryLog
from consensus.messages import ClientCommand, RequestVote, RequestVoteResponse
from consensus.node import RaftNode
from consensus.ready import HardState
from consensus.shell.book import Book
from consensus.shell.protocol import Forwarded, StatusRequest, TransferLeadership
from consensus.shell.roles import FollowerActor
from consensus.shell.settings import NodeSettings
from consensus.shell.supervisor import RaftSupervisor
from consensus.shell.wiring import Wiring
from membership.rapid.actor import RapidMembershipConfig
from membership.rapid.messages import GetRapidStatus, RapidStatus
from tests.cluster.cluster import free_ports
from tests.cluster.recorder import Recorder
from wal.writer_messages import HardStateSaved, SaveHardState


class Probe(Actor):
    def __init__(self, seen: queue.Queue[Any]) -> None:
        self.seen = seen

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        self.seen.put(message)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def now_ms(self) -> int:
        return self.now


def test_a_vote_leaves_only_after_the_hard_state_is_durable() -> None:
    with ActorSystem("shell-test") as system:
        writes: queue.Queue[Any] = queue.Queue()
        sent: queue.Queue[Any] = queue.Queue()
        other: queue.Queue[Any] = queue.Queue()
        writer = system.spawn(Props(Probe, writes), "writer")
        peer = system.spawn(Props(Probe, sent), "peer")
        sink = system.spawn(Props(Probe, other), "sink")
        config = RaftConfig(
            "n1",
            ("n1", "n2", "n3"),
            election_timeout_min=1000,
            election_timeout_max=2000,
            heartbeat_interval=100,
        )
        core = RaftNode(config, MemoryLog(), HardState(), random.Random(7), now=0)
        clock = FakeClock()
        wiring = Wiring("n1", sink, writer, sink, {"n2": peer, "n3": peer}, {}, clock)  # type: ignore[arg-type]
        role = system.spawn(Props(FollowerActor, Book(core), wiring), "follower-1")
        clock.now = 1001  # past the vote hold a starting node keeps for one minimum timeout
        vote = RequestVote(term=5, source="n2", last_log_index=0, last_log_term=0)
        role.tell(Forwarded(vote, None, None))
        saved = writes.get(timeout=5)
        assert saved == SaveHardState(5, "n2")
        time.sleep(0.3)
        assert sent.empty(), "the vote left before the vote was durable"
        role.tell(Forwarded(HardStateSaved(5, "n2"), None, None))
        answer = sent.get(timeout=5)
        assert isinstance(answer, RequestVoteResponse)
        assert answer.granted and answer.term == 5


@pytest.fixture
def three_nodes(tmp_path) -> Iterator[tuple[list[ActorSystem], dict[str, str]]]:
    ids = ["n1", "n2", "n3"]
    ports = free_ports(3)
    addresses = {node: f"127.0.0.1:{port}" for node, port in zip(ids, ports, strict=True)}
    systems = []
    for node, port in zip(ids, ports, strict=True):
        system = ActorSystem(node, host="127.0.0.1", port=port, cluster_id="t")
        settings = NodeSettings(
            raft=RaftConfig(
                node,
                tuple(ids),
                election_timeout_min=300,
                election_timeout_max=600,
                heartbeat_interval=50,
            ),
            addresses=addresses,
            data_dir=tmp_path / node,
            cluster_id="t",
            durability="never",
        )
        system.spawn(Props(RaftSupervisor, settings, Recorder()), "node")
        systems.append(system)
    try:
        yield systems, addresses
    finally:
        for system in systems:
            system.shutdown()


def test_role_switches_under_load_drop_no_message(three_nodes) -> None:
    _systems, addresses = three_nodes
    client = ActorSystem("client", host="127.0.0.1", cluster_id="t")
    nodes = {
        node: client.ref(f"coterie://{node}@{address}/user/node")
        for node, address in addresses.items()
    }
    try:
        leader = wait_for_leader(nodes)
        stop = threading.Event()
        outcomes: dict[str, int] = {}
        lost: list[str] = []

        def hammer(worker: int) -> None:
            n = 0
            while not stop.is_set():
                for node, ref in nodes.items():
                    n += 1
                    command = ClientCommand(f"w{worker}-{n}", msgpack.packb([worker, n]))
                    try:
                        response = ref.ask(command, timeout=5).result(6)
                    except AskTimeout:
                        lost.append(f"{node}: {command.request_id}")
                        continue
                    key = "ok" if response.ok else str(response.error)
                    outcomes[key] = outcomes.get(key, 0) + 1

        workers = [threading.Thread(target=hammer, args=(w,)) for w in range(3)]
        for t in workers:
            t.start()
        transfers = 0
        for _ in range(6):
            target = random.choice([n for n in nodes if n != leader])
            nodes[leader].ask(TransferLeadership(target), timeout=5).result(6)
            new = wait_for_leader(nodes, not_this=leader)
            transfers += new != leader
            leader = new
            time.sleep(0.2)
        stop.set()
        for t in workers:
            t.join(30)
        assert not lost, f"asks lost in role switches: {lost[:5]}"
        assert transfers >= 4, transfers
        assert outcomes.get("ok", 0) > 50, outcomes
    finally:
        client.shutdown()


def wait_for_leader(nodes: dict[str, ActorRef], not_this: str | None = None) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for node, ref in nodes.items():
            try:
                status = ref.ask(StatusRequest(), timeout=1).result(2)
            except Exception:
                continue
            if status.role == "leader" and node != not_this:
                return node
        time.sleep(0.05)
    raise AssertionError("no leader")


def test_a_node_given_rapid_settings_runs_rapid_membership_beside_raft(tmp_path) -> None:
    """The node supervisor spawns whichever membership its settings carry; with Rapid's, a
    single node forms its own Rapid view and still answers membership pings as a supervisor."""
    port = free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    with ActorSystem("n1", host="127.0.0.1", port=port, cluster_id="t") as system:
        settings = NodeSettings(
            raft=RaftConfig("n1", ("n1",), election_timeout_min=300, election_timeout_max=600),
            addresses={"n1": address},
            data_dir=tmp_path / "n1",
            cluster_id="t",
            durability="never",
            membership=RapidMembershipConfig(),
        )
        system.spawn(Props(RaftSupervisor, settings, Recorder()), "node")
        membership = system.ref(f"coterie://n1@{address}/user/node/membership")
        deadline = time.monotonic() + 10
        status: Any = None
        while time.monotonic() < deadline:
            try:  # the supervisor spawns its children as it starts
                status = membership.ask(GetRapidStatus(), timeout=2).result(3)
            except ActorNotFound:
                status = None
            if status is not None and status.size == 1:
                break
            time.sleep(0.05)
        assert isinstance(status, RapidStatus)
        assert [member for member, _ in status.members] == [f"coterie://n1@{address}/user/node"]
        assert wait_for_leader({"n1": system.ref(f"coterie://n1@{address}/user/node")}) == "n1"
