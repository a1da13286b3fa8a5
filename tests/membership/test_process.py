"""Membership across real OS processes over 127.0.0.1: five members joined through one seed,
then SIGKILL, SIGSTOP/SIGCONT and a graceful leave, watched by a collector actor in the test
process that subscribed to every member's events.

Settings are twice as fast as the defaults in the same proportions (heartbeat 0.25 s,
acceptable pause 1.0 s): a crash is suspected about 1.8 s after the last heartbeat, and stalls
of the whole machine up to about 1.5 s are tolerated, which keeps two busy cores honest.
"""

from __future__ import annotations

import pathlib
import signal
import time
from collections.abc import Iterator

import pytest
from member_support import Events, Member, everyone_up, status, wait_until

from actors import ActorSystem
from membership import (
    DetectorConfig,
    LeaveCluster,
    MemberReachable,
    MemberRemoved,
    MemberUnreachable,
    MemberUp,
    membership_path,
)
from membership.phi import silence_at_threshold

pytestmark = pytest.mark.process

HERE = pathlib.Path(__file__).parent
HEARTBEAT = 0.25
DETECTOR = DetectorConfig(acceptable_pause=1.0, first_heartbeat_estimate=HEARTBEAT)
SETTINGS = {
    "heartbeat_interval": HEARTBEAT,
    "tick_interval": 0.05,
    "ref_ttl": 1.5,
    "seed_timeout": 0.5,
    "gossip_interval": 0.5,
    "leave_timeout": 1.0,
    "self_pause_tolerance": 0.3,
    "detector": {"acceptable_pause": 1.0, "first_heartbeat_estimate": HEARTBEAT},
}
# Suspicion comes this long after the last heartbeat with a steady history, plus a tick.
DETECTION = silence_at_threshold(HEARTBEAT, 0.0, DETECTOR) + SETTINGS["tick_interval"]


class ProcessCluster:
    def __init__(self, size: int, settings: dict, log_dir: pathlib.Path) -> None:
        self.members: list[Member] = []
        self.operator = ActorSystem("operator", host="127.0.0.1")
        self.events = Events(self.operator)
        try:
            seed = Member("p0", [], settings, log_dir)
            self.members.append(seed)
            seed.started()
            others = [Member(f"p{i}", [seed.address], settings, log_dir) for i in range(1, size)]
            self.members += others
            for member in others:
                member.started()
        except BaseException:
            self.close()
            raise
        self.nodes = [m.node for m in self.members]

    def wait_all_up(self, timeout: float = 15.0) -> None:
        wait_until(lambda: everyone_up(self.operator, self.nodes), timeout, "all members up")
        for node in self.nodes:
            self.events.subscribe(self.operator, node)
        # The subscription replays the current picture: every member up, seen by everyone.
        wait_until(
            lambda: all(len(self.events.of(n, MemberUp)) == len(self.nodes) for n in self.nodes),
            5.0,
            "every subscription replayed",
        )

    def close(self) -> None:
        for member in self.members:
            member.close()
        self.operator.shutdown()


@pytest.fixture
def make_cluster(tmp_path: pathlib.Path) -> Iterator:
    made: list[ProcessCluster] = []

    def make(size: int = 5, **overrides: object) -> ProcessCluster:
        cluster = ProcessCluster(size, {**SETTINGS, **overrides}, tmp_path)
        made.append(cluster)
        cluster.wait_all_up()
        return cluster

    yield make
    for cluster in made:
        cluster.close()


def unreachable_about(cluster: ProcessCluster, observer: str) -> set[str]:
    return {e.node for _, e in cluster.events.of(observer, MemberUnreachable)}


def test_five_members_join_through_one_seed_and_keep_their_refs(make_cluster) -> None:
    cluster = make_cluster(5)
    time.sleep(3.0)  # a dozen heartbeats between every pair
    for node in cluster.nodes:
        reply = status(cluster.operator, node)
        assert reply.state == "up"
        peers = [row for row in reply.members if row.node != node]
        assert len(peers) == 4 and all(row.state == "up" for row in peers)
        # The Sirius check, for real: every ref resolved once, never evicted, every pong
        # matched to the supervisor path that was pinged.
        assert all(row.ref_resolved and row.evictions == 0 for row in peers)
        assert reply.counters["resolutions"] == 4
        assert reply.counters["evictions"] == 0
        assert reply.counters["unknown_pongs"] == 0
        assert all(row.heartbeat_age is not None and row.heartbeat_age < 1.0 for row in peers)
        assert unreachable_about(cluster, node) == set()


