"""HardStateStore and SnapshotStore: atomic replacement, refusal of unsafe updates, resumable
chunked snapshot writes and chunked reads."""

from __future__ import annotations

import pathlib

import pytest
from wal_helpers import flip_byte

from wal import HardState, HardStateStore, SnapshotMismatch, SnapshotStore, WalCorruption
from wal.snapshot import HEADER_SIZE


def test_hard_state_round_trip_and_rules(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "hardstate"
    store = HardStateStore(path)
    assert store.load() == HardState(0, None)
    store.save(HardState(3, "coterie://n@127.0.0.1:7100/user/node"))
    assert HardStateStore(path).load() == HardState(3, "coterie://n@127.0.0.1:7100/user/node")
    store.save(HardState(3, "coterie://n@127.0.0.1:7100/user/node"))  # same: no rewrite needed
    with pytest.raises(ValueError, match="already voted"):
        store.save(HardState(3, "someone else"))
    with pytest.raises(ValueError, match="go back"):
        store.save(HardState(2, None))
    store.save(HardState(4, None))
    store.save(HardState(4, "ünïcode"))
    assert HardStateStore(path).load() == HardState(4, "ünïcode")
    assert not list(tmp_path.glob("*.tmp"))


def test_damaged_hard_state_is_named(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "hardstate"
    HardStateStore(path).save(HardState(7, "a"))
    flip_byte(path, 20)
    with pytest.raises(WalCorruption) as info:
        HardStateStore(path).load()
    assert info.value.path == str(path)
    path.write_bytes(b"short")
    with pytest.raises(WalCorruption, match="only 5 bytes"):
        HardStateStore(path).load()


def test_snapshot_write_read_and_keep_k(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path / "snaps", keep=2)
    assert store.latest() is None
    for index in (10, 20, 30):
        meta = store.write(index, 2, [b"state-%d;" % index, b"x" * 1000])
        assert (meta.index, meta.term, meta.size) == (index, 2, len(b"state-%d;" % index) + 1000)
    kept = store.list()
    assert [m.index for m in kept] == [20, 30]
    latest = store.latest()
    assert latest is not None and latest.index == 30
    content = b"".join(store.read(latest, chunk_size=7))
    assert content == b"state-30;" + b"x" * 1000
    assert b"".join(store.read(latest, offset=5, chunk_size=100)) == content[5:]
    with pytest.raises(ValueError, match="outside"):
        store.read(latest, offset=latest.size + 1)


def test_snapshot_resumes_from_its_last_checkpoint(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path)
    writer = store.begin(50, 3)
    writer.write(b"a" * 100, offset=0)
    writer.write(b"b" * 100)
    assert writer.checkpoint() == 200
    writer.write(b"c" * 50)  # after the checkpoint: lost in the "crash"
    writer.close()
    assert store.list() == []  # a partial snapshot is not a snapshot
    again = SnapshotStore(tmp_path).begin(50, 3)
    assert again.offset == 200
    with pytest.raises(ValueError, match="continues at 200"):
        again.write(b"z", offset=250)
    again.write(b"c" * 50, offset=200)
    meta = again.finish(expected_size=250)
    assert b"".join(store.read(meta)) == b"a" * 100 + b"b" * 100 + b"c" * 50


def test_snapshot_with_a_bad_checkpoint_restarts_and_other_partials_go(
    tmp_path: pathlib.Path,
) -> None:
    store = SnapshotStore(tmp_path)
    writer = store.begin(5, 1)
    writer.write(b"data" * 10)
    writer.checkpoint()
    writer.close()
    partial = next(tmp_path.glob("*.partial"))
    flip_byte(partial, HEADER_SIZE + 3)
    assert store.begin(5, 1).offset == 0  # the prefix no longer checks out: start over
    other = store.begin(6, 1)
    assert [p.name for p in tmp_path.glob("*.partial")] == [other.path.name]
    other.abort()
    assert list(tmp_path.glob("*.partial")) == []


def test_snapshot_mismatch_and_corruption(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path)
    writer = store.begin(9, 1)
    writer.write(b"abc")
    with pytest.raises(SnapshotMismatch):
        writer.finish(expected_size=4)
    assert store.list() == []
    meta = store.write(9, 1, [b"hello world"])
    flip_byte(meta.path, HEADER_SIZE + 2)
    with pytest.raises(WalCorruption, match="content checksum"):
        b"".join(store.read(meta))
    flip_byte(meta.path, 10)
    with pytest.raises(WalCorruption) as info:
        store.list()
    assert info.value.path == str(meta.path)
