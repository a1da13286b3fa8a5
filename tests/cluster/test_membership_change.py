"""Membership changes on real node processes over ZeroMQ: a 3-node counter cluster grows to 5
(``nodetool add``, learner then voter) while clients add to the counter, then its leader is
removed gracefully (``nodetool remove``: leadership transfer first). No client request fails,
and the counter equals the number of acknowledged adds on every member. After every process
is killed and restarted from the same file, the configuration is the one in the logs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import msgpack
import pytest

from consensus.client import ClientError
from consensus.shell.protocol import ClientQuery
from coterie.cli import main
from examples.counter import CounterClient
from tests.cluster.cluster import LocalCluster

pytestmark = pytest.mark.process


@pytest.fixture
def cluster(tmp_path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, size=3, joiners=2, state_machine="examples.counter:Counter")
    c.start_all()
    try:
        yield c
    finally:
        c.close()


class Writers:
    """Clients adding 1 to the counter in a loop, counting acknowledgements and failures."""

    def __init__(self, cluster: LocalCluster, count: int = 2) -> None:
        self.counter = CounterClient(cluster.client)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(count)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.counter.add(1, timeout=20)
            except ClientError as exc:
                with self.lock:
                    self.failures.append(str(exc))
            else:
                with self.lock:
                    self.acked += 1

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def nodetool(cluster: LocalCluster, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["nodetool", "--config", str(cluster.config), *args])
    out = capsys.readouterr()
    assert code == 0, out
    return out.out


def counter_on(cluster: LocalCluster, node: str) -> int:
    ref = cluster.system.ref(f"coterie://_@{cluster.addresses[node]}/user/node")
    query = ClientQuery(f"get-{node}-{time.monotonic()}", msgpack.packb(["get"]), stale=True)
    answer = ref.ask(query, timeout=2).result(3)
    assert answer.ok, answer
    return int(answer.result)


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_grow_to_five_then_remove_the_leader_without_a_failed_request(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    first = cluster.wait_for_leader(among=["n1", "n2", "n3"])
    # The joiners wait: nobody elects them, and they elect nobody.
    for joiner in cluster.joiners:
        status = cluster.status(joiner)
        assert status is not None and status.role == "follower" and status.term == 0
    with Writers(cluster) as writers:
        wait_for(lambda: writers.acked >= 10, "the first writes")
        for joiner in cluster.joiners:
            out = nodetool(cluster, capsys, "add", joiner)
            assert f"{joiner} ({cluster.addresses[joiner]}) added as a learner" in out
            assert f"{joiner} is a voter" in out
        status = cluster.status(first)
        assert status is not None
        assert sorted(status.voters) == ["n1", "n2", "n3", "n4", "n5"]
        assert status.learners == ()
        table = nodetool(cluster, capsys, "status").splitlines()[1:]
        assert {row.split()[0]: row.split()[3] for row in table} == dict.fromkeys(
            cluster.ids, "voter"
        )

        grown = writers.acked
        out = nodetool(cluster, capsys, "remove", first)
        assert "leadership is being handed to" in out
        assert f"{first} removed at index" in out
        rest = [node for node in cluster.ids if node != first]

        def removed() -> bool:
            status = cluster.status(first)
            return status is not None and status.role == "removed"

        wait_for(removed, f"{first} to stop its Raft")
        leader = cluster.wait_for_leader(among=rest)
        acked_before = writers.acked
        wait_for(lambda: writers.acked > acked_before + 10, "writes to go on after the removal")
    assert writers.failures == []
    assert 10 <= grown <= acked_before < writers.acked  # writes went on through the changes
    status = cluster.status(leader)
    assert status is not None and sorted(status.voters) == sorted(rest)
    final = writers.counter.get()
    assert final == writers.acked
    wait_for(lambda: all(counter_on(cluster, node) == final for node in rest), "replicas")
    # The removed node stays out: it has stopped, and nobody counts it any more.
    assert cluster.status(first).role == "removed"  # type: ignore[union-attr]


def test_after_a_restart_the_log_not_the_file_says_who_the_members_are(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = LocalCluster(
        tmp_path, size=3, joiners=1, state_machine="examples.counter:Counter", durability="never"
    )
    cluster.start_all()
    try:
        first = cluster.wait_for_leader(among=["n1", "n2", "n3"])
        counter = CounterClient(cluster.client)
        counter.add(5)
        nodetool(cluster, capsys, "add", "n4")
        gone = next(node for node in ["n1", "n2", "n3"] if node != first)  # a follower
        nodetool(cluster, capsys, "remove", gone)
        counter.add(7)
        for node in cluster.ids:
            cluster.kill(node)  # SIGKILL every process, then start them all from the same file
        cluster.start_all()
        members = [node for node in cluster.ids if node != gone]
        leader = cluster.wait_for_leader(among=members)
        status = cluster.status(leader)
        assert status is not None and sorted(status.voters) == members
        assert counter.get() == 12  # a read: a write retried after a timeout may apply twice
        counter.add(1)
        # The removed node is named a voter by the file but not by its log: it never campaigns.
        wait_for(lambda: cluster.status(gone) is not None, f"{gone} to answer", timeout=20)
        status = cluster.status(gone)
        assert status is not None and status.role == "follower" and gone not in status.voters
        assert status.term <= cluster.status(leader).term  # type: ignore[union-attr]
    finally:
        cluster.close()
