"""Scripted scenarios in the simulator, each with the safety checker running at every step:
elections, re-elections, minority and majority failures, divergent logs, catch-up, full
restarts, figure 8, churn, pre-vote, check-quorum, reads under partition, leadership transfer.
"""

from __future__ import annotations

import pytest

from consensus.config import ReadMode
from consensus.messages import ERROR_SUPERSEDED
from consensus.node import RaftNode

from .checker import InvariantViolation
from .cluster import DiskConfig, NetConfig, SimCluster, SimNode
from .figure8 import stage_figure8

ELECTION_MAX = 300
HEARTBEAT = 50


def elect(cluster: SimCluster, timeout: int = 3000) -> SimNode:
    """Run until a leader has committed an entry of its term; return it."""

    def ready() -> bool:
        leader = cluster.leader()
        return leader is not None and leader.core is not None and leader.core.role.committed_in_term  # type: ignore[union-attr]

    assert cluster.run_until(ready, timeout), f"no leader after {timeout} ms: {cluster.nodes}"
    leader = cluster.leader()
    assert leader is not None
    return leader


def write(
    cluster: SimCluster, count: int, node_id: str | None = None, timeout: int = 5000
) -> list[str]:
    """Propose ``count`` commands and run until every one is acknowledged."""
    request_ids = cluster.propose(node_id, count)
    assert len(request_ids) == count
    ok = cluster.run_until(lambda: all(r in cluster.acked for r in request_ids), timeout)
    assert ok, f"writes not acknowledged: {[r for r in request_ids if r not in cluster.acked]}"
    return request_ids


def converge(cluster: SimCluster, timeout: int = 10_000) -> None:
    assert cluster.run_until(cluster.converged, timeout), f"no convergence: {cluster.nodes}"
    cluster.check_final()


def core(node: SimNode) -> RaftNode:
    """The core of a live node."""
    assert node.core is not None
    return node.core


# ---------------------------------------------------------------------------- elections


@pytest.mark.parametrize("size", [3, 5])
def test_initial_election(size: int) -> None:
    cluster = SimCluster(size, seed=11)
    leader = elect(cluster)
    assert cluster.now < 2 * ELECTION_MAX
    cluster.run_for(2000)  # quiet: the leader holds, nobody campaigns
    assert cluster.leader() is leader
    assert len(cluster.checker.leaders) == 1
    term = core(leader).term
    for node in cluster.nodes.values():
        assert core(node).leader_id == leader.id
        assert core(node).term == term
        assert node.applied == 1  # the new leader's no-op, committed and applied everywhere


def test_reelection_after_leader_is_cut_off() -> None:
    cluster = SimCluster(5, seed=2)
    old = elect(cluster)
    old_term = core(old).term
    write(cluster, 5)
    cluster.isolate(old.id)
    started = cluster.now
    assert cluster.run_until(
        lambda: (leader := cluster.leader()) is not None and leader is not old, 3000
    )
    new = cluster.leader()
    assert new is not None and core(new).term > old_term
    # Check-quorum: the cut-off leader steps down on its own within a window plus a beat.
    assert cluster.run_until(lambda: not core(old).is_leader, ELECTION_MAX + HEARTBEAT)
    assert cluster.now - started <= ELECTION_MAX + 2 * HEARTBEAT
    write(cluster, 5)
    cluster.heal()
    converge(cluster)
    assert core(old).leader_id == new.id


def test_agreement_with_a_minority_failed() -> None:
    cluster = SimCluster(5, seed=3)
    leader = elect(cluster)
    followers = [n for n in cluster.ids if n != leader.id]
    cluster.crash(followers[0])
    cluster.crash(followers[1])
    ids = write(cluster, 50)
    index = max(cluster.acked[r] for r in ids)
    assert cluster.run_until(
        lambda: all(n.applied >= index for n in cluster.nodes.values() if n.up), 2000
    )
    cluster.restart(followers[0])
    cluster.restart(followers[1])
    converge(cluster)


def test_no_agreement_without_a_majority_then_recovery() -> None:
    cluster = SimCluster(5, seed=4)
    leader = elect(cluster)
    write(cluster, 5)
    commit_before = core(leader).commit_index
    down = [n for n in cluster.ids if n != leader.id][:3]
    for node_id in down:
        cluster.crash(node_id)
    stuck = cluster.propose(leader.id, 20)
    cluster.run_for(3000)
    assert not any(r in cluster.acked for r in stuck)
    assert all(core(n).commit_index == commit_before for n in cluster.up_nodes())
    assert not core(leader).is_leader  # check-quorum: no majority, no leader
    for node_id in down:
        cluster.restart(node_id)
    elect(cluster)
    after = write(cluster, 10)
    converge(cluster)
    assert all(r in cluster.acked for r in after)
    # The stuck writes were either committed by a later leader or reported superseded.
    lost = [r for r in stuck if r not in cluster.acked]
    assert cluster.refused[ERROR_SUPERSEDED] >= len(lost) or not lost


