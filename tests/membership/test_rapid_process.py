"""Rapid membership across real OS processes over 127.0.0.1: five nodes run the Rapid actor
(the same sans-IO core, cut detector and agreement as the simulator), form one view through
one seed, and after a SIGKILL the four survivors install one and the same view without the
killed node.

Settings are about four times faster than the defaults in the same proportions (probe every
0.25 s, acceptable pause 1.0 s), so a crash is alerted about 2 s after the last answered probe,
and a loaded machine's stalls up to about a second are tolerated.
"""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from member_support import Member, wait_until

from actors import UNHANDLED, Actor, ActorRef, ActorSystem, Props
from membership import Subscribe, membership_path
from membership.rapid import GetRapidStatus, RapidStatus, RemovedFromCluster, ViewChange

pytestmark = pytest.mark.process

HERE = pathlib.Path(__file__).parent
HEARTBEAT = 0.25
SETTINGS: dict[str, Any] = {
    "tick_interval": 0.05,
    "rapid": {
        "heartbeat_interval": HEARTBEAT,
        "detector": {
            "threshold": 8.0,
            "acceptable_pause": 1.0,
            "min_std_deviation": 0.1,
            "first_heartbeat_estimate": HEARTBEAT,
        },
        "self_pause_tolerance": 0.6,
        "batch_window": 0.1,
        "batch_max_delay": 0.4,
        "settle": 0.2,
        "gossip_interval": 0.1,
        "fast_round_timeout": 1.5,
        "classic_jitter_per_member": 0.1,
        "classic_retry": 1.0,
        "sync_interval": 0.2,
        "join_timeout": 1.0,
        "join_backoff_max": 2.0,
    },
}


class ViewCollector(Actor):
    """Records every Rapid event it is told: (monotonic time, source actor path, event)."""

    def __init__(self, log: list[tuple[float, str, Any]], lock: threading.Lock) -> None:
        self.log = log
        self.lock = lock

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if isinstance(message, ViewChange | RemovedFromCluster):
            with self.lock:
                self.log.append((time.monotonic(), sender.path.text if sender else "?", message))
            return None
        return UNHANDLED


class RapidCluster:
    def __init__(self, size: int, log_dir: pathlib.Path) -> None:
        self.nodes: list[Member] = []
        self.operator = ActorSystem("operator", host="127.0.0.1")
        self.log: list[tuple[float, str, Any]] = []
        self.lock = threading.Lock()
        self.collector = self.operator.spawn(Props(ViewCollector, self.log, self.lock), "views")
        try:
            seed = Member("r0", [], SETTINGS, log_dir, "rapid")
            self.nodes.append(seed)
            seed.started()
            others = [
                Member(f"r{i}", [seed.address], SETTINGS, log_dir, "rapid") for i in range(1, size)
            ]
            self.nodes += others
            for node in others:
                node.started()
        except BaseException:
            self.close()
            raise

    def status(self, node: str) -> RapidStatus | None:
        try:
            reply = self.operator.ref(membership_path(node)).ask(GetRapidStatus(), 2.0).result()
        except Exception:
            return None
        return reply

    def agreed(self, nodes: list[str]) -> tuple[int, str] | None:
        """The (epoch, config id) every one of `nodes` holds, if they hold the same view and
        its members are exactly `nodes`."""
        views = set()
        for node in nodes:
            reply = self.status(node)
            if reply is None or reply.state != "member":
                return None
            if sorted(name for name, _ in reply.members) != sorted(nodes):
                return None
            views.add((reply.epoch, reply.config_id))
        return views.pop() if len(views) == 1 else None

    def events(self, node: str) -> list[tuple[float, Any]]:
        source = membership_path(node)
        with self.lock:
            return [(t, e) for t, s, e in self.log if s == source]

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        self.operator.shutdown()


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[RapidCluster]:
    made = RapidCluster(5, tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_five_rapid_nodes_agree_on_a_view_after_a_sigkill(cluster: RapidCluster) -> None:
    started = time.monotonic()
    names = [n.node for n in cluster.nodes]
    formed = wait_until(lambda: cluster.agreed(names), 15.0, "five nodes in one view")
    for name in names:
        cluster.operator.ref(membership_path(name)).tell(Subscribe(cluster.collector.path.text))
    # Every subscription starts with the view held now: the same one everywhere.
    wait_until(lambda: all(cluster.events(n) for n in names), 5.0, "subscriptions replayed")
    for name in names:
        _, first = cluster.events(name)[0]
        assert (first.epoch, first.config_id, first.size) == (*formed, 5)
    time.sleep(1.0)  # a few probe rounds on the final topology

    victim = cluster.nodes[3]
    survivors = [n for n in names if n != victim.node]
    killed_at = time.monotonic()
    os.kill(victim.proc.pid, signal.SIGKILL)
    after = wait_until(lambda: cluster.agreed(survivors), 15.0, "four survivors in one view")
    took = time.monotonic() - killed_at
    assert after[0] > formed[0] and after[1] != formed[1]

    # One step for everyone: each survivor installed exactly one view after the kill, the
    # same one (same epoch and config id), which removed exactly the killed node.
    for name in survivors:
        views = [e for _, e in cluster.events(name)[1:] if isinstance(e, ViewChange)]
        assert [(v.epoch, v.config_id) for v in views] == [after], (name, views)
        assert views[0].size == 4 and views[0].joined == ()
        assert [node for node, _ in views[0].removed] == [victim.node]
        assert views[0].via in ("fast", "classic", "decided", "sync")
    for name in survivors:
        counters = cluster.status(name).counters  # type: ignore[union-attr]
        assert counters["dropped_bad_messages"] == 0
    assert time.monotonic() - started < 30.0
    print(
        f"formed {formed} {killed_at - started - 1.0:.2f}s after start; "
        f"killed -> agreed {after} in {took:.2f}s"
    )
