"""The snapshot keys of the cluster file: passed to the core, and a bad value names its key."""

from __future__ import annotations

import pathlib

import pytest

from coterie.config import ConfigError, load

BASE = """
cluster_id = "t"
state_machine = "examples.counter:Counter"

[[nodes]]
id = "n1"
address = "127.0.0.1:7101"
data_dir = "n1"

[security]
curve = false

[raft]
"""


def config_file(tmp_path: pathlib.Path, raft: str) -> pathlib.Path:
    path = tmp_path / "cluster.toml"
    path.write_text(BASE + raft)
    return path


def test_the_snapshot_keys_reach_the_core(tmp_path: pathlib.Path) -> None:
    raft = "snapshot_threshold_entries = 500\nsnapshot_trailing_entries = 7\n"
    raft += "snapshot_chunk_bytes = 65536\n"
    config = load(config_file(tmp_path, raft))
    core = config.settings_for("n1").raft
    assert core.snapshot_threshold_entries == 500
    assert core.snapshot_trailing_entries == 7
    assert core.snapshot_chunk_bytes == 65536
    default = load(config_file(tmp_path, "")).settings_for("n1").raft
    assert default.snapshot_threshold_entries == 0  # off unless configured


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "snapshot_threshold_entries = -1",
            r"raft\.snapshot_threshold_entries: must be at least 0",
        ),
        ("snapshot_chunk_bytes = 0", r"raft\.snapshot_chunk_bytes: must be at least 1"),
        ('snapshot_trailing_entries = "many"', r"raft\.snapshot_trailing_entries: must be int"),
    ],
)
def test_a_bad_snapshot_value_names_the_key(
    tmp_path: pathlib.Path, line: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load(config_file(tmp_path, line + "\n"))
