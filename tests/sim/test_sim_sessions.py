"""Exactly-once sessions in the simulator: a command retried after a lost reply, a leader
change and a restart (from snapshots) is applied once; a session's commands take effect in
sequence order; sessions expire identically on every node, by the log's time; session clients
under faults never see a command applied twice."""

from __future__ import annotations

import random
from typing import Any

from consensus.messages import ClientResponse
from consensus.sessions import (
    SEQUENCE_GAP,
    UNKNOWN_SESSION,
    encode_command,
    encode_keepalive,
    encode_register,
    session_error,
)
from consensus.shell.batching import encode_commands

from .clients import SessionClient
from .cluster import NetConfig, SimCluster
from .test_sim_scenarios import converge, core, elect, write
from .test_sim_snapshots import SNAPSHOTS


def call(cluster: SimCluster, command: bytes, node_id: str | None = None) -> Any:
    """Submit one command (as the shell would: a session envelope starts with the batch mark,
    so the entry holds it as a batch of one) and run until it is answered ok; its result."""
    answers: list[ClientResponse] = []
    for _ in range(20):
        cluster.submit(encode_commands([command]), node_id, answers.append)
        assert cluster.run_until(lambda: bool(answers), 2000)
        if answers[-1].ok:
            (result,) = answers[-1].result
            return result
        cluster.run_for(100)  # refused (no leader yet, say): try again
        node_id = None
    raise AssertionError(f"never answered ok: {answers}")


def register(cluster: SimCluster, timeout_ms: int) -> int:
    return int(call(cluster, encode_register(timeout_ms))["session"])


def applied_everywhere(cluster: SimCluster, session: int, seq: int) -> list[int]:
    """How many times each node's state machine applied (session, seq): never more than once
    (the state machine fails the run otherwise), so 1 each once it is everywhere."""
    return [int(n.app.user.last_seq.get(session, 0) >= seq) for n in cluster.nodes.values() if n.up]


def test_a_retried_command_is_applied_once_across_lost_reply_leader_change_restart() -> None:
    """A command retried after a lost reply, a leader change and a full restart (from
    snapshots) is applied exactly once and always answered with its first result."""
    cluster = SimCluster(3, seed=41, **SNAPSHOTS)
    old = elect(cluster)
    session = register(cluster, 60_000)
    command = encode_command(session, 1, 1, f"s{session}:1".encode())
    # The first try: applied, but the answer is lost (nobody listens).
    cluster.submit(encode_commands([command]), old.id)
    assert cluster.run_until(lambda: all(applied_everywhere(cluster, session, 1)), 2000)
    count = {n.id: n.sm_value for n in cluster.nodes.values()}
    first = cluster.checker.session_applies[(session, 1)][2]
    # A leader change: the old leader is cut off, the client retries at the new one.
    cluster.isolate(old.id)
    assert cluster.run_until(
        lambda: any(core(n).is_leader for n in cluster.up_nodes() if n is not old), 3000
    )
    assert call(cluster, command) == first
    cluster.heal()
    # Enough traffic for snapshots, then the whole cluster restarts from them.
    for _ in range(4):
        write(cluster, 10)
    converge(cluster)
    assert all(n.snapshots.latest() is not None for n in cluster.nodes.values())
    for node_id in cluster.ids:
        cluster.crash(node_id)
    for node_id in cluster.ids:
        cluster.restart(node_id)
    elect(cluster)
    assert call(cluster, command) == first  # answered from the restored session table
    converge(cluster)
    for node in cluster.nodes.values():
        # the retries were not applied: only the 40 plain writes since
        assert node.sm_value == count[node.id] + 40
    assert list(cluster.checker.session_applies) == [(session, 1)]


def test_a_sessions_commands_take_effect_in_sequence_order() -> None:
    cluster = SimCluster(3, seed=42)
    elect(cluster)
    session = register(cluster, 60_000)

    def command(seq: int) -> bytes:
        return encode_command(session, seq, 1, f"s{session}:{seq}".encode())

    gap = call(cluster, command(2))  # 1 never arrived
    assert session_error(gap) == SEQUENCE_GAP and gap["expected"] == 1
    one, two = call(cluster, command(1)), call(cluster, command(2))
    assert session_error(one) is None and two == one + 1
    assert call(cluster, command(1)) == one  # a late duplicate: the cached answer
    converge(cluster)


def test_sessions_expire_identically_on_every_node_by_the_logs_time() -> None:
    cluster = SimCluster(3, seed=43, **SNAPSHOTS)
    leader = elect(cluster)
    short, kept, long = register(cluster, 300), register(cluster, 300), register(cluster, 60_000)
    follower = next(n for n in cluster.up_nodes() if n is not leader)
    cluster.crash(follower.id)  # it will learn of the expiry from the log or a snapshot
    for _ in range(12):
        cluster.run_for(100)
        call(cluster, encode_keepalive(kept, 1))
        write(cluster, 3)
    cluster.restart(follower.id)
    converge(cluster)
    closes = cluster.checker.session_closes
    assert short in closes and closes[short][0]  # expired
    assert kept not in closes and long not in closes
    index = closes[short][1]
    # Decided by the log's time: the entry that expired it is stamped past the timeout.
    entry = cluster.checker.committed[index]
    assert entry is not None and entry.timestamp > 300
    for node in cluster.nodes.values():
        assert short not in node.app.sessions.sessions
        assert {kept, long} <= set(node.app.sessions.sessions)
    expired = call(cluster, encode_command(short, 1, 1, b"s0:1"))
    assert session_error(expired) == UNKNOWN_SESSION
    converge(cluster)  # check_final: identical session tables


def test_session_clients_under_faults_see_every_command_applied_once() -> None:
    rng = random.Random(44)
    cluster = SimCluster(
        5, seed=44, net=NetConfig(drop=0.05, duplicate=0.05, max_latency=10), **SNAPSHOTS
    )
    clients = [
        SessionClient(cluster, f"c{i}", rng, timeout_ms=5000, lose_reply=0.3) for i in range(3)
    ]
    elect(cluster)
    for step in range(150):
        for client in clients:
            client.step()
        cluster.run_for(20)
        if step % 30 == 10:
            leader = cluster.leader()
            if leader is not None:
                cluster.crash(leader.id)
        if step % 30 == 25:
            for node_id in cluster.ids:
                cluster.restart(node_id)
    for node_id in cluster.ids:
        cluster.restart(node_id)
    for _ in range(100):
        for client in clients:
            client.step(new_commands=False)
        cluster.run_for(50)
    converge(cluster, 20_000)
    assert sum(c.answered for c in clients) > 100
    assert sum(c.lost_replies for c in clients) > 10 and sum(c.retries for c in clients) > 10
    assert cluster.checker.session_acks > 100
    assert cluster.installs or cluster.checker.snapshots_checked > 5
