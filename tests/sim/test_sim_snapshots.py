"""Snapshots in the simulator: a follower down while the log is compacted comes back through
InstallSnapshot, a transfer cut by a partition or a crash resumes from where it stopped, whole
clusters restart from snapshots plus logs, and a learner added after compaction catches up."""

from __future__ import annotations

import pytest

from consensus.configuration import AddLearner

from .cluster import SimCluster, SimNode
from .test_sim_scenarios import converge, core, elect, write

SNAPSHOTS = {
    "snapshot_threshold_entries": 20,
    "snapshot_trailing_entries": 5,
    "snapshot_chunk_bytes": 64,
    "snapshot_retry_interval": 60,
}


def compacted_past(cluster: SimCluster, leader: SimNode, index: int) -> bool:
    return leader.storage.first_index > index + 1


def test_follower_down_while_the_log_is_compacted_comes_back_through_install_snapshot() -> None:
    cluster = SimCluster(3, seed=31, **SNAPSHOTS)
    leader = elect(cluster)
    follower = next(n for n in cluster.up_nodes() if n is not leader)
    write(cluster, 10)
    behind = follower.storage.last_index
    cluster.crash(follower.id)
    for _ in range(8):
        write(cluster, 10)
    assert compacted_past(cluster, leader, behind)
    first_index_before = leader.storage.first_index
    cluster.restart(follower.id)
    converge(cluster)
    installed = [i for _, n, i in cluster.installs if n == follower.id]
    assert installed and installed[0] >= first_index_before - 1
    _, content = follower.snapshots.latest()  # type: ignore[misc]
    # Streamed in chunks, never in one message: at least size / chunk reads for it.
    reads = [r for r in cluster.chunk_reads if r[2] == follower.id]
    assert len(content) > 4 * 64 and len(reads) >= len(content) // 64
    assert core(follower).log.first_index > 1  # its log starts after the snapshot
    assert follower.sm_value == leader.sm_value
    assert cluster.checker.snapshots_checked >= 2


@pytest.mark.parametrize("interruption", ["partition", "crash"])
def test_an_interrupted_snapshot_transfer_resumes_where_it_stopped(interruption: str) -> None:
    cluster = SimCluster(3, seed=32, **{**SNAPSHOTS, "snapshot_chunk_bytes": 32})
    leader = elect(cluster)
    follower = next(n for n in cluster.up_nodes() if n is not leader)
    cluster.crash(follower.id)
    for _ in range(10):
        write(cluster, 10)
    cluster.restart(follower.id)

    def halfway() -> bool:
        partial = follower.snapshots.partial
        return partial is not None and len(partial[1]) >= 5 * 32

    assert cluster.run_until(halfway, 3000)
    partial = follower.snapshots.partial
    assert partial is not None
    held = len(partial[1])
    if interruption == "partition":
        cluster.isolate(follower.id)
        cluster.run_for(600)
        cluster.heal()
    else:
        cluster.crash(follower.id)
        cluster.run_for(600)
        cluster.restart(follower.id)
    resumed_at = cluster.now
    converge(cluster)
    after = [r for r in cluster.chunk_reads if r[2] == follower.id and r[0] >= resumed_at]
    assert after, "no chunk was sent after the interruption"
    assert after[0][4] >= held > 0  # resumed from the offset it held, not from 0
    info, _ = follower.snapshots.latest()  # type: ignore[misc]
    sent = sum(min(32, info.size - r[4]) for r in cluster.chunk_reads if r[2] == follower.id)
    assert sent < 2 * info.size  # nothing sent twice over


def test_a_whole_cluster_restarts_from_snapshots_and_logs() -> None:
    cluster = SimCluster(3, seed=33, **SNAPSHOTS)
    elect(cluster)
    acked = []
    for _ in range(6):
        acked += write(cluster, 10)
    converge(cluster)
    values = {n.id: n.sm_value for n in cluster.nodes.values()}
    for node_id in cluster.ids:
        cluster.crash(node_id)
    for node_id in cluster.ids:
        cluster.restart(node_id)
        node = cluster.nodes[node_id]
        info, _ = node.snapshots.latest()  # type: ignore[misc]
        assert core(node).commit_index == info.index == node.applied  # from the snapshot
    elect(cluster)
    converge(cluster)
    assert all(n.sm_value == values[n.id] for n in cluster.nodes.values())
    acked += write(cluster, 5)
    converge(cluster)


def test_a_learner_added_after_compaction_catches_up_by_snapshot() -> None:
    cluster = SimCluster(3, spares=1, seed=34, **SNAPSHOTS)
    leader = elect(cluster)
    for _ in range(5):
        write(cluster, 10)
    assert leader.storage.first_index > 1
    request = cluster.change(AddLearner("n4"))
    assert cluster.run_until(lambda: request in cluster.change_results, 3000)
    assert cluster.change_results[request].ok
    # caught up through a snapshot, then promoted by the leader on its own (auto_promote)
    assert cluster.run_until(lambda: "n4" in core(leader).membership.voters, 3000)
    assert any(n == "n4" for _, n, _ in cluster.installs)
    write(cluster, 5)
    converge(cluster)
