"""The example state machines: unit behaviour, and the key-value store on a live cluster."""

from __future__ import annotations

import msgpack
import pytest

from consensus.shell.state_machine import EntryMeta
from examples.counter import Counter
from examples.kv import KeyValueClient, KeyValueStore, Versioned
from tests.cluster.cluster import LocalCluster


def test_counter_applies_adds_and_round_trips_its_snapshot() -> None:
    counter = Counter()
    assert counter.apply(msgpack.packb(["add", 5]), EntryMeta(1, 1, 10)) == 5
    assert counter.apply(msgpack.packb(["add", -2]), EntryMeta(2, 1, 11)) == 3
    with pytest.raises(ValueError, match="unknown counter command"):
        counter.apply(msgpack.packb(["mul", 2]), EntryMeta(3, 1, 12))
    restored = Counter()
    restored.restore(counter.snapshot())
    assert restored.query(msgpack.packb(["get"])) == 3


class Watching(KeyValueStore):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, int, int]] = []

    def on_put(self, key: str, value: bytes, meta: EntryMeta) -> None:
        self.events.append(("put", key, meta.index, meta.timestamp))

    def on_delete(self, key: str, existed: bool, meta: EntryMeta) -> None:
        self.events.append(("delete", key, meta.index, meta.timestamp))


def test_kv_handlers_see_sequence_numbers_and_timestamps() -> None:
    kv = Watching()
    assert (
        kv.apply(msgpack.packb(["put", "a", b"1"]), EntryMeta(7, 2, 1000))
        == EntryMeta(7, 2, 1000).sequence
    )
    assert kv.apply(msgpack.packb(["delete", "a"]), EntryMeta(8, 2, 1001)) is True
    assert kv.apply(msgpack.packb(["delete", "a"]), EntryMeta(9, 2, 1002)) is False
    kv.apply(msgpack.packb(["put", "b", b"2"]), EntryMeta(10, 3, 1003))
    assert [e[:2] for e in kv.events] == [
        ("put", "a"),
        ("delete", "a"),
        ("delete", "a"),
        ("put", "b"),
    ]
    assert kv.events == [
        ("put", "a", 7, 1000),
        ("delete", "a", 8, 1001),
        ("delete", "a", 9, 1002),
        ("put", "b", 10, 1003),
    ]
    seq_b = EntryMeta(10, 3, 1003).sequence
    assert kv.query(msgpack.packb(["get", "b"])) == [b"2", seq_b, 1003]
    copy = KeyValueStore()
    copy.restore(kv.snapshot())
    assert copy.data == {"b": Versioned(b"2", seq_b, 1003)}


@pytest.mark.process
def test_kv_store_on_a_live_cluster(tmp_path) -> None:
    cluster = LocalCluster(tmp_path, state_machine="examples.kv:KeyValueStore")
    cluster.start_all()
    try:
        cluster.wait_for_leader()
        kv = KeyValueClient(cluster.client)
        first = kv.put("alpha", b"1")
        second = kv.put("beta", b"2")
        assert second > first
        batch = [kv.client.submit_async(msgpack.packb(["put", f"k{i}", b"v"])) for i in range(50)]
        sequences = [f.result(10).result for f in batch]
        assert len(set(sequences)) == 50 and sequences == sorted(sequences)
        got = kv.get("alpha")
        assert got is not None and got.value == b"1" and got.sequence == first
        assert kv.delete("alpha") is True
        assert kv.get("alpha") is None
        assert kv.keys() == sorted(["beta", *(f"k{i}" for i in range(50))])
        beta = kv.get("beta")
        assert beta is not None and beta.timestamp >= got.timestamp
    finally:
        cluster.close()
