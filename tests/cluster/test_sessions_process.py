"""Exactly-once client sessions between real node processes over ZeroMQ on loopback.

A command whose answer is lost is retried with the same (session, sequence number) through a
leader change, and through a restart of every node from its snapshot (snapshots every few
entries, the log compacted behind them): each is applied exactly once and answered with the
result of its one application. A session left idle past its timeout while the cluster is down
expires by the leader's replicated time, on every replica at the same entry; its waiting
command fails with SessionExpired instead of being applied, and the client goes on under a new
session."""

from __future__ import annotations

import pathlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

from consensus.client import Client, CommandFuture, SessionExpired
from consensus.shell.protocol import ClientQuery
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.process

THRESHOLD = 10  # entries between snapshots


class UpperBound(random.Random):
    """Backoff "jitter" that always waits the whole backoff: the test knows when a retry
    leaves (after the leader it would have reached is gone)."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[LocalCluster]:
    c = LocalCluster(
        tmp_path,
        state_machine="tests.cluster.sessions_recorder:SessionRecorder",
        durability="never",  # SIGKILL keeps the page cache; fewer fsyncs keep the test short
        raft={
            "election_timeout_min_ms": 300,
            "election_timeout_max_ms": 600,
            "heartbeat_interval_ms": 50,
            "snapshot_threshold_entries": THRESHOLD,
            "snapshot_trailing_entries": 0,
        },
    )
    c.start_all()
    try:
        yield c
    finally:
        c.close()


def ask(cluster: LocalCluster, node: str, query: list[Any]) -> Any:
    ref = cluster.system.ref(f"coterie://_@{cluster.addresses[node]}/user/node")
    message = ClientQuery(f"q-{node}-{time.monotonic()}", msgpack.packb(query), True)
    return ref.ask(message, timeout=2).result(3).result


def applied(cluster: LocalCluster, node: str) -> list[bytes]:
    try:
        return list(ask(cluster, node, ["all"])[0])
    except Exception:
        return []


def wait(
    condition: Callable[[], bool], what: str, cluster: LocalCluster, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout}s; logs in {cluster.directory}")


def lose_answer_of(
    client: Client, cluster: LocalCluster, node: str, payload: bytes
) -> CommandFuture:
    """Submit ``payload`` with its (first) answer lost; returns once ``node`` applied it."""
    client.lose_answers(1)
    future = client.submit_async(payload, timeout=40)
    wait(lambda: payload in applied(cluster, node), f"{payload!r} applied on {node}", cluster)
    assert not future.done()  # the answer was lost; the retry waits for its backoff
    return future


def test_lost_answers_are_retried_through_failover_and_restart_and_applied_once(
    cluster: LocalCluster,
) -> None:
    addresses = list(cluster.addresses.values())
    system = cluster.system
    # A: its retries leave 1.5 s after a lost answer (time to kill the leader first).
    a = Client(
        system,
        addresses,
        attempt_timeout=0.5,
        backoff_initial=1.5,
        backoff_max=1.5,
        rng=UpperBound(),
    )
    filler = Client(system, addresses, attempt_timeout=0.5)
    first = cluster.wait_for_leader()
    a.submit(b"warm-up", timeout=20)
    first = cluster.wait_for_leader(among=[first, *cluster.ids])

    # 1. A lost answer, then the leader dies before the retry: the retry reaches the new
    # leader, which answers from the session's cache.
    once1 = lose_answer_of(a, cluster, first, b"once-1")
    cluster.kill(first)
    answer1 = once1.result(40)
    second = cluster.wait_for_leader()
    assert second != first
    for f in filler.submit_many([f"fill-a{i}".encode() for i in range(3 * THRESHOLD)], 20):
        f.result(25)
    cluster.start(first)
    # A session that times out sooner than the cluster is down below (kept alive until then).
    short = Client(system, addresses, attempt_timeout=0.5, session_timeout=1.0)
    short.submit(b"short-1", timeout=20)

    # 2. A lost answer, snapshots taken after it, then every node restarts (from its
    # snapshot and what the log holds after it) before the retry arrives.
    once2 = lose_answer_of(a, cluster, second, b"once-2")
    for f in filler.submit_many([f"fill-b{i}".encode() for i in range(3 * THRESHOLD)], 20):
        f.result(25)
    for node in list(cluster.procs):
        cluster.kill(node)
    # The short session's client sends while the cluster is down; its session's deadline
    # passes (no keep-alive gets through), so the command must not be applied.
    doomed = short.submit_async(b"short-doomed", timeout=40)
    time.sleep(1.5)
    cluster.start_all()
    answer2 = once2.result(40)
    with pytest.raises(SessionExpired):
        doomed.result(40)
    assert short.submit(b"short-2", timeout=20).ok  # under a new session
    assert short.sessions_opened == 2 and a.sessions_opened == 1

    # Every replica: each command applied once, answered with its one application's result,
    # the expired command never applied, the same sessions closed at the same entries.
    final = len(applied(cluster, cluster.wait_for_leader()))
    wait(
        lambda: all(len(applied(cluster, n)) >= final for n in cluster.ids),
        "every node caught up",
        cluster,
    )
    histories = {node: applied(cluster, node) for node in cluster.ids}
    assert len({tuple(h[:final]) for h in histories.values()}) == 1
    history = histories[first][:final]
    assert history.count(b"once-1") == 1 and history.count(b"once-2") == 1
    assert answer1.result == history.index(b"once-1") + 1
    assert answer2.result == history.index(b"once-2") + 1
    assert b"short-doomed" not in history and b"short-2" in history
    closed = {node: ask(cluster, node, ["closed"]) for node in cluster.ids}
    assert len({msgpack.packb(c) for c in closed.values()}) == 1, closed
    expired_sessions = [session for session, expired, _ in closed[first] if expired]
    assert expired_sessions, closed


def test_the_plain_client_has_no_session(cluster: LocalCluster) -> None:
    """sessions=False: no register entry, commands applied as plain payloads (even one that
    starts with the session mark)."""
    plain = Client(cluster.system, list(cluster.addresses.values()), sessions=False)
    cluster.wait_for_leader()
    assert plain.submit(b"\xc1plain", timeout=20).ok
    assert plain.session_id is None and plain.sessions_opened == 0
    leader = cluster.wait_for_leader()
    assert applied(cluster, leader)[-1] == b"\xc1plain"


def test_a_client_started_before_the_cluster_waits_for_its_session(tmp_path: pathlib.Path) -> None:
    """Copycat's client failed when it could not register a session; ours keeps trying (with
    backoff) while its command's deadline lasts, and the command is applied once."""
    cluster = LocalCluster(
        tmp_path,
        state_machine="tests.cluster.sessions_recorder:SessionRecorder",
        durability="never",
    )
    try:
        client = Client(cluster.system, list(cluster.addresses.values()), attempt_timeout=0.3)
        early = client.submit_async(b"early", timeout=40)
        time.sleep(1.5)
        assert not early.done() and client.sessions_opened == 0  # no node is up yet
        cluster.start_all()
        assert early.result(45).ok
        assert client.sessions_opened >= 1
        assert applied(cluster, cluster.wait_for_leader()).count(b"early") == 1
    finally:
        cluster.close()
