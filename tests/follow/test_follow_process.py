"""Followers as real processes beside a real 3-node cluster, under continuous writes."""

from __future__ import annotations

import pathlib
import signal
import time

import msgpack
import pytest

from tests.follow.process_support import (
    FollowCluster,
    RoundRobinProxy,
    Writer,
    wait_until,
    waltool_diff,
)
from wal.compare import diff_logs
from wal.log import SegmentedLog

pytestmark = pytest.mark.process


def settled(cluster: FollowCluster, nodes: list[str]) -> int:
    """The commit index all `nodes` agree on once writes stopped (0 while they differ)."""
    statuses = [cluster.log_status(node) for node in nodes]
    if any(s is None or "commit" not in s for s in statuses):
        return 0  # down, or starting (503 until its log is open)
    commits = {s["commit"] for s in statuses}  # type: ignore[index]
    lasts = {s["last"] for s in statuses}  # type: ignore[index]
    return commits.pop() if len(commits) == 1 and commits == lasts else 0


def assert_followers_equal_cluster(cluster: FollowCluster, followers: list[str]) -> None:
    nodes = cluster.ids
    wait_until(lambda: settled(cluster, nodes) > 0, 20, "cluster settles")
    commit = settled(cluster, nodes)
    for follower in followers:
        try:
            wait_until(
                lambda f=follower: (cluster.log_status(f) or {}).get("last") == commit,
                20,
                f"{follower} catches up to {commit}",
            )
        except AssertionError:
            states = {n: cluster.log_status(n) for n in [*nodes, *followers]}
            raise AssertionError(f"{follower} behind {commit}: {states}") from None
    digest = cluster.client.query(msgpack.packb(["digest"])).result
    for follower in followers:
        answer = cluster.follower_query(follower, ["digest"])
        assert answer == {"applied": commit, "result": digest}, follower
        status = cluster.log_status(follower)
        assert status is not None and status["follower"]["problems"] == {}, status
    cluster.stop_all()
    # Every follower's WAL against every node's, streamed entry by entry (wal.compare); the
    # last follower also with the `coterie waltool diff` operators would run.
    for follower in followers:
        with SegmentedLog.open(cluster.directory / follower / "log", readonly=True) as mine:
            assert mine.last_index == commit
            for node in nodes:
                with SegmentedLog.open(cluster.directory / node / "log", readonly=True) as log:
                    assert max(log.first_index, mine.first_index) == 1
                    assert list(diff_logs(log, mine)) == [], (follower, node)
    result = waltool_diff(
        cluster.directory / nodes[0] / "log", cluster.directory / follower / "log"
    )
    assert result.returncode == 0, (follower, result.stdout, result.stderr)


def test_two_followers_chained_survive_leader_kill_and_restart(tmp_path: pathlib.Path) -> None:
    cluster = FollowCluster(tmp_path)
    writer = None
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        # f1 tails the leader itself (the one about to die); f2 tails f1 (a repeater).
        cluster.start_follower("f1", cluster.uri(leader))
        cluster.start_follower("f2", cluster.uri("f1"))
        writer = Writer(cluster)
        wait_until(lambda: writer.done >= 200, 20, "writes under way")
        wait_until(lambda: (cluster.log_status("f2") or {}).get("last", 0) > 50, 20, "f2 follows")
        cluster.kill(leader, signal.SIGKILL)
        wait_until(lambda: writer.done >= 600, 25, "writes go on under a new leader")
        cluster.kill("f2", signal.SIGKILL)  # a follower restarted midway
        cluster.start_follower("f2", cluster.uri("f1"))
        cluster.start(leader)  # f1's source comes back; f1 backed off meanwhile
        done = writer.done
        wait_until(lambda: writer.done >= done + 300, 25, "writes after the restarts")
        writer.stop()
        assert_followers_equal_cluster(cluster, ["f1", "f2"])
        logs = (tmp_path / "f1.log").read_text()
        assert "follow.source_down" in logs  # f1 noticed its source had gone, and retried
    finally:
        if writer is not None:
            writer.stop()
        cluster.close()


def test_follower_through_a_round_robin_proxy(tmp_path: pathlib.Path) -> None:
    cluster = FollowCluster(tmp_path, followers=0)
    proxy = RoundRobinProxy([cluster.log_addresses[node] for node in cluster.ids])
    writer = None
    try:
        cluster.start_all()
        cluster.wait_for_leader()
        # A read replica not in the cluster file: all it needs is on its command line.
        cluster.start_follower("r1", proxy.uri, in_file=False)
        writer = Writer(cluster)
        wait_until(lambda: writer.done >= 400, 20, "writes under way")
        # Requests land on every node in turn (each at its own commit index).
        wait_until(lambda: min(proxy.served.values()) >= 2, 20, f"all nodes asked {proxy.served}")
        writer.stop()
        time.sleep(0.2)
        assert_followers_equal_cluster(cluster, ["r1"])
    finally:
        if writer is not None:
            writer.stop()
        proxy.close()
        cluster.close()


def test_follower_starting_after_compaction_restores_from_the_snapshot(
    tmp_path: pathlib.Path,
) -> None:
    raft = {
        "election_timeout_min_ms": 300,
        "election_timeout_max_ms": 600,
        "heartbeat_interval_ms": 50,
        "snapshot_threshold_entries": 60,
        "snapshot_trailing_entries": 5,
    }
    cluster = FollowCluster(tmp_path, followers=1, raft=raft)
    writer = None
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        writer = Writer(cluster)

        def compacted() -> bool:
            status = cluster.log_status(leader) or {}
            return status.get("first", 1) > 1 and status.get("snapshot") is not None

        wait_until(compacted, 25, "the leader snapshots and compacts its log")
        cluster.start_follower("f1", cluster.uri(leader))
        done = writer.done
        wait_until(lambda: writer.done >= done + 100, 20, "writes go on")
        writer.stop()
        nodes = cluster.ids
        wait_until(lambda: settled(cluster, nodes) > 0, 20, "cluster settles")
        commit = settled(cluster, nodes)
        wait_until(
            lambda: (cluster.log_status("f1") or {}).get("last") == commit, 20, "f1 catches up"
        )
        digest = cluster.client.query(msgpack.packb(["digest"])).result
        assert cluster.follower_query("f1", ["digest"]) == {"applied": commit, "result": digest}
        status = cluster.log_status("f1")
        assert status is not None
        assert status["follower"]["snapshots_installed"] >= 1, status
        assert status["follower"]["problems"] == {}, status
        cluster.stop_all()
        with SegmentedLog.open(tmp_path / "f1" / "log", readonly=True) as mine:
            assert mine.first_index > 1 and mine.last_index == commit  # began at a snapshot
            with SegmentedLog.open(tmp_path / leader / "log", readonly=True) as log:
                assert list(diff_logs(log, mine)) == []
    finally:
        if writer is not None:
            writer.stop()
        cluster.close()
