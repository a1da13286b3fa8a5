"""The example state machines survive a snapshot: saved through the snapshot files and
restored from the buffer they are handed (a bytearray), they answer as the original did."""

from __future__ import annotations

import pathlib

import msgpack

from consensus.configuration import Membership
from consensus.shell.snapshot_files import SnapshotFiles
from consensus.shell.state_machine import EntryMeta
from consensus.snapshots import SnapshotInfo
from examples.counter import Counter
from examples.kv import KeyValueStore

POINT = SnapshotInfo(9, 1, Membership(("n1",)), timestamp=77)


def round_trip(machine: object, fresh: object, tmp_path: pathlib.Path) -> object:
    files = SnapshotFiles(tmp_path / "snaps")
    files.save(POINT, machine.snapshot())  # type: ignore[attr-defined]
    body = files.read_body(POINT.index, POINT.term)
    assert isinstance(body, bytearray)
    fresh.restore(body)  # type: ignore[attr-defined]
    return fresh


def test_the_counter_restores_from_its_snapshot(tmp_path: pathlib.Path) -> None:
    counter = Counter()
    for i, n in enumerate((5, -2, 40)):
        counter.apply(msgpack.packb(["add", n]), EntryMeta(i + 1, 1, 100 + i))
    restored = round_trip(counter, Counter(), tmp_path)
    assert isinstance(restored, Counter)
    get = msgpack.packb(["get"])
    assert restored.query(get) == counter.query(get) == 43
    assert restored.last_timestamp == counter.last_timestamp == 102


def test_the_key_value_store_restores_from_its_snapshot(tmp_path: pathlib.Path) -> None:
    store = KeyValueStore()
    store.apply(msgpack.packb(["put", "a", b"1"]), EntryMeta(1, 1, 10))
    store.apply(msgpack.packb(["put", "b", b"\x00\xff"]), EntryMeta(2, 1, 11))
    store.apply(msgpack.packb(["put", "a", b"3"]), EntryMeta(3, 1, 12, 1))
    store.apply(msgpack.packb(["delete", "b"]), EntryMeta(4, 1, 13))
    store.apply(msgpack.packb(["put", "c", b""]), EntryMeta(5, 1, 14))
    restored = round_trip(store, KeyValueStore(), tmp_path)
    assert isinstance(restored, KeyValueStore)
    for query in (["keys"], ["get", "a"], ["get", "b"], ["get", "c"]):
        payload = msgpack.packb(query)
        assert restored.query(payload) == store.query(payload)
    assert restored.query(msgpack.packb(["get", "a"])) == [b"3", 3 << 16 | 1, 12]