def test_a_sigkilled_member_is_reported_unreachable_by_all_the_others_in_time(
    make_cluster,
) -> None:
    cluster = make_cluster(5, down_after=3.0)
    time.sleep(1.5)  # a steady heartbeat history
    victim = cluster.members[3]
    others = [n for n in cluster.nodes if n != victim.node]
    killed_at = time.monotonic()
    victim.signal(signal.SIGKILL)
    wait_until(
        lambda: all(cluster.events.first(n, MemberUnreachable, victim.node) for n in others),
        DETECTION + 3.0,
        "all four report the killed member unreachable",
    )
    for node in others:
        suspected = cluster.events.first(node, MemberUnreachable, victim.node)
        # "Within the configured time": the detector's suspicion time after the last
        # heartbeat (which came before the kill), plus a little for a loaded machine.
        assert suspected - killed_at <= DETECTION + 0.5, (node, suspected - killed_at)
    # Downed and removed after down_after, by everyone; nobody else ever suspected.
    wait_until(
        lambda: all(cluster.events.first(n, MemberRemoved, victim.node) for n in others),
        3.0 + 3.0,
        "the killed member removed",
    )
    for node in others:
        assert unreachable_about(cluster, node) == {victim.node}
        removed = [e for _, e in cluster.events.of(node, MemberRemoved)]
        assert [(e.node, e.reason) for e in removed] == [(victim.node, "down")]


def test_a_sigstopped_member_is_unreachable_then_reachable_after_sigcont(make_cluster) -> None:
    cluster = make_cluster(5, down_after=30.0)
    time.sleep(1.5)
    sleeper = cluster.members[2]
    others = [n for n in cluster.nodes if n != sleeper.node]
    sleeper.signal(signal.SIGSTOP)
    try:
        stopped_for = DETECTION + 1.5
        time.sleep(stopped_for)
        for node in others:
            assert cluster.events.first(node, MemberUnreachable, sleeper.node) is not None, node
    finally:
        sleeper.signal(signal.SIGCONT)
    wait_until(
        lambda: all(cluster.events.first(n, MemberReachable, sleeper.node) for n in others),
        5.0,
        "the continued member reachable again",
    )
    for node in others:
        kinds = [type(e) for _, e in cluster.events.of(node, about=sleeper.node)]
        assert kinds == [MemberUp, MemberUnreachable, MemberReachable]
        assert unreachable_about(cluster, node) == {sleeper.node}, "false suspicion"
    # The stopped member forgave the silence it caused itself and accused nobody.
    time.sleep(0.5)
    assert unreachable_about(cluster, sleeper.node) == set()
    assert status(cluster.operator, sleeper.node).counters["observer_pauses"] >= 1
    assert everyone_up(cluster.operator, cluster.nodes)


def test_a_graceful_leave_is_seen_by_all_without_waiting_for_detection(make_cluster) -> None:
    cluster = make_cluster(5)
    leaver = cluster.members[4]
    others = [n for n in cluster.nodes if n != leaver.node]
    asked = time.monotonic()
    leave = cluster.operator.ref(membership_path(leaver.node)).ask(LeaveCluster(), 5.0)
    result = leave.result()
    assert sorted(result.acknowledged_by) == sorted(others)
    assert result.missing == []
    wait_until(
        lambda: all(cluster.events.first(n, MemberRemoved, leaver.node) for n in others),
        2.0,
        "everyone saw the leave",
    )
    for node in others:
        removed = cluster.events.of(node, MemberRemoved, leaver.node)
        assert [e for _, e in removed] == [MemberRemoved(leaver.node, "left", "leaving")]
        # Far sooner than the detector could have noticed anything.
        assert removed[0][0] - asked < DETECTION / 2
    leaver.close()  # the process goes away after leaving: nobody suspects it
    time.sleep(DETECTION + 0.5)
    for node in others:
        assert unreachable_about(cluster, node) == set()
        rows = {r.node: r for r in status(cluster.operator, node).members}
        assert rows[leaver.node].state == "removed"
        assert rows[leaver.node].reason == "left"
