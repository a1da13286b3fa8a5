"""The command line end to end: config errors name their key, nodetool refuses bad node names
with the reason, and drives a live cluster (status, leader, transfer-leader); a node stopped
with SIGTERM while leading hands leadership over first."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from coterie.cli import main
from coterie.config import load
from membership.config import MembershipConfig
from membership.rapid.actor import RapidMembershipConfig
from membership.rapid.messages import GetRapidStatus
from tests.cluster.cluster import ROOT, LocalCluster

GOOD = """
cluster_id = "c"
state_machine = "examples.counter:Counter"
security = { curve = false }
[[nodes]]
id = "n1"
address = "127.0.0.1:7101"
data_dir = "d1"
[[nodes]]
id = "n2"
address = "127.0.0.1:7102"
data_dir = "d2"
"""

BAD_CONFIGS = [
    ("", "cluster_id: missing"),
    ("cluster_id = 'c'\nstate_machine = 'x'\n", "state_machine: 'x' is not 'module:Class'"),
    (GOOD + "colour = 'red'\n", "colour: unknown key"),
    (
        GOOD.replace('"127.0.0.1:7102"', '"127.0.0.1"'),
        "nodes[1].address: '127.0.0.1' is not host:port",
    ),
    (GOOD.replace('"127.0.0.1:7102"', '"127.0.0.1:70000"'), "nodes[1].address"),
    (GOOD.replace('id = "n2"', 'id = "n1"'), "nodes[1].id: duplicate node id 'n1'"),
    (GOOD.replace('data_dir = "d2"', ""), "nodes[1].data_dir: missing"),
    (
        GOOD + "[raft]\nelection_timeout_min_ms = 'soon'\n",
        "raft.election_timeout_min_ms: must be int",
    ),
    (GOOD + "[raft]\nheartbeat_ms = 5\n", "raft.heartbeat_ms: unknown key"),
    (GOOD + "[raft]\nheartbeat_interval_ms = 500\n", "heartbeat_interval < election_timeout_min"),
    (GOOD + "[raft]\nread_mode = 'psychic'\n", "raft.read_mode: 'psychic' is not one of"),
    (GOOD + "[wal]\ndurability = 'sometimes'\n", "wal.durability: 'sometimes' is not one of"),
    (GOOD + "[wal]\nfsync = true\n", "wal.fsync: unknown key"),
    (GOOD + "[raft]\npromote_lag_entries = -1\n", "raft.promote_lag_entries: must be at least 0"),
    (GOOD + "[raft]\nauto_promote = 'yes'\n", "raft.auto_promote: must be bool"),
    (GOOD + "[membership]\nprotocol = 'swim'\n", "membership.protocol: 'swim' is not one of"),
    (GOOD + "[membership]\nseeds = []\n", "membership.seeds: unknown key"),
    ("membership = 'rapid'\n" + GOOD, "membership: must be a table"),
    ("cluster_id = 'c'\nstate_machine = 'a:B'\nnodes = 3\n", "nodes: at least one"),
    ("this is not toml", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_a_bad_config_names_the_key(tmp_path, capsys, text: str, expected: str) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(text)
    assert main(["node", "--config", str(config), "--id", "n1"]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert str(config) in err


def test_membership_protocol_selects_the_membership_every_node_runs(tmp_path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(GOOD)
    assert isinstance(load(config).settings_for("n1").membership, MembershipConfig)
    config.write_text(GOOD + "[membership]\nprotocol = 'rapid'\n")
    loaded = load(config)
    for node in ("n1", "n2"):
        membership = loaded.settings_for(node).membership
        assert isinstance(membership, RapidMembershipConfig)
        # Every node knows every node as a seed; the first in the file may form the cluster.
        assert membership.seeds == (
            "coterie://n1@127.0.0.1:7101/user/node",
            "coterie://n2@127.0.0.1:7102/user/node",
        )


def test_promotion_settings_reach_the_raft_config(tmp_path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(GOOD + "[raft]\npromote_lag_entries = 500\nauto_promote = false\n")
    raft = load(config).settings_for("n2").raft
    assert raft.promote_lag == 500 and raft.auto_promote is False


def test_unknown_node_id_and_missing_file(tmp_path, capsys) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(GOOD)
    assert main(["node", "--config", str(config), "--id", "n9"]) == 2
    assert "no node with id 'n9' (nodes: n1, n2)" in capsys.readouterr().err
    assert main(["node", "--config", str(tmp_path / "nope.toml"), "--id", "n1"]) == 2
    assert "no such file" in capsys.readouterr().err


BAD_NODES = [
    ("127.0.0.1:99999", "port '99999': must be between 1 and 65535"),
    ("127.0.0.1:", "port"),
    ("bad host!:7101", "host"),
    ("n1", "node ids need --config"),
    ("coterie://n1@127.0.0.1:7101/user/node/membership", "addressed at /user/node"),
    ("coterie://n1/user/node", "no host:port"),
    ("coterie://n 1@127.0.0.1:7101/user/node", "system name"),
    ("http://127.0.0.1:7101", "scheme"),
]


@pytest.mark.parametrize(("name", "expected"), BAD_NODES)
def test_nodetool_names_what_is_wrong_with_a_node(capsys, name: str, expected: str) -> None:
    assert main(["nodetool", "--node", name, "status"]) == 2
    err = capsys.readouterr().err
    assert expected in err, err


def nodetool(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coterie.cli", "nodetool", "--config", str(cluster.config), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
    )


@pytest.fixture
def cluster(tmp_path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path)
    c.start_all()
    try:
        yield c
    finally:
        c.close()


@pytest.mark.process
def test_nodetool_drives_a_live_cluster(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    out = nodetool(cluster, "status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "node",
        "address",
        "role",
        "member",
        "term",
        "last",
        "commit",
        "applied",
        "lag",
        "membership",
    ]
    roles = {line.split()[0]: line.split()[2] for line in lines[1:]}
    assert roles[leader] == "leader" and sorted(roles) == ["n1", "n2", "n3"]
    assert {line.split()[3] for line in lines[1:]} == {"voter"}
    assert nodetool(cluster, "leader").stdout.split()[0] == leader
    target = next(n for n in cluster.ids if n != leader)
    moved = nodetool(cluster, "transfer-leader", cluster.addresses[target])
    assert moved.returncode == 0, moved.stderr
    assert f"{target} leads now" in moved.stdout
    assert cluster.wait_for_leader() == target


@pytest.mark.process
def test_sigterm_on_the_leader_hands_leadership_over(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    started = time.monotonic()
    cluster.kill(leader, signal.SIGTERM)
    survivors = cluster.alive()
    new = cluster.wait_for_leader(among=survivors)
    elapsed = time.monotonic() - started
    log = (cluster.directory / f"{leader}.log").read_text()
    assert "leadership handed over before shutdown" in log
    assert new != leader and elapsed < 5, elapsed


@pytest.mark.process
def test_a_cluster_file_with_rapid_membership_runs_rapid_on_every_node(tmp_path) -> None:
    """``[membership] protocol = "rapid"``: three `coterie node` processes started at once end
    in one Rapid view (the first node in the file formed it, the others joined), and nodetool
    shows each node's membership state."""
    cluster = LocalCluster(tmp_path, membership_protocol="rapid")
    try:
        cluster.start_all()
        cluster.wait_for_leader()
        members = {f"coterie://{n}@{a}/user/node" for n, a in cluster.addresses.items()}

        def views() -> dict[str, Any]:
            out = {}
            for node, address in cluster.addresses.items():
                ref = cluster.system.ref(f"coterie://_@{address}/user/node/membership")
                try:
                    out[node] = ref.ask(GetRapidStatus(), timeout=1).result(2)
                except Exception:
                    out[node] = None
            return out

        # The first node forms the view once no other answered for seed_timeout (10 s);
        # the others find it at their next join attempt (backoff up to 8 s).
        started = time.monotonic()
        deadline = started + 60
        seen = views()
        while time.monotonic() < deadline:
            if all(s is not None and {m for m, _ in s.members} == members for s in seen.values()):
                break
            time.sleep(0.2)
            seen = views()
        print(f"one Rapid view of 3 after {time.monotonic() - started:.1f} s")
        assert all(s is not None and s.state == "member" for s in seen.values()), seen
        assert len({(s.epoch, s.config_id) for s in seen.values()}) == 1, seen  # one view
        assert {m for m, _ in seen["n1"].members} == members
        out = nodetool(cluster, "status")
        assert out.returncode == 0, out.stderr
        assert {line.split()[-1] for line in out.stdout.splitlines()[1:]} == {"member"}
    finally:
        cluster.close()
