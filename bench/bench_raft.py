"""Raft core benchmark: a simulated cluster of sans-IO cores in one process, measuring entries
committed per second of CPU, so that regressions in the core's hot path show; and the core's
own cost of an InstallSnapshot transfer (chunks through leader and follower cores, no IO).

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
import tracemalloc
from typing import Any

from consensus.config import RaftConfig
from consensus.configuration import Membership
from consensus.log import MemoryLog
from consensus.messages import (
    AppendEntriesResponse,
    ClientCommand,
    InstallSnapshot,
    InstallSnapshotResponse,
    PreVoteResponse,
    RequestVoteResponse,
)
from consensus.node import RaftNode
from consensus.ready import HardState, Ready
from consensus.snapshots import SnapshotInfo


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


def install_snapshot(size: int, chunk: int) -> dict[str, float]:
    """Send a ``size``-byte snapshot from a leader core to an empty follower core in chunks of
    ``chunk`` bytes, carrying out the chunk reads and writes in memory (one chunk object
    reused: the store's IO is not measured, only the cores' handling and the messages).
    Returns the CPU seconds, throughput and messages per chunk."""
    voters = ("n1", "n2", "n3")
    info = SnapshotInfo(1000, 1, Membership(voters), size, 0, 0)
    log = MemoryLog(compacted_index=1000, compacted_term=1)
    config = RaftConfig("n1", voters, snapshot_chunk_bytes=chunk, check_quorum=False)
    leader = RaftNode(config, log, HardState(1), random.Random(1), 0, snapshot=info)
    leader.tick(1000)
    leader.step(PreVoteResponse(2, "n2", True), 1000)
    ready = leader.step(RequestVoteResponse(2, "n2", True), 1000)
    follower = RaftNode(
        RaftConfig("n2", voters, check_quorum=False),
        MemoryLog(),
        HardState(2),
        random.Random(2),
        1000,
    )
    payload = bytes(chunk)
    held = 0  # what the follower's store holds
    messages = chunks = 0
    began = time.process_time()
    # the follower has nothing: its rejection sends the leader to the snapshot
    queue: collections.deque[Any] = collections.deque(
        [AppendEntriesResponse(2, "n2", False, 0, 1000, 1, 0, 0, 0)]
    )
    while queue:
        message = queue.popleft()
        messages += 1
        if isinstance(message, InstallSnapshot):
            ready = follower.step(message, 1000)
            for write in ready.snapshot_writes:
                if write.data and write.offset == held:
                    held += len(write.data)
                complete = write.done and held == write.size
                ready = follower.snapshot_written(write, held, complete, 1000)
                queue.extend(m for to, m in ready.messages if to == "n1")
            continue
        ready = leader.step(message, 1000)
        while ready.snapshot_reads:
            (read,) = ready.snapshot_reads
            chunks += 1
            data = payload if read.offset + chunk <= size else payload[: size - read.offset]
            ready = leader.snapshot_chunk(read, data, 1000)
        queue.extend(m for to, m in ready.messages if to == "n2" and isinstance(m, InstallSnapshot))
        if isinstance(message, InstallSnapshotResponse) and message.done:
            break
    cpu = time.process_time() - began
    assert held == size and follower.applied_index == 1000, (held, follower)
    return {
        "bytes": size,
        "chunk_bytes": chunk,
        "chunks": chunks,
        "cpu_s": round(cpu, 4),
        "mb_per_cpu_s": round(size / 1e6 / cpu, 1),
        "us_per_chunk": round(cpu / chunks * 1e6, 1),
        "messages_per_chunk": round(messages / chunks, 2),
    }


def install_snapshot_peak(size: int, chunk: int) -> int:
    """Peak bytes the cores allocate during a transfer (tracemalloc), beyond the one chunk
    the caller reads: the cores hold no snapshot content of their own."""
    tracemalloc.start()
    try:
        install_snapshot(size, chunk)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    size = (64 if quick else 1024) << 20
    for chunk in (64 << 10, 1 << 20):
        key = f"install_snapshot_{size >> 20}mb_chunk{chunk >> 10}k"
        print(f"  {key} ...", flush=True)
        results[key] = install_snapshot(size, chunk)
    peak = install_snapshot_peak(16 << 20, 1 << 20)
    results["install_snapshot_16mb_chunk1024k_peak_traced_bytes"] = peak
    for size in (3, 5):
        for batch in (1, 64):
            entries = (
                (2_000 if batch == 1 else 20_000) if quick else (20_000 if batch == 1 else 200_000)
            )
            key = f"nodes{size}_batch{batch}"
            print(f"  {key}: {entries} entries ...", flush=True)
            results[key] = run_cluster(size, batch, entries)
    results["_about"] = (
        "nodesN_batchB: entries committed (and applied on every node) per second of process "
        "CPU, all nodes in one process; batch = client commands proposed per leader step. "
        "install_snapshot_*: the leader's and follower's cores passing a snapshot chunk by "
        "chunk (probe, reads, InstallSnapshot, writes, answers), IO excluded; the peak traced "
        "bytes include the one chunk object the caller reads"
    )
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