def test_deposed_leader_with_a_divergent_log_rejoins() -> None:
    cluster = SimCluster(5, seed=5)
    old = elect(cluster)
    write(cluster, 10)
    cluster.isolate(old.id)
    divergent = cluster.propose(old.id, 30)  # appended by the cut-off leader, never committed
    assert cluster.run_until(
        lambda: (leader := cluster.leader()) is not None and leader is not old, 3000
    )
    write(cluster, 20)
    cluster.heal()
    converge(cluster)
    assert not any(r in cluster.acked for r in divergent)
    assert cluster.refused[ERROR_SUPERSEDED] == len(divergent)
    # Its divergent suffix was cut: none of those commands is left in its log.
    log = core(old).log
    payloads = {e.payload for e in log.slice(1, log.last_index + 1, log.last_index, 1 << 62)}
    assert not payloads & {r.encode() for r in divergent}
    assert core(old).leader_id != old.id


# ---------------------------------------------------------------------------- catching up


def _rejections_from(cluster: SimCluster, follower: str, since: int) -> int:
    return sum(1 for at, source, _ in cluster.rejections if source == follower and at >= since)


def test_follower_that_missed_thousands_of_entries_catches_up_in_few_round_trips() -> None:
    cluster = SimCluster(3, seed=6, max_entries_per_message=64, max_inflight=8)
    leader = elect(cluster)
    lagging = next(n for n in cluster.ids if n != leader.id)
    cluster.crash(lagging)
    for _ in range(30):
        write(cluster, 100)
    target = core(leader).commit_index
    assert target > 3000
    rejoined = cluster.now
    sent_before = cluster.stats["AppendEntries"]
    cluster.restart(lagging)
    assert cluster.run_until(lambda: cluster.nodes[lagging].applied >= target, 5000)
    took = cluster.now - rejoined
    # One rejection tells the leader where the follower's log ends; then batches stream.
    assert _rejections_from(cluster, lagging, rejoined) <= 2
    batches = cluster.stats["AppendEntries"] - sent_before
    assert batches < 2 * target / 64 + 200  # the other follower's heartbeats and acks included
    assert took < 1000, took


def test_follower_with_thousands_of_divergent_entries_backtracks_in_few_round_trips() -> None:
    cluster = SimCluster(5, seed=7, max_entries_per_message=64)
    old = elect(cluster)
    write(cluster, 20)
    cluster.isolate(old.id)
    cluster.propose(old.id, 2000)  # a long tail of its own term, never committed
    assert cluster.run_until(
        lambda: (leader := cluster.leader()) is not None and leader is not old, 3000
    )
    for _ in range(20):
        write(cluster, 100)
    rejoined = cluster.now
    cluster.heal()
    converge(cluster)
    # The conflict-term hint skips the whole divergent term in one step.
    assert _rejections_from(cluster, old.id, rejoined) <= 3
    assert cluster.refused[ERROR_SUPERSEDED] == 2000


def test_persistence_across_full_cluster_restarts() -> None:
    cluster = SimCluster(3, seed=8)
    elect(cluster)
    acked = write(cluster, 100)
    for _round in range(3):
        for node_id in cluster.ids:
            cluster.crash(node_id)
        cluster.run_for(200)
        for node_id in cluster.ids:
            cluster.restart(node_id)
        elect(cluster)
        acked += write(cluster, 20)
        converge(cluster)
    # Every node rebuilt its state machine from its log: all writes applied, once each.
    for node in cluster.nodes.values():
        assert node.sm_value == len(acked)


# ---------------------------------------------------------------------------- figure 8


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    cluster = SimCluster(5, seed=9, max_entries_per_message=1)
    staged = stage_figure8(cluster)
    # X sat on a majority while M led, yet M did not commit it (its own entry was not there).
    assert len(staged.x_replicas_when_m_cut) >= 3
    assert staged.m_commit_when_cut < staged.index
    # N overwrote X, legitimately: X was never committed, never acknowledged.
    committed = cluster.checker.committed[staged.index]
    assert committed is not None and committed.term != staged.x_term
    assert staged.x_request not in cluster.acked
    cluster.heal()
    for node_id in cluster.ids:
        cluster.restart(node_id)
    converge(cluster)


