"""run_random: one randomized faulty run of a simulated cluster, fixed entirely by its seed.

A seed picks the cluster (3 or 5 nodes plus up to 2 spare nodes outside the configuration,
pre-vote and check-quorum on or off, read-index or lease reads, window and batch sizes,
snapshot thresholds, trailing entries and chunk sizes), the network (latency, loss,
duplication, slow links) and the disk (fsync latency), then a schedule: clients write and read
all along, session clients send numbered commands and retry them (answers lost on purpose,
sessions expiring), while faults strike every few hundred milliseconds (isolate a node, split
the cluster, cut one direction of a link, crash a node or the whole cluster, restart, heal,
add a spare as a learner, remove a member or the leader, hand leadership over). Then
everything heals and the run must converge: one leader, every member holding and having
applied the same log, state and session table, every acknowledged write in it. The checker
runs after every event throughout.

``python -m tests.sim.replay SEED`` reruns one seed exactly.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from consensus.config import ReadMode
from consensus.configuration import AddLearner, RemoveServer
from consensus.node import RaftNode

from .clients import SessionClient
from .cluster import DiskConfig, NetConfig, SimCluster, SimNode

DEFAULT_DURATION = 2500  # ms of simulated time with faults, before the healing phase
CONVERGE_TIMEOUT = 20_000


class DidNotConverge(AssertionError):
    """After healing, the cluster did not settle on one leader and one applied log in time.
    Not a safety violation, but a liveness bug worth a replay."""


@dataclasses.dataclass
class RunResult:
    seed: int
    nodes: int
    events: int
    time: int
    acked: int
    committed: int
    leaders: int
    reads_checked: int
    crashes: int
    snapshots: int
    installs: int
    config_changes: int
    session_acks: int
    settings: str


def settings_for(
    seed: int,
) -> tuple[random.Random, int, int, dict[str, object], NetConfig, DiskConfig]:
    rng = random.Random(f"schedule:{seed}")
    size = rng.choice((3, 3, 5))
    spares = rng.choice((0, 1, 2) if size == 3 else (0, 1))
    check_quorum = rng.random() < 0.85
    config: dict[str, object] = {
        "pre_vote": rng.random() < 0.85,
        "check_quorum": check_quorum,
        "read_mode": ReadMode.LEASE if check_quorum and rng.random() < 0.3 else ReadMode.READ_INDEX,
        "max_inflight": rng.choice((1, 2, 4, 8)),
        "max_entries_per_message": rng.choice((1, 3, 16, 64)),
        "snapshot_threshold_entries": rng.choice((0, 10, 25, 60)),
        "snapshot_trailing_entries": rng.choice((0, 2, 10)),
        "snapshot_chunk_bytes": rng.choice((32, 128, 1024)),
        "snapshot_retry_interval": rng.choice((60, 150)),
        "promote_lag": rng.choice((0, 4, 16)),
    }
    net = NetConfig(
        min_latency=1,
        max_latency=rng.choice((2, 5, 10, 20)),
        drop=rng.choice((0.0, 0.0, 0.02, 0.1, 0.2)),
        duplicate=rng.choice((0.0, 0.02, 0.1)),
        slow=rng.choice((0.0, 0.0, 0.05)),
        fifo=rng.random() < 0.5,
    )
    disk = DiskConfig(min_latency=1, max_latency=rng.choice((1, 3, 10)))
    return rng, size, spares, config, net, disk


def run_random(
    seed: int,
    *,
    duration: int = DEFAULT_DURATION,
    node_factory: Callable[..., RaftNode] = RaftNode,
    trace: bool = False,
) -> tuple[RunResult, SimCluster]:
    """One seeded run; raises InvariantViolation or DidNotConverge (both naming the seed)."""
    rng, size, spares, config, net, disk = settings_for(seed)
    cluster = SimCluster(
        size,
        spares=spares,
        seed=seed,
        net=net,
        disk=disk,
        node_factory=node_factory,
        trace=trace,
        **config,
    )
    settings = f"{size} nodes + {spares} spares {config} {net} {disk}"
    cluster.note(f"SETTINGS {settings}")
    ids = cluster.ids

    # -- clients: writes and reads all along the faulty phase
    at = 0
    while at < duration:
        at += rng.randint(5, 40)
        count = rng.randint(1, 5)
        anywhere = rng.random() < 0.15
        cluster.schedule(
            at, lambda c=count, a=anywhere: cluster.propose(rng.choice(ids) if a else None, c)
        )
    at = 0
    while at < duration:
        at += rng.randint(30, 150)
        stale = rng.random() < 0.2
        cluster.schedule(at, lambda s=stale: cluster.read(None, stale=s))

    # -- session clients: numbered commands, retried until answered, answers lost on purpose
    clients = [
        SessionClient(
            cluster,
            f"s{i}",
            random.Random(rng.getrandbits(64)),
            timeout_ms=rng.choice((300, 1000, 5000)),
            window=rng.choice((1, 3)),
            lose_reply=rng.choice((0.0, 0.1, 0.3)),
            retry_after=rng.choice((80, 200)),
        )
        for i in range(rng.choice((0, 1, 2)))
    ]
    for client in clients:
        at = 0
        while at < duration:
            at += rng.randint(20, 80)
            cluster.schedule(at, client.step)

    # -- faults
    def fault() -> None:
        down = [n.id for n in cluster.nodes.values() if n.core is None]
        up = [n.id for n in cluster.nodes.values() if n.core is not None]
        choice = rng.random()
        if choice < 0.15:
            cluster.heal()
        elif choice < 0.3:
            cluster.isolate(rng.choice(ids))
        elif choice < 0.42:
            members = list(ids)
            rng.shuffle(members)
            cut = rng.randint(1, len(members) - 1)
            cluster.partition(members[:cut], members[cut:])
        elif choice < 0.52:
            for _ in range(rng.randint(1, 3)):
                a, b = rng.sample(ids, 2)
                cluster.block(a, b)
        elif choice < 0.72 and up:
            leader = cluster.leader()
            victim = leader.id if leader is not None and rng.random() < 0.5 else rng.choice(up)
            cluster.crash(victim)
        elif choice < 0.75:
            for node_id in up:  # the whole cluster goes down at once
                cluster.crash(node_id)
            cluster.schedule(cluster.now + rng.randint(1, 400), restart_all)
        elif choice < 0.85:
            membership_change()
        elif choice < 0.9:
            transfer()
        elif down:
            cluster.restart(rng.choice(down))

    def membership_change() -> None:
        leader = cluster.leader()
        if leader is None or leader.core is None:
            return
        membership = leader.core.membership
        outside = [n for n in ids if n not in membership.members]
        if outside and (rng.random() < 0.6 or len(membership.voters) <= 2):
            cluster.change(AddLearner(rng.choice(outside)))
        elif len(membership.voters) > 2 or membership.learners:
            removable = list(
                membership.members if len(membership.voters) > 2 else membership.learners
            )
            cluster.change(RemoveServer(rng.choice(removable), transfer_first=rng.random() < 0.5))

    def transfer() -> None:
        leader = cluster.leader()
        if leader is None or leader.core is None or not leader.core.config.peers:
            return
        target = rng.choice(leader.core.config.peers)
        cluster._carry_out(leader, leader.core.transfer_leadership(target, cluster.now))

    def restart_all() -> None:
        for node_id in ids:
            cluster.restart(node_id)

    at = rng.randint(150, 400)
    while at < duration:
        cluster.schedule(at, fault)
        at += rng.randint(100, 500)

    # -- churn: some runs strike new leaders within milliseconds of their election, while
    # their first entries are still half replicated (the Raft paper's figure 8 lives there)
    churn = rng.choice((0.0, 0.0, 0.3, 0.6))

    def strike(leader_id: str) -> None:
        if cluster.now >= duration:
            return
        if rng.random() < 0.5:
            cluster.crash(leader_id)
            cluster.schedule(cluster.now + rng.randint(20, 400), lambda: cluster.restart(leader_id))
        else:
            cluster.isolate(leader_id)
            cluster.schedule(cluster.now + rng.randint(20, 400), cluster.heal)

    def on_leader(node: SimNode) -> None:
        if churn and cluster.now < duration and rng.random() < churn:
            cluster.schedule(cluster.now + rng.randint(0, 12), lambda n=node.id: strike(n))

    cluster.on_leader = on_leader

    try:
        cluster.run_for(duration)
        # -- healing: no more faults, everyone back; the run must converge
        cluster.heal()
        net.drop = net.duplicate = net.slow = 0.0
        restart_all()
        for client in clients:
            client.lose_reply = 0.0
        if not cluster.run_until(cluster.converged, CONVERGE_TIMEOUT):
            raise DidNotConverge(
                f"[seed {seed}] no convergence {CONVERGE_TIMEOUT} ms after healing: "
                f"{list(cluster.nodes.values())}\n"
                f"  replay: python -m tests.sim.replay {seed} --trace"
            )
        cluster.check_final()
    except AssertionError as exc:
        exc.trace = cluster.trace  # type: ignore[attr-defined]
        raise
    leader = cluster.leader()
    assert leader is not None and leader.core is not None
    result = RunResult(
        seed=seed,
        nodes=size,
        events=cluster.events,
        time=cluster.now,
        acked=len(cluster.acked),
        committed=leader.core.commit_index,
        leaders=len(cluster.checker.leaders),
        reads_checked=cluster.checker.reads_checked,
        crashes=sum(n.crashes for n in cluster.nodes.values()),
        snapshots=cluster.checker.snapshots_checked,
        installs=len(cluster.installs),
        config_changes=cluster.checker.config_entries,
        session_acks=cluster.checker.session_acks,
        settings=settings,
    )
    return result, cluster
