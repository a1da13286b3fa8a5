"""Real `coterie node` processes with CURVE on loopback: trusted peers work, rogues get nothing.

One 3-node cluster serves the module (its nodes elect a leader, which needs node-to-node
CURVE); every test checks what the nodes themselves say: their logs and their /metrics.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from actors import ActorSystem, AskTimeout
from actors.wire import encode_envelope, encode_frame, encode_payload
from consensus.client import Client, ClientError
from consensus.shell.protocol import ClientBatch, StatusRequest
from coterie.cli import main
from examples.counter import CounterClient
from tests.security.curve_cluster import CurveCluster, metric

EVENTS = "coterie_actor_events_total"
DROPPED = "coterie_dropped_frames_total"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CurveCluster]:
    cluster = CurveCluster(tmp_path_factory.mktemp("curve"))
    cluster.start_all()
    try:
        cluster.wait_for_leader()
        yield cluster
    finally:
        cluster.close()


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def node_ref(system: ActorSystem, cluster: CurveCluster, node: str):
    return system.ref(f"coterie://_@{cluster.addresses[node]}/user/node")


def public_key(cluster: CurveCluster, name: str) -> str:
    return (cluster.directory / "keys" / f"{name}.key").read_text().split()[-1]


def test_nodes_and_a_trusted_client_work_over_curve(cluster: CurveCluster) -> None:
    counter = CounterClient(cluster.client)
    before = counter.get()
    assert counter.add(5) == before + 5
    for node in cluster.ids:
        assert '"curve": true' in cluster.log(node)
        assert "peer refused" not in cluster.log(node)  # the nodes admitted one another


def test_a_rogue_without_the_cluster_key_gets_no_answer_and_changes_nothing(
    cluster: CurveCluster,
) -> None:
    counter = CounterClient(cluster.client)
    value_before = counter.get()
    leader = cluster.wait_for_leader()
    index_before = cluster.status(leader).last_index
    # The trusted client's session keep-alives are the only entries the log may gain.
    keepalives_before = cluster.client.keepalives_sent
    rogue_key = public_key(cluster, "rogue")

    # A rogue with a CURVE keypair of its own (it knows the nodes' public keys: they are
    # public) but not one the cluster allows.
    rogue = cluster.client_system("rogue", cluster.directory / "keys" / "rogue.key_secret")
    # A rogue speaking plain ZeroMQ, as every node did before CURVE.
    plain = ActorSystem("plain", host="127.0.0.1", cluster_id="secure")
    # A raw socket sending a well-formed frame: a client command with the right cluster id.
    context = zmq.Context()
    raw = context.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    # A DEALER blocks on send while it has no peer, and the node's CURVE handshake may
    # already have failed and dropped this one: then the frame goes nowhere, which is the point.
    raw.setsockopt(zmq.SNDTIMEO, 1000)
    raw.connect(f"tcp://{cluster.addresses['n1']}")
    try:
        rogue_counter = CounterClient(Client(rogue, list(cluster.addresses.values())))
        with pytest.raises(ClientError):
            rogue_counter.add(1000, timeout=1.5)
        for system in (rogue, plain):
            with pytest.raises(AskTimeout):
                node_ref(system, cluster, "n1").ask(StatusRequest(), timeout=0.5).result(5)
        payload = encode_payload(ClientBatch([msgpack.packb(["add", 1000])]))
        envelope = encode_envelope(
            "secure", ClientBatch.__coterie_tag__, "", "coterie://_/user/node", 7, payload
        )
        with contextlib.suppress(zmq.Again):
            raw.send(encode_frame([envelope]))
        assert raw.poll(500) == 0, "the node answered a plain socket"
    finally:
        rogue.shutdown()
        plain.shutdown()
        raw.close()
        context.term()

    assert counter.get() == value_before
    keepalives = cluster.client.keepalives_sent - keepalives_before
    assert cluster.status(leader).last_index <= index_before + keepalives
    # n1's log names the refused rogue by its public key and address; its metrics count both.
    assert wait_for(lambda: rogue_key in cluster.log("n1"))
    refusals = [line for line in cluster.log("n1").splitlines() if "peer refused" in line]
    assert any(rogue_key in line and '"address": "127.0.0.1"' in line for line in refusals)
    assert any('"key_not_allowed"' in line for line in refusals)
    assert any('"public_key": "-"' in line for line in refusals)  # the plain ones
    metrics = cluster.scrape()
    assert metric(metrics, EVENTS, "transport_refused_key_not_allowed") >= 1
    assert metric(metrics, EVENTS, "transport_refused_peers") >= 3


def test_right_key_but_wrong_cluster_id_is_refused_logged_and_counted(
    cluster: CurveCluster,
) -> None:
    before = metric(cluster.scrape(), DROPPED, "wrong_cluster")
    other = cluster.client_system(
        "confused", cluster.directory / "keys" / "client.key_secret", cluster_id="another"
    )
    try:
        with pytest.raises(AskTimeout):
            node_ref(other, cluster, "n1").ask(StatusRequest(), timeout=0.5).result(5)
    finally:
        other.shutdown()
    assert metric(cluster.scrape(), DROPPED, "wrong_cluster") >= before + 1
    client_key = public_key(cluster, "client")
    lines = [line for line in cluster.log("n1").splitlines() if '"wrong_cluster"' in line]
    assert any(f"key={client_key}" in line for line in lines), lines


def test_nodetool_needs_a_key_for_a_curve_cluster_and_works_with_one(
    cluster: CurveCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(cluster.config_path)
    assert main(["nodetool", "--config", config, "leader"]) == 2
    assert "security.curve = true: give --key FILE" in capsys.readouterr().err
    key = str(cluster.directory / "keys" / "client.key_secret")
    assert main(["nodetool", "--config", config, "--key", key, "status"]) == 0
    table = capsys.readouterr().out
    assert "leader" in table and "unreachable" not in table
    rogue = str(cluster.directory / "keys" / "rogue.key_secret")
    # A key the cluster does not list: the nodes never answer, so every node is unreachable.
    assert main(["nodetool", "--config", config, "--key", rogue, "--timeout", "0.5", "status"]) != 0
    assert capsys.readouterr().out.count("unreachable") == len(cluster.ids)
