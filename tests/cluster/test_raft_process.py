"""Raft over ZeroMQ between real node processes: a leader SIGKILLed mid-stream, and every
acknowledged command applied on every live node, in the same order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import msgpack
import pytest

from consensus.shell.protocol import ClientQuery
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.process


@pytest.fixture
def cluster(tmp_path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path)
    c.start_all()
    try:
        yield c
    finally:
        c.close()


def test_leader_killed_mid_stream_loses_no_acknowledged_command(cluster: LocalCluster) -> None:
    first_leader = cluster.wait_for_leader()
    acked: list[bytes] = []
    lock = threading.Lock()
    half = threading.Event()
    total, writers = 1000, 4

    def write(worker: int) -> None:
        for n in range(total // writers):
            payload = msgpack.packb([worker, n])
            response = cluster.client.submit(payload, timeout=30)
            assert response.ok
            with lock:
                acked.append(payload)
                if len(acked) >= total // 2:
                    half.set()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    assert half.wait(60), "the first half of the commands did not complete"
    cluster.kill(first_leader)
    for t in threads:
        t.join(90)
    assert len(acked) == total
    survivors = cluster.alive()
    new_leader = cluster.wait_for_leader(among=survivors)
    assert new_leader != first_leader

    # Every survivor applies everything committed: wait until each has all of it.
    histories = {node: wait_for_history(cluster, node, total) for node in survivors}
    first, *rest = histories.values()
    for other in rest:
        common = min(len(first), len(other))
        assert first[:common] == other[:common], "replicas applied different histories"
    applied_set = set(first)
    missing = [p for p in acked if p not in applied_set]
    assert not missing, f"{len(missing)} acknowledged commands were lost"


def wait_for_history(cluster: LocalCluster, node: str, at_least: int) -> list[bytes]:
    ref = cluster.system.ref(f"coterie://_@{cluster.addresses[node]}/user/node")
    deadline = time.monotonic() + 30
    applied: list[bytes] = []
    while time.monotonic() < deadline:
        query = ClientQuery(f"check-{node}-{time.monotonic()}", msgpack.packb(["all"]), True)
        applied, _indexes = ref.ask(query, timeout=5).result(6).result
        if len(applied) >= at_least:
            return applied
        time.sleep(0.1)
    raise AssertionError(f"{node} applied only {len(applied)} of {at_least} commands")
