"""The membership actors on real actor systems in one process, talking over 127.0.0.1: the
operator status ask, subscriptions, the leave ask, and the supervisor's pong."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from member_support import Events, everyone_up, status, wait_until

from actors import UNHANDLED, Actor, ActorRef, ActorSystem, Props, UnhandledMessage
from membership import (
    DetectorConfig,
    LeaveCluster,
    LeaveResult,
    MembershipConfig,
    MembershipStatus,
    MemberUnreachable,
    MemberUp,
    Unsubscribe,
    membership_path,
    start_node,
)
from membership.messages import MemberRemoved, Ping, Pong

# Five times faster than the defaults, same proportions: detection in about 0.9 s.
FAST = MembershipConfig(
    heartbeat_interval=0.1,
    tick_interval=0.02,
    detector=DetectorConfig(acceptable_pause=0.5, first_heartbeat_estimate=0.1),
    ref_ttl=1.0,
    down_after=1.5,
    seed_timeout=0.3,
    gossip_interval=0.2,
    leave_timeout=1.0,
    self_pause_tolerance=0.25,
)


class Cluster:
    def __init__(self, size: int) -> None:
        self.systems = [ActorSystem(f"m{i}", host="127.0.0.1") for i in range(size)]
        seed = self.systems[0].address.text
        self.nodes = [
            start_node(s, FAST.replace(seeds=(seed,)), incarnation=100 + i, rng_seed=i).path.text
            for i, s in enumerate(self.systems)
        ]
        self.operator = ActorSystem("operator", host="127.0.0.1")
        self.events = Events(self.operator)

    def close(self) -> None:
        for system in [*self.systems, self.operator]:
            system.shutdown()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(3)
    try:
        wait_until(lambda: everyone_up(c.operator, c.nodes), 10.0, "three nodes up")
        yield c
    finally:
        c.close()


def test_the_membership_table_is_answered_over_the_actor_protocol(cluster: Cluster) -> None:
    time.sleep(1.0)  # a few heartbeats of history
    for me in cluster.nodes:
        # Asked from another actor system, over ZeroMQ, as nodetool will.
        reply = status(cluster.operator, me)
        assert isinstance(reply, MembershipStatus)
        assert reply.node == me
        assert reply.state == "up"
        rows = {row.node: row for row in reply.members}
        assert set(rows) == set(cluster.nodes)
        for node, row in rows.items():
            assert row.state == "up"
            if node == me:
                assert row.phi is None and row.heartbeat_age is None
                continue
            assert row.phi is not None and 0.0 <= row.phi < 1.0
            assert row.heartbeat_age is not None
            assert 0.0 <= row.heartbeat_age < FAST.heartbeat_interval * 3
            assert row.ref_resolved
            assert row.evictions == 0
            assert row.rtt is not None and row.rtt < 0.1
        assert reply.counters["unknown_pongs"] == 0
        assert reply.counters["evictions"] == 0
        assert reply.counters["pongs"] > 10


def test_status_shows_a_dead_peer_with_high_phi_and_growing_age(cluster: Cluster) -> None:
    cluster.systems[2].shutdown()
    dead = cluster.nodes[2]

    def suspected() -> Any:
        rows = {r.node: r for r in status(cluster.operator, cluster.nodes[0]).members}
        row = rows.get(dead)
        return row if row is not None and row.state == "unreachable" else None

    row = wait_until(suspected, 5.0, "the stopped node shown unreachable")
    assert row.phi >= FAST.detector.threshold
    assert row.heartbeat_age > FAST.detector.acceptable_pause


def test_subscribers_get_a_replay_then_events_in_order(cluster: Cluster) -> None:
    observer = cluster.nodes[0]
    cluster.events.subscribe(cluster.operator, observer)
    wait_until(lambda: len(cluster.events.of(observer, MemberUp)) == 3, 3.0, "replay of 3 ups")
    cluster.systems[1].shutdown()
    dead = cluster.nodes[1]
    wait_until(
        lambda: cluster.events.of(observer, MemberRemoved, dead), 10.0, "the dead node removed"
    )
    about_dead = [type(e).__name__ for _, e in cluster.events.of(observer, about=dead)]
    assert about_dead == ["MemberUp", "MemberUnreachable", "MemberRemoved"]
    unreachable = cluster.events.first(observer, MemberUnreachable, dead)
    removed = cluster.events.first(observer, MemberRemoved, dead)
    assert unreachable is not None and removed is not None
    assert FAST.down_after - 0.3 <= removed - unreachable <= FAST.down_after + 1.0
    # Nobody else was suspected.
    assert {e.node for _, e in cluster.events.of(observer, MemberUnreachable)} == {dead}
    # Unsubscribed, it hears nothing more.
    cluster.operator.ref(membership_path(observer)).tell(Unsubscribe(cluster.events.ref.path.text))
    time.sleep(0.3)
    count = len(cluster.events.of(observer))
    cluster.systems[2].shutdown()
    time.sleep(1.5)
    assert len(cluster.events.of(observer)) == count


def test_leave_is_an_ask_answered_once_the_others_acknowledged(cluster: Cluster) -> None:
    for node in cluster.nodes:
        cluster.events.subscribe(cluster.operator, node)
    leaver = cluster.nodes[2]
    asked = time.monotonic()
    result = cluster.operator.ref(membership_path(leaver)).ask(LeaveCluster(), timeout=5.0).result()
    assert isinstance(result, LeaveResult)
    assert sorted(result.acknowledged_by) == sorted(cluster.nodes[:2])
    assert result.missing == []
    for observer in cluster.nodes[:2]:
        # Events and the ask's answer travel on different connections: either may come first.
        removed = wait_until(
            lambda o=observer: cluster.events.of(o, MemberRemoved, leaver), 2.0, "removal seen"
        )
        assert [e for _, e in removed] == [MemberRemoved(leaver, "left", "leaving")]
        assert removed[0][0] - asked < 0.5  # no waiting for the detector
    assert status(cluster.operator, leaver).state == "removed"
    # Asking again answers at once with the same result.
    again = cluster.operator.ref(membership_path(leaver)).ask(LeaveCluster(), 2.0).result()
    assert again == result


def test_a_told_leave_leaves_without_an_answer(cluster: Cluster) -> None:
    cluster.events.subscribe(cluster.operator, cluster.nodes[0])
    leaver = cluster.nodes[1]
    cluster.operator.ref(membership_path(leaver)).tell(LeaveCluster())
    wait_until(
        lambda: cluster.events.of(cluster.nodes[0], MemberRemoved, leaver), 2.0, "leave seen"
    )
    assert status(cluster.operator, leaver).state == "removed"


class Prober(Actor):
    """Pings a supervisor path with itself as the sender and keeps the pongs."""

    def __init__(self, pongs: list[Pong], got: threading.Event) -> None:
        self.pongs = pongs
        self.got = got

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        match message:
            case ("ping", path, seq):
                self.ctx.system.ref(path).tell(Ping(seq))
                return None
            case Pong():
                self.pongs.append(message)
                self.got.set()
                return None
        return UNHANDLED


def test_the_real_supervisor_pong_names_the_supervisor_path(cluster: Cluster) -> None:
    pongs: list[Pong] = []
    got = threading.Event()
    prober = cluster.operator.spawn(Props(Prober, pongs, got), "prober")
    prober.tell(("ping", cluster.nodes[1], 77))
    assert got.wait(3.0)
    assert pongs == [Pong(cluster.nodes[1], 101, 77)]
    assert pongs[0].supervisor.endswith("/user/node")
    # The membership child is not a ping target: Sirius' mix-up cannot be wired by accident.
    reply = cluster.operator.ref(membership_path(cluster.nodes[1])).ask(Ping(1), 2.0)
    with pytest.raises(UnhandledMessage, match="not handled"):
        reply.result()
