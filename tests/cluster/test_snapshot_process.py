"""Snapshots between real node processes over ZeroMQ: a follower down while the cluster
snapshots and compacts its log comes back through InstallSnapshot; a node restarts from its
own snapshot and replays only the log after it; every replica ends with the same history."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from consensus.shell.protocol import ClientQuery
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.process

THRESHOLD = 10  # entries between snapshots


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[LocalCluster]:
    c = LocalCluster(
        tmp_path,
        durability="never",  # SIGKILL keeps the page cache; fewer fsyncs keep the test short
        raft={
            "election_timeout_min_ms": 300,
            "election_timeout_max_ms": 600,
            "heartbeat_interval_ms": 50,
            "snapshot_threshold_entries": THRESHOLD,
            "snapshot_trailing_entries": 0,
            "snapshot_chunk_bytes": 2048,  # several chunks per transfer
        },
    )
    c.start_all()
    try:
        yield c
    finally:
        c.close()


def digest(cluster: LocalCluster, node: str) -> tuple[int, str]:
    ref = cluster.system.ref(f"coterie://_@{cluster.addresses[node]}/user/node")
    query = ClientQuery(f"d-{node}-{time.monotonic()}", msgpack.packb(["digest"]), True)
    count, value = ref.ask(query, timeout=3).result(4).result
    return count, value


def wait_for_digest(cluster: LocalCluster, node: str, count: int) -> tuple[int, str]:
    deadline = time.monotonic() + 20
    got: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        try:
            got = digest(cluster, node)
        except Exception:
            got = (0, "")
        if got[0] >= count:
            return got
        time.sleep(0.1)
    raise AssertionError(
        f"{node} applied {got[0]} of {count} ({cluster.status(node)}); logs in {cluster.directory}"
    )


def records(cluster: LocalCluster, node: str) -> list[dict[str, Any]]:
    found = []
    for line in (cluster.directory / f"{node}.log").read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def events(cluster: LocalCluster, node: str) -> list[str]:
    return [record.get("event", "") for record in records(cluster, node)]


def snapshot_files(cluster: LocalCluster, node: str) -> list[str]:
    return sorted(p.name for p in (cluster.directory / node / "snapshots").glob("*.snap"))


def write(cluster: LocalCluster, start: int, count: int) -> None:
    for n in range(start, start + count):
        assert cluster.client.submit(msgpack.packb(["c", n]), timeout=15).ok


def test_a_follower_catches_up_by_install_snapshot_and_a_node_restarts_from_its_own(
    cluster: LocalCluster,
) -> None:
    leader = cluster.wait_for_leader()
    behind, other = (node for node in cluster.ids if node != leader)
    write(cluster, 0, 5)
    wait_for_digest(cluster, behind, 5)
    cluster.kill(behind)

    # One command per entry: several snapshots and compactions while `behind` is down.
    total = 5 + 4 * THRESHOLD
    write(cluster, 5, total - 5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = cluster.status(leader)
        if status is not None and status.first_index > 3 * THRESHOLD:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the leader's log was not compacted: {cluster.status(leader)}")
    assert snapshot_files(cluster, leader), "the leader took no snapshot"

    cluster.start(behind)
    expected = wait_for_digest(cluster, leader, total)
    assert wait_for_digest(cluster, behind, total) == expected
    assert "state machine restored from a snapshot" in events(cluster, behind)
    assert snapshot_files(cluster, behind), "the installed snapshot is not in the store"

    # A node restarting from its own snapshot: the state comes from the file and only the
    # log after it is replayed; it then goes on with the cluster.
    assert snapshot_files(cluster, other)
    cluster.kill(other)
    cluster.start(other)
    assert wait_for_digest(cluster, other, total) == expected
    starts = [r for r in records(cluster, other) if r.get("event") == "node starting"]
    assert len(starts) == 2 and starts[1]["snapshot"] >= 3 * THRESHOLD  # from its own file
    assert starts[1]["first_index"] > starts[1]["snapshot"] - THRESHOLD  # the log is compacted
    assert events(cluster, other).count("state machine restored from a snapshot") == 1
    write(cluster, total, 10)
    final = wait_for_digest(cluster, leader, total + 10)
    for node in cluster.ids:
        assert wait_for_digest(cluster, node, total + 10) == final
