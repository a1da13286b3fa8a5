"""The [follow] table: parsed against the cluster's nodes, every bad value named by its key;
`coterie node` refuses follower mistakes before starting anything."""

from __future__ import annotations

import pathlib

import pytest

from coterie.cli import main
from follow.config import FollowConfigError, parse

PATH = pathlib.Path("/etc/cluster.toml")
NODES = {"n1", "n2", "n3"}
F0 = r"\.followers\[0\]\."  # the first follower's keys


def test_a_full_table() -> None:
    config = parse(
        {
            "serve": {"n1": "127.0.0.1:8101", "f1": "127.0.0.1:8201"},
            "followers": [
                {"id": "f1", "data_dir": "f1", "source": "http://127.0.0.1:8101"},
                {
                    "id": "f2",
                    "data_dir": "/abs/f2",
                    "max_window": 128,
                    "timeout_s": 1,
                    "snapshot_every_entries": 5000,
                },
            ],
        },
        PATH,
        NODES,
        {"127.0.0.1:7101"},
    )
    assert config.serve == {"n1": "127.0.0.1:8101", "f1": "127.0.0.1:8201"}
    f1, f2 = config.followers["f1"], config.followers["f2"]
    assert f1.data_dir == pathlib.Path("/etc/f1") and f1.source == "http://127.0.0.1:8101"
    assert f2.source is None and f2.max_window == 128 and f2.timeout_s == 1.0
    assert f1.snapshot_every_entries == 0 and f2.snapshot_every_entries == 5000


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"bogus": 1}, r"\.bogus: unknown key"),
        ({"serve": {"n9": "127.0.0.1:1"}}, r"\.serve\.n9: not the id of a node"),
        ({"serve": {"n1": "localhost"}}, r"\.serve\.n1: 'localhost' is not host:port"),
        ({"serve": {"n1": "127.0.0.1:7101"}}, r"\.serve\.n1: .* already in use"),
        ({"serve": {"n1": "h:1", "n2": "h:1"}}, r"\.serve\.n2: .* already in use"),
        ({"followers": {"id": "f1"}}, r"\.followers: must be an array"),
        ({"followers": [{"id": "n1", "data_dir": "x"}]}, r"\.followers\[0\]\.id: 'n1' is"),
        ({"followers": [{"data_dir": "x"}]}, r"\.followers\[0\]\.id: missing"),
        ({"followers": [{"id": "f1"}]}, r"\.followers\[0\]\.data_dir: missing"),
        ({"followers": [{"id": "f", "data_dir": "x", "source": "ftp://h"}]}, F0 + "source: .*http"),
        ({"followers": [{"id": "f1", "data_dir": "x", "timeout_s": 0}]}, F0 + "timeout_s: must be"),
        ({"followers": [{"id": "f", "data_dir": "x", "max_window": 0}]}, F0 + "max_window: must"),
        ({"followers": [{"id": "f", "data_dir": "x", "initial_window": 9, "max_window": 8}]},
         r"\.followers\[0\]\.initial_window: is above max_window"),
        ({"followers": [{"id": "f", "data_dir": "x", "snapshot_every_entries": -1}]},
         F0 + "snapshot_every_entries: must be 0 or more"),
        ({"followers": [{"id": "f1", "data_dir": "x", "colour": 1}]}, F0 + "colour: unknown"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key(table: dict, message: str) -> None:
    with pytest.raises(FollowConfigError, match=f"^{PATH}: follow{message}"):
        parse(table, PATH, NODES, {"127.0.0.1:7101"})


def write_cluster(tmp_path: pathlib.Path, follow: str) -> pathlib.Path:
    path = tmp_path / "cluster.toml"
    path.write_text(
        'cluster_id = "t"\nstate_machine = "examples.counter:Counter"\n\n'
        '[[nodes]]\nid = "n1"\naddress = "127.0.0.1:7101"\ndata_dir = "n1"\n\n'
        "[security]\ncurve = false\n\n" + follow
    )
    return path


@pytest.mark.parametrize(
    ("follow", "args", "message"),
    [
        ("", ["--id", "f1", "--follow", "http://h:1"], "no follower 'f1' in"),
        ('[[follow.followers]]\nid = "f1"\ndata_dir = "f1"\n', ["--id", "f1"], "no --follow URI"),
        ("", ["--id", "n1", "--follow", "http://h:1"], "'n1' is a Raft node"),
        ('[[follow.followers]]\nid = "f1"\ndata_dir = "f1"\n', ["--id", "f1", "--follow", "x"],
         "follow URI 'x'"),
        ('[follow.serve]\nn1 = "nowhere"\n', ["--id", "n1"], "follow.serve.n1: 'nowhere'"),
        ("", ["--id", "r1", "--follow", "http://h:1"], "or give --data-dir"),
        ("", ["--id", "r1", "--follow", "http://h:1", "--data-dir", "r1", "--serve", "x"],
         "--serve 'x' is not host:port"),
        ("", ["--id", "r1", "--data-dir", "r1"], "no --follow URI"),
    ],
)  # fmt: skip
def test_coterie_node_refuses_follower_mistakes(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    follow: str,
    args: list,
    message: str,
) -> None:
    config = write_cluster(tmp_path, follow)
    assert main(["node", "--config", str(config), *args]) == 2
    assert message in capsys.readouterr().err
