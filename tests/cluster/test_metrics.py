"""The Prometheus endpoint of a node: configured per node, validated, and its series move as the
cluster works (scraped over HTTP from real node processes)."""

from __future__ import annotations

import sys
import time
import urllib.request

import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors import configure_logging
from coterie.cli import main
from tests.cluster.cluster import LocalCluster

GOOD = """
cluster_id = "c"
state_machine = "examples.counter:Counter"
security = { curve = false }
[[nodes]]
id = "n1"
address = "127.0.0.1:7101"
data_dir = "d1"
metrics_address = "127.0.0.1:9101"
[[nodes]]
id = "n2"
address = "127.0.0.1:7102"
data_dir = "d2"
"""

BAD_METRICS = [
    (
        GOOD.replace('"127.0.0.1:9101"', '"127.0.0.1"'),
        "nodes[0].metrics_address: '127.0.0.1' is not host:port",
    ),
    (GOOD.replace('"127.0.0.1:9101"', "9101"), "nodes[0].metrics_address: 9101 is not host:port"),
    (
        GOOD.replace('"127.0.0.1:9101"', '"127.0.0.1:7101"'),
        "nodes[0].metrics_address: '127.0.0.1:7101' is already in use",
    ),
    (
        GOOD.replace('"127.0.0.1:7102"', '"127.0.0.1:9101"'),
        "nodes[1].address: duplicate address '127.0.0.1:9101'",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_METRICS)
def test_a_bad_metrics_address_names_the_key(tmp_path, capsys, text: str, expected: str) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(text)
    try:
        assert main(["node", "--config", str(config), "--id", "n1"]) == 2
    finally:
        # `coterie node` pointed structlog at capsys' stream, which closes after this test
        configure_logging("warning", stream=sys.__stderr__)
    err = capsys.readouterr().err
    assert expected in err, err


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.process
def test_metrics_endpoints_follow_the_cluster(tmp_path) -> None:
    raft = {
        "election_timeout_min_ms": 300,
        "election_timeout_max_ms": 600,
        "heartbeat_interval_ms": 50,
        "snapshot_threshold_entries": 2,  # so the writes below make every node snapshot
    }
    cluster = LocalCluster(
        tmp_path, state_machine="examples.counter:Counter", metrics=True, raft=raft
    )
    cluster.start_all()
    try:
        leader = cluster.wait_for_leader()
        before = {node: scrape(cluster.metrics_addresses[node]) for node in cluster.ids}
        assert value(before[leader], "coterie_role", role="leader") == 1.0
        assert sum(value(s, "coterie_elections_total") for s in before.values()) >= 1
        futures = cluster.client.submit_many([msgpack.packb(["add", 1])] * 300, timeout=20)
        assert all(f.result(30).ok for f in futures)
        # Followers learn the commit index a heartbeat after the leader answered the client,
        # and apply after that: scrape until every node has applied something new. The
        # leader's applied-index gauge moves when the state machine reports to the node, just
        # after the answers leave, and the client's session may commit a keep-alive meanwhile:
        # scrape until it has applied all it committed, too.
        deadline = time.monotonic() + 10
        while True:
            after = {node: scrape(cluster.metrics_addresses[node]) for node in cluster.ids}
            caught_up = all(
                value(after[node], "coterie_apply_seconds_count")
                > value(before[node], "coterie_apply_seconds_count")
                for node in cluster.ids
            ) and value(after[leader], "coterie_applied_index") == value(
                after[leader], "coterie_commit_index"
            )
            if caught_up or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for node in cluster.ids:
            was, now = before[node], after[node]
            assert value(now, "coterie_term") >= 1
            assert value(now, "coterie_commit_index") >= value(was, "coterie_commit_index") + 1
            if node == leader:  # followers learn the commit index a heartbeat later
                assert value(now, "coterie_applied_index") == value(now, "coterie_commit_index")
            assert value(now, "coterie_wal_append_seconds_count") > value(
                was, "coterie_wal_append_seconds_count"
            )
            # durability "always": every persisted batch was fsynced
            assert value(now, "coterie_wal_fsync_seconds_count") > value(
                was, "coterie_wal_fsync_seconds_count"
            )
            assert value(now, "coterie_apply_seconds_count") > value(
                was, "coterie_apply_seconds_count"
            )
            assert value(now, "coterie_actor_events_total", event="transport_frames_in") > 0
            role = "leader" if node == leader else "follower"
            assert value(now, "coterie_role", role=role) == 1.0
        lead = after[leader]
        assert value(lead, "coterie_proposed_commands_total") >= 300
        # 300 commands submitted at once travel in far fewer entries than commands
        assert value(lead, "coterie_proposed_entries_total") < 100
        assert value(lead, "coterie_applied_commands_total") >= 300
        # Snapshots are taken after the apply that passed the threshold, so wait for them.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            snapshots = {node: scrape(cluster.metrics_addresses[node]) for node in cluster.ids}
            if all(value(m, "coterie_snapshots_taken_total") >= 1 for m in snapshots.values()):
                break
            time.sleep(0.1)
        for node, now in snapshots.items():
            assert value(now, "coterie_snapshots_taken_total") >= 1, node
            assert 0 < value(now, "coterie_snapshot_index") <= value(now, "coterie_applied_index")
            assert value(now, "coterie_snapshot_bytes") > 0
            assert value(now, "coterie_snapshots_installed_total") == 0  # nobody fell behind
    finally:
        cluster.close()