def test_figure_8_checker_catches_a_leader_counting_old_term_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from consensus.leader import Leader

    def commit_by_counting_replicas(self: Leader) -> None:
        node = self.node
        log = node.log
        matches = sorted([log.durable_index, *(p.match for p in self.progress.values())])
        candidate = matches[-node.config.quorum]
        if candidate > node.commit_index:  # the bug: no "entry of the current term" check
            node.advance_commit(candidate)
            self.committed_in_term = self.committed_in_term or log.term_at(candidate) == node.term

    monkeypatch.setattr(Leader, "_maybe_commit", commit_by_counting_replicas)
    cluster = SimCluster(5, seed=9, max_entries_per_message=1)
    with pytest.raises(InvariantViolation, match="leader completeness") as caught:
        stage_figure8(cluster)
    assert "seed 9" in str(caught.value)


# ---------------------------------------------------------------------------- churn


def test_unreliable_network_with_churn() -> None:
    net = NetConfig(max_latency=15, drop=0.1, duplicate=0.05, slow=0.05, fifo=False)
    cluster = SimCluster(5, seed=10, net=net, max_entries_per_message=8, max_inflight=4)
    rng = cluster.rng
    for at in range(0, 6000, 15):
        cluster.schedule(at, lambda: cluster.propose(None, 2))
    for at in range(0, 6000, 70):
        cluster.schedule(at, lambda: cluster.read(None))

    def churn() -> None:
        up = cluster.up_nodes()
        leader = cluster.leader()
        if len(up) > 3:
            victim = leader if leader is not None and rng.random() < 0.3 else rng.choice(up)
            cluster.crash(victim.id)
        down = [n for n in cluster.ids if not cluster.nodes[n].up]
        if down and rng.random() < 0.7:
            cluster.restart(rng.choice(down))

    for at in range(300, 6000, 400):
        cluster.schedule(at, churn)
    cluster.run_for(6000)
    net.drop = net.duplicate = net.slow = 0.0
    for node_id in cluster.ids:
        cluster.restart(node_id)
    converge(cluster, 20_000)
    assert len(cluster.acked) > 300  # of 800 proposed, through ten crashes and lossy links
    assert len(cluster.checker.leaders) >= 4
    assert cluster.checker.reads_checked > 10


# ---------------------------------------------------------------------------- pre-vote


@pytest.mark.parametrize("pre_vote", [True, False])
def test_partitioned_node_rejoining_and_a_healthy_leader(pre_vote: bool) -> None:
    cluster = SimCluster(3, seed=12, pre_vote=pre_vote)
    leader = elect(cluster)
    term = core(leader).term
    loner = next(n for n in cluster.ids if n != leader.id)
    cluster.isolate(loner)
    cluster.run_for(3000)
    cluster.heal()
    cluster.run_for(1000)
    write(cluster, 5)
    if pre_vote:
        # Its failed pre-votes never bumped its term, so rejoining disturbs nobody.
        assert cluster.leader() is leader and core(leader).term == term
        assert len(cluster.checker.leaders) == 1
    else:
        # Negative control: without pre-vote its term ran ahead and its answers depose the
        # healthy leader.
        assert len(cluster.checker.leaders) > 1
    converge(cluster)


# ---------------------------------------------------------------------------- check-quorum


def test_check_quorum_steps_a_leader_down_that_cannot_hear_a_majority() -> None:
    cluster = SimCluster(3, seed=13)
    leader = elect(cluster)
    followers = [n for n in cluster.ids if n != leader.id]
    # One-way: the leader still reaches its followers (so they keep following) but hears
    # nothing back; only check-quorum can end this.
    for follower in followers:
        cluster.block(follower, leader.id)
    cut = cluster.now
    assert cluster.run_until(lambda: not core(leader).is_leader, 2 * ELECTION_MAX)
    assert cluster.now - cut <= ELECTION_MAX + HEARTBEAT
    new = elect(cluster)
    assert new is not leader
    write(cluster, 10)


def test_check_quorum_keeps_an_idle_healthy_leader() -> None:
    """Counted from each follower's last answer (and the term start), not from the last
    commit: an idle leader whose followers answer heartbeats stays leader (Copycat stepped
    such leaders down)."""
    cluster = SimCluster(3, seed=14)
    leader = elect(cluster)
    write(cluster, 3)
    cluster.run_for(10_000)  # nothing committed for ten seconds
    assert cluster.leader() is leader
    assert len(cluster.checker.leaders) == 1


# ---------------------------------------------------------------------------- reads


@pytest.mark.parametrize("mode", [ReadMode.READ_INDEX, ReadMode.LEASE])
def test_stale_leader_cannot_serve_a_linearizable_read(mode: ReadMode) -> None:
    cluster = SimCluster(5, seed=15, read_mode=mode)
    old = elect(cluster)
    write(cluster, 5)
    first = cluster.read(old.id)
    assert cluster.run_until(lambda: first in cluster.read_results, 500)
    assert cluster.read_results[first].ok
    cluster.isolate(old.id)
    assert cluster.run_until(
        lambda: (leader := cluster.leader()) is not None and leader is not old, 3000
    )
    # The new leader commits writes the old one cannot know about...
    acked = write(cluster, 5)
    # ...so a read served by the old leader now would be stale: it must not be served.
    stale_reads = [cluster.read(old.id) for _ in range(3)]
    cluster.run_for(500)
    for request_id in stale_reads:
        result = cluster.read_results.get(request_id)
        assert result is None or not result.ok, result
    cluster.heal()
    converge(cluster)
    fresh = cluster.read()
    assert cluster.run_until(lambda: fresh in cluster.read_results, 500)
    result = cluster.read_results[fresh]
    assert result.ok and result.index >= max(cluster.acked[r] for r in acked)


