"""Durability: writes acknowledged before every node is SIGKILLed at the same instant are all
there after a restart, with the ``always`` and the ``group`` fsync policies.

What this does and does not prove: SIGKILL ends the processes but not the kernel, so data
written but not yet fsynced survives in the page cache. The test catches an acknowledgement
sent before the entry reached the log (or before a majority had it), a recovery that drops
or misreads entries, and a restart that forgets the commit; the fsync itself is covered by
the WAL's own crash tests, which cut files where an unsynced write could end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import msgpack
import pytest

from consensus.shell.protocol import ClientQuery
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.process


@pytest.mark.parametrize("durability", ["always", "group"])
def test_every_acknowledged_write_survives_sigkill_of_every_node(tmp_path, durability) -> None:
    cluster = LocalCluster(
        tmp_path, size=3, state_machine="tests.jepsen.kv_machine:KV", durability=durability
    )
    try:
        cluster.start_all()
        cluster.wait_for_leader()
        acked: list[tuple[str, int]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def write(worker: int) -> None:
            for n in range(1_000_000):
                if stop.is_set():
                    return
                key, value = f"k{worker}", worker * 1_000_000 + n
                with contextlib.suppress(Exception):  # unacknowledged: may or may not be there
                    cluster.client.submit(msgpack.packb(["put", key, value]), timeout=2)
                    with lock:
                        acked.append((key, value))

        threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Every node at once, while writes are in flight.
        procs = list(cluster.procs.values())
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)
        with lock:
            acknowledged = list(acked)
        stop.set()
        for proc in procs:
            proc.wait(15)
        cluster.procs.clear()
        for thread in threads:
            thread.join(10)
        assert len(acknowledged) >= 150, "too few writes acknowledged before the kill"

        cluster.start_all()
        cluster.wait_for_leader(timeout=30)
        logs = cluster.client.query(msgpack.packb(["logs"]), timeout=20).result
        missing = [(k, v) for k, v in acknowledged if v not in logs.get(k, [])]
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged writes lost"
        # Every replica recovered the same writes, in the same order, once caught up.
        for node in cluster.ids:
            ref = cluster.system.ref(f"coterie://_@{cluster.addresses[node]}/user/node")
            node_logs = {}
            for _ in range(100):
                answer = ref.ask(
                    ClientQuery(f"logs-{node}", msgpack.packb(["logs"]), True), timeout=5
                ).result(6)
                node_logs = answer.result
                if all(len(node_logs.get(k, [])) >= len(v) for k, v in logs.items()):
                    break
                time.sleep(0.1)
            for key, values in logs.items():
                assert node_logs.get(key, [])[: len(values)] == values, (node, key)
    finally:
        cluster.close()
