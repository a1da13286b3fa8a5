"""Nemesis runs on real processes: 5 nodes, each in its own network namespace, clients in
the root namespace, faults from a seeded schedule; plus the checks that make the result
mean something: the fault injection really cuts links, and a run with stale reads (not
linearizable by design) is caught. ``make jepsen`` runs the long version."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import time

import pytest

from coterie.jepsen import Recorder, Register, check, operations
from tests.jepsen import netns
from tests.jepsen.nemesis import KINDS, schedule
from tests.jepsen.nscluster import NetnsCluster
from tests.jepsen.run import RunResult, nemesis_run, table
from tests.jepsen.workload import Workload, WorkloadConfig

pytestmark = pytest.mark.process


@functools.cache
def _why_not() -> str | None:
    return netns.unavailable()


@pytest.fixture(autouse=True)
def _needs_namespaces() -> None:
    reason = _why_not()
    if reason:
        pytest.skip(f"nemesis runs need network namespaces: {reason}")


LISTEN = (
    "import socket,sys,time;s=socket.socket();"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
    "s.bind((sys.argv[1],7200));s.listen(8);time.sleep(30)"
)
CONNECT = (
    "import socket,sys;s=socket.socket();s.settimeout(0.5)\n"
    "try:\n s.connect((sys.argv[1],7200));print('up')\n"
    "except OSError:\n print('down')"
)


def test_partitions_and_healing_cut_and_restore_real_links() -> None:
    network = netns.Network(["a", "b", "c"])
    network.setup()
    listeners = []
    try:
        for node in network.nodes:
            listeners.append(
                subprocess.Popen(
                    [*network.exec_prefix(node), sys.executable, "-c", LISTEN, network.ips[node]]
                )
            )
        time.sleep(0.5)

        def reach(src: str, dst: str) -> bool:
            out = subprocess.run(
                [*network.exec_prefix(src), sys.executable, "-c", CONNECT, network.ips[dst]],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return out.strip() == "up"

        def client_reaches(dst: str) -> bool:
            with socket.socket() as s:
                s.settimeout(0.5)
                return s.connect_ex((network.ips[dst], 7200)) == 0

        assert reach("a", "b") and reach("b", "c") and reach("a", "c")
        network.partition([["a"], ["b", "c"]])
        assert not reach("a", "b") and not reach("b", "a") and not reach("c", "a")
        assert reach("b", "c")
        assert all(client_reaches(n) for n in network.nodes)  # clients are never cut off
        network.heal()
        network.cut_links([("a", "c")])  # a bridge through b
        assert not reach("a", "c") and reach("a", "b") and reach("b", "c")
        network.heal()
        assert reach("a", "c") and reach("c", "a")
    finally:
        for proc in listeners:
            proc.kill()
            proc.wait()
        network.teardown()
    assert (
        network.namespaces["a"]
        not in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_the_schedule_is_a_function_of_the_seed() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    first = schedule(7, 60, nodes)
    assert [(f.kind, f.at, f.params) for f in first] == [
        (f.kind, f.at, f.params) for f in schedule(7, 60, nodes)
    ]
    assert first != schedule(8, 60, nodes)
    kinds = {f.kind for seed in range(20) for f in schedule(seed, 60, nodes)}
    assert kinds == set(KINDS)


def assert_clean(result: RunResult) -> None:
    """A nemesis run that found nothing wrong: faults injected, work done, linearizable,
    nothing acknowledged lost, replicas equal, progress after healing."""
    print(table([result]))
    details = "\n".join(result.anomalies + result.nemesis_errors + result.faults)
    assert result.faults, "the nemesis injected nothing"
    assert result.counts["ok"] > 500, result.counts
    assert result.verdict == "linearizable", details
    assert result.lost == 0, details
    assert not result.divergent, details
    assert result.recovery is not None, f"no progress after healing; kept in {result.directory}"
    assert not result.nemesis_errors, details


def test_a_short_nemesis_run_is_linearizable_and_recovers(tmp_path) -> None:
    assert_clean(nemesis_run(7, seconds=10, base=tmp_path))  # pause, kill, isolated leader


def test_session_clients_retrying_through_faults_apply_every_add_once(tmp_path) -> None:
    # Counter adds go through the real client, which retries timed-out attempts on other
    # nodes while leaders die and links drop: its session must keep each add to one effect
    # (a double add shows as a counter value no linearization explains).
    workload = WorkloadConfig(retrying_client=True)
    assert_clean(nemesis_run(11, seconds=10, base=tmp_path, workload=workload))


def test_negative_control_stale_reads_from_a_partitioned_node_are_caught(tmp_path) -> None:
    # Same harness, but reads are stale=True from any node while one node is cut off:
    # the isolated node answers from an old state. If this passed the checker, no green
    # nemesis run would mean anything.
    cluster = NetnsCluster(tmp_path)
    config = WorkloadConfig(clients=8, counter_clients=0, stale_reads=True, ops_per_key=10_000)
    recorder = Recorder(processes=config.clients)
    load = Workload(cluster, recorder, 99, config)
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        follower = next(n for n in cluster.ids if n != leader)
        cluster.network.partition([[follower], [n for n in cluster.ids if n != follower]])
        load.start()
        time.sleep(4)
        load.stop()
    finally:
        cluster.close()
    result = check(operations(recorder.events()), Register())
    assert result.valid is False, result.explain()
    [bad] = result.anomalies
    assert any(op.f == "read" for op in bad.stuck or []), bad.explain()