def test_reads_while_a_leader_is_cut_off_without_check_quorum() -> None:
    """Without check-quorum the cut-off leader never steps down on its own; read index still
    keeps it from answering."""
    cluster = SimCluster(3, seed=16, check_quorum=False)
    old = elect(cluster)
    cluster.isolate(old.id)
    assert cluster.run_until(
        lambda: any(core(n).is_leader for n in cluster.up_nodes() if n is not old), 3000
    )
    write(cluster, 3)
    read = cluster.read(old.id)
    cluster.run_for(2000)
    assert core(old).is_leader  # still believes it leads
    assert read not in cluster.read_results  # but could not confirm a read


def test_concurrent_reads_share_one_heartbeat_round() -> None:
    cluster = SimCluster(3, seed=17)
    leader = elect(cluster)
    write(cluster, 3)
    cluster.run_for(20)
    before = cluster.stats["Heartbeat"]
    reads = [cluster.read(leader.id) for _ in range(50)]
    assert cluster.run_until(lambda: all(r in cluster.read_results for r in reads), 200)
    assert all(cluster.read_results[r].ok for r in reads)
    # One round for all fifty (two heartbeats, one per follower), plus at most one
    # scheduled heartbeat broadcast that fell in the window.
    assert cluster.stats["Heartbeat"] - before <= 4


def test_stale_reads_on_followers() -> None:
    cluster = SimCluster(3, seed=18)
    leader = elect(cluster)
    write(cluster, 10)
    follower = next(n for n in cluster.up_nodes() if n is not leader)
    cluster.isolate(follower.id)
    write(cluster, 10)
    request_id = cluster.read(follower.id, stale=True)
    result = cluster.read_results[request_id]
    assert result.ok and result.index == follower.applied < core(leader).commit_index
    linear = cluster.read(follower.id)
    assert not cluster.read_results[linear].ok  # followers refuse linearizable reads


# ---------------------------------------------------------------------------- transfer


def test_leadership_transfer() -> None:
    cluster = SimCluster(3, seed=19)
    leader = elect(cluster)
    write(cluster, 10)
    target = next(n for n in cluster.ids if n != leader.id)
    began = cluster.now
    cluster._carry_out(leader, core(leader).transfer_leadership(target, cluster.now))
    assert cluster.run_until(lambda: core(cluster.nodes[target]).is_leader, 1000)
    assert cluster.now - began < 150  # well before any election timeout could fire
    write(cluster, 10)
    converge(cluster)


def test_followers_apply_an_acknowledged_write_without_waiting_for_a_heartbeat() -> None:
    """A follower whose acknowledgement arrives after the commit it helped make is told the
    new commit index at once, not at the next heartbeat (50 ms)."""
    cluster = SimCluster(3, seed=20)
    elect(cluster)
    lags = []
    for _ in range(20):
        cluster.run_for(23)  # off the heartbeat rhythm
        (request_id,) = write(cluster, 1)
        index, acked_at = cluster.acked[request_id], cluster.now
        assert cluster.run_until(
            lambda i=index: all(n.applied >= i for n in cluster.nodes.values()), 1000
        )
        lags.append(cluster.now - acked_at)
    # one hop (<= 6 ms) plus a disk write (<= 5 ms) plus a hop at most
    assert max(lags) <= 2 * 6 + 5, lags


def test_a_crash_loses_unpersisted_entries_which_were_never_acknowledged() -> None:
    cluster = SimCluster(3, seed=21, disk=DiskConfig(min_latency=40, max_latency=40))
    leader = elect(cluster)
    follower = next(n for n in cluster.up_nodes() if n is not leader)
    write(cluster, 3)
    durable = follower.storage.last_index
    cluster.propose(leader.id, 5)
    assert cluster.run_until(lambda: core(follower).log.last_index == durable + 5, 100)
    assert follower.writes  # received, handed to the disk, not yet durable
    # It never claimed them: the leader's view of it stops at what it made durable.
    assert core(leader).role.progress[follower.id].match <= durable  # type: ignore[union-attr]
    cluster.crash(follower.id, lose_all_pending=True)
    assert follower.storage.last_index == durable
    cluster.restart(follower.id)
    assert core(follower).log.last_index == durable
    converge(cluster)  # the leader sends them again
