"""Raft core benchmark: a simulated cluster of sans-IO cores in one process, measuring entries
committed per second of CPU, so that regressions in the core's hot path show.

The harness is minimal on purpose (no safety checker, no network faults): messages go through
one FIFO queue in waves (one wave = every message queued so far delivered, then the disks
"complete": each node reports its writes persisted). Each step the client proposes ``batch``
commands to the leader and one wave runs, so batches overlap in the pipeline as they would on a
busy cluster (several AppendEntries in flight per follower, flow-controlled by the inflight
window). CPU time (``time.process_time``) covers the steady state only, after the election.
Every node applies every entry, so the figure is "cluster CPU per committed entry".
"""

from __future__ import annotations

import collections
import random
import time
from typing import Any

from consensus.config import RaftConfig
from consensus.log import MemoryLog
from consensus.messages import ClientCommand
from consensus.node import RaftNode
from consensus.ready import HardState, Ready


class Cluster:
    def __init__(self, size: int, **config: Any) -> None:
        self.ids = tuple(f"n{i + 1}" for i in range(size))
        self.storage = {i: MemoryLog() for i in self.ids}
        self.nodes = {
            i: RaftNode(
                RaftConfig(i, self.ids, **config),
                self.storage[i],
                HardState(),
                random.Random(n),
                0,
            )
            for n, i in enumerate(self.ids)
        }
        self.queue: collections.deque[tuple[str, Any]] = collections.deque()
        self.unpersisted: dict[str, tuple[int, int]] = {}
        self.now = 0
        self.messages = 0
        self.acked = 0

    def carry_out(self, name: str, ready: Ready) -> None:
        node = self.nodes[name]
        while True:
            if ready.entries:
                storage = self.storage[name]
                if ready.truncate_after is not None:
                    storage.truncate_after(ready.truncate_after)
                storage.append(ready.entries)
                last = ready.entries[-1]
                self.unpersisted[name] = (last.index, last.term)
            self.queue.extend(ready.messages)
            self.messages += len(ready.messages)
            self.acked += sum(1 for r in ready.results if r.ok)
            if not ready.committed:
                return
            ready = node.applied(ready.committed[-1].index, {}, self.now)

    def wave(self) -> None:
        queue = self.queue
        now = self.now
        for _ in range(len(queue)):
            destination, message = queue.popleft()
            self.carry_out(destination, self.nodes[destination].step(message, now))
        persisted, self.unpersisted = self.unpersisted, {}
        for name, (index, term) in persisted.items():
            self.carry_out(name, self.nodes[name].persisted(index, term, now))
        self.now += 1
        if self.now % 10 == 0:
            for name, node in self.nodes.items():
                self.carry_out(name, node.tick(self.now))

    def elect(self) -> RaftNode:
        first = self.nodes[self.ids[0]]
        self.now = 1000  # past every election timeout: n1 campaigns first
        self.carry_out(self.ids[0], first.tick(self.now))
        while not (first.is_leader and first.role.committed_in_term):  # type: ignore[union-attr]
            self.wave()
        return first


def run_cluster(size: int, batch: int, entries: int) -> dict[str, float]:
    cluster = Cluster(size)
    leader = cluster.elect()
    leader_id = leader.id
    steps = entries // batch
    counter = 0
    start_commit = leader.commit_index
    messages_before = cluster.messages
    began = time.process_time()
    for _ in range(steps):
        commands = []
        for _ in range(batch):
            counter += 1
            commands.append(ClientCommand(f"c{counter}", b"x" * 16))
        cluster.carry_out(leader_id, leader.propose(commands, cluster.now))
        cluster.wave()
    while cluster.queue or cluster.unpersisted:
        cluster.wave()
    cpu = time.process_time() - began
    committed = leader.commit_index - start_commit
    assert committed == steps * batch, (committed, steps * batch)
    assert cluster.acked == committed
    return {
        "entries": committed,
        "cpu_s": round(cpu, 4),
        "entries_per_cpu_s": round(committed / cpu),
        "messages_per_entry": round((cluster.messages - messages_before) / committed, 3),
    }


def run(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size in (3, 5):
        for batch in (1, 64):
            entries = (
                (2_000 if batch == 1 else 20_000) if quick else (20_000 if batch == 1 else 200_000)
            )
            key = f"nodes{size}_batch{batch}"
            print(f"  {key}: {entries} entries ...", flush=True)
            results[key] = run_cluster(size, batch, entries)
    results["_about"] = (
        "entries committed (and applied on every node) per second of process CPU, all nodes "
        "in one process; batch = client commands proposed per leader step"
    )
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
