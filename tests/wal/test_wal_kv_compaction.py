"""Key-value live compaction: newest entry per key, tombstones purged by age, appends go on."""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import threading

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wal import Entry, EntryKind, SegmentedLog
from wal import kv_compaction as kv
from wal.kv_compaction import OPAQUE, encode_delete, encode_put, msgpack_kv_key

SEGMENT_SIZE = 900
NOW = 1_700_000_000_000
DAY = 86_400_000


def replay(entries: list[Entry]) -> dict[object, bytes]:
    """The kv example's state machine: what a node rebuilds from the log."""
    state: dict[object, bytes] = {}
    for entry in entries:
        if entry.kind != EntryKind.COMMAND:
            continue
        payloads = [entry.payload]
        if entry.payload[:1] == b"\xc1":  # a batch of commands in one entry
            try:
                payloads = msgpack.unpackb(entry.payload[1:])
            except ValueError:
                continue
        for payload in payloads:
            try:
                op = msgpack.unpackb(payload)
            except ValueError:
                continue
            if op[0] == "put":
                state[op[1]] = op[2]
            elif op[0] == "delete":
                state.pop(op[1], None)
    return state


class KvLog:
    """A log plus the list of everything ever appended to it."""

    def __init__(self, directory: pathlib.Path, segment_size: int = SEGMENT_SIZE) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.log = SegmentedLog.open(directory, segment_size=segment_size)
        self.appended: list[Entry] = []

    def add(self, payload: bytes, *, timestamp: int = NOW, kind: int = EntryKind.COMMAND) -> None:
        entry = Entry(self.log.last_index + 1, 1, kind, timestamp, payload)
        self.log.append([entry], sync=False)
        self.appended.append(entry)

    def put(self, key: str, value: bytes, timestamp: int = NOW) -> None:
        self.add(encode_put(key, value), timestamp=timestamp)

    def delete(self, key: str, timestamp: int = NOW) -> None:
        self.add(encode_delete(key), timestamp=timestamp)

    def entries(self) -> list[Entry]:
        return list(self.log.read_range(self.log.first_index, self.log.last_index + 1))

    def reopen(self) -> None:
        self.log.close()
        self.log = SegmentedLog.open(self.directory, segment_size=self.segment_size)
        assert self.log.tail_damage is None


@pytest.fixture
def store(logdir: pathlib.Path):
    kv_log = KvLog(logdir)
    yield kv_log
    kv_log.log.close()


def test_default_key_function() -> None:
    assert msgpack_kv_key(encode_put("a", b"1")) == (msgpack.packb("a"), False)
    assert msgpack_kv_key(encode_delete("a")) == (msgpack.packb("a"), True)
    assert msgpack_kv_key(encode_put(b"a", b"1"))[0] != msgpack_kv_key(encode_put("a", b"1"))[0]
    assert msgpack_kv_key(b"\xc1") is OPAQUE  # the batch mark without a batch
    assert msgpack_kv_key(b"\xc1" + msgpack.packb(["put"])) is OPAQUE
    batch = b"\xc1" + msgpack.packb([encode_put("a", b"1"), b"other", encode_delete(2)])
    assert msgpack_kv_key(batch) == [(msgpack.packb("a"), False), (msgpack.packb(2), True)]
    for other in (
        b"",
        msgpack.packb({"op": "put"}),
        msgpack.packb(["put", "a"]),  # no value
        msgpack.packb(["delete", "a", b"x"]),
        msgpack.packb(["get", "a"]),
        msgpack.packb(["put", ["a"], b"x"]),  # unhashable key
        msgpack.packb(["put", "a", b"1"]) + b"trailing",
    ):
        assert msgpack_kv_key(other) is None, other


def test_keeps_the_newest_entry_per_key(store: KvLog) -> None:
    for round_ in range(12):
        for key in ("alpha", "beta", "gamma", "delta"):
            store.put(key, b"%s-%d" % (key.encode(), round_))
    store.delete("beta")
    store.put("epsilon", b"e")
    before = replay(store.entries())
    sealed = [s for s in store.log.segments() if s.sealed]
    assert len(sealed) >= 3

    result = kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=None)

    assert result.segments_rewritten >= 2 and result.entries_removed > 10
    assert result.bytes_freed > 0 and result.tombstones_purged == 0
    after = store.entries()
    assert replay(after) == before
    assert len(after) == len(store.appended) - result.entries_removed
    # Every surviving entry is exactly what was appended at its index.
    assert all(store.appended[e.index - 1] == e for e in after)
    # The newest entry of every key survives; holes read as None.
    present = {e.index for e in after}
    for entry in store.appended:
        if store.log.get(entry.index) is None:
            assert entry.index not in present
    assert store.log.segments()[0].kv_compacted
    # Segment ranges stay exact: each one still ends where it ended.
    for old, new in zip(sealed, store.log.segments(), strict=False):
        assert (old.first_index, old.last_index) == (new.first_index, new.last_index)
    assert store.log.last_index == len(store.appended) and store.log.last_term == 1
    store.reopen()
    assert store.entries() == after
    again = kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=None)
    assert again.segments_rewritten == 0  # nothing new to remove: nothing rewritten


def test_tombstones_are_purged_by_age_only(store: KvLog) -> None:
    for n in range(30):
        store.put(f"k{n}", b"v" * 20, timestamp=NOW - 10 * DAY)
    for n in range(0, 30, 2):  # old deletes of the even keys ...
        store.delete(f"k{n}", timestamp=NOW - 8 * DAY)
    store.delete("k1", timestamp=NOW - DAY)  # ... and one recent delete
    for n in range(40):  # newer traffic so that the deletes land in sealed segments
        store.put("filler", b"%d" % n)
    before = replay(store.entries())

    kept = kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=None)
    assert kept.tombstones_purged == 0
    deletes = [e for e in store.entries() if msgpack_kv_key(e.payload)[1]]
    assert len(deletes) == 16

    purged = kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=7 * DAY)
    assert purged.tombstones_purged >= 10
    survivors = store.entries()
    remaining = [e for e in survivors if msgpack_kv_key(e.payload)[1]]
    assert len(remaining) == 16 - purged.tombstones_purged
    assert "k1" in [msgpack.unpackb(e.payload)[1] for e in remaining]  # recent: kept
    # An old tombstone survives only as a segment's last entry or behind a kept older value.
    segment_ends = {s.last_index for s in store.log.segments()}
    for tombstone in remaining:
        key = msgpack_kv_key(tombstone.payload)[0]
        older = [e for e in survivors if e.index < tombstone.index]
        assert (
            tombstone.timestamp > NOW - 7 * DAY
            or tombstone.index in segment_ends
            or any(msgpack_kv_key(e.payload)[0] == key for e in older)
        )
    assert replay(store.entries()) == before
    store.reopen()
    assert replay(store.entries()) == before


def test_a_tombstone_stays_while_an_older_value_is_pinned(store: KvLog) -> None:
    """A dead entry kept as its segment's last entry keeps its key's tombstone alive."""
    store.put("pad", b"x" * 60)
    while len(store.log.segments()) == 1:
        store.put("pad", b"x" * 60)
    # The entry just before the roll is the first segment's last (pinning) entry.
    last_of_first = store.log.segments()[0].last_index
    pinned = store.appended[last_of_first - 1]
    key = msgpack.unpackb(pinned.payload)[1]
    store.delete(key, timestamp=0)  # ancient tombstone of the pinned key
    for n in range(40):
        store.put(f"later{n}", b"y" * 40)
    before = replay(store.entries())
    kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=1)
    assert store.log.get(last_of_first) == pinned  # kept: it pins the range
    assert key not in replay(store.entries())  # so its tombstone stayed too
    assert replay(store.entries()) == before


def batch_of(*payloads: bytes) -> bytes:
    """Several commands in one entry, as the Raft leader batches them."""
    return b"\xc1" + msgpack.packb(list(payloads))


def test_batched_entries_are_compacted_as_a_whole(store: KvLog) -> None:
    """An entry carrying several commands goes only when every one of them is dead; a key
    with a dead command in a kept batch keeps its tombstone (else the value comes back)."""
    store.add(batch_of(encode_put("a", b"1"), encode_put("b", b"1")), timestamp=0)  # a dies
    store.add(batch_of(encode_put("c", b"1"), encode_put("d", b"1")), timestamp=0)  # all die
    store.put("a", b"2", timestamp=0)
    store.put("c", b"2", timestamp=0)
    store.put("d", b"2", timestamp=0)
    store.delete("a", timestamp=0)  # an old tombstone, but the first batch still holds a=1
    store.delete("c", timestamp=0)  # an old tombstone whose older values all go
    for n in range(60):
        store.put(f"pad{n % 3}", b"x" * 30)
    before = replay(store.entries())
    kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=1)
    kept = {e.index for e in store.entries()}
    assert 1 in kept and 2 not in kept  # the batch with a live command stays
    assert 6 in kept and 7 not in kept  # a's tombstone is pinned by the batch; c's is purged
    assert replay(store.entries()) == before
    store.reopen()
    assert replay(store.entries()) == before


def test_an_unreadable_entry_keeps_later_tombstones(store: KvLog) -> None:
    store.put("k", b"old", timestamp=0)
    store.add(b"\xc1 a batch nobody can read", timestamp=0)  # might hold put k
    store.delete("k", timestamp=0)
    for n in range(60):
        store.put(f"pad{n % 3}", b"x" * 30)
    result = kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=1)
    kept = {e.index for e in store.entries()}
    assert {2, 3} <= kept and 1 not in kept  # put k superseded; the tombstone stays
    assert result.tombstones_purged == 0


def test_other_entries_are_never_removed(store: KvLog) -> None:
    for n in range(60):
        store.put("same", b"%d" % n)
        if n % 10 == 0:
            store.add(b"\xc1 not msgpack")
            store.add(encode_put("same", b"config"), kind=EntryKind.CONFIGURATION)
            store.add(encode_put("same", b"noop"), kind=EntryKind.NOOP)
    kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=0)
    survivors = store.entries()
    assert sum(e.payload == b"\xc1 not msgpack" for e in survivors) == 6
    assert sum(e.kind == EntryKind.CONFIGURATION for e in survivors) == 6
    assert sum(e.kind == EntryKind.NOOP for e in survivors) == 6


def test_only_entries_up_to_through_index_count(store: KvLog) -> None:
    for n in range(40):
        store.put(f"k{n % 4}", b"old%d" % n)
    through = store.log.segments()[0].last_index + 1
    for n in range(20):
        store.put(f"k{n % 4}", b"new%d" % n)  # newer values beyond through_index
    result = kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=0, through_index=through)
    # Only the first segment ends at or before through_index; in it, only entries superseded
    # at or before through_index may go.
    assert result.segments_rewritten == 1
    first = store.log.segments()[0]
    kept = [store.log.get(i) for i in range(1, first.last_index + 1)]
    kept_indexes = [e.index for e in kept if e is not None]
    for index in range(1, first.last_index):
        key = store.appended[index - 1].payload
        superseded = any(
            msgpack_kv_key(store.appended[later - 1].payload)[0] == msgpack_kv_key(key)[0]
            for later in range(index + 1, through + 1)
        )
        assert (index in kept_indexes) == (not superseded), index
    assert all(s.last_index >= s.first_index for s in store.log.segments())


def test_appends_continue_during_the_rewrite(store: KvLog) -> None:
    for n in range(200):
        store.put(f"k{n % 10}", b"v%d" % n)
    work = kv.plan(store.log)
    done = threading.Event()
    outcome: list[list[kv.Rewritten]] = []

    def rewrite_in_background() -> None:
        outcome.append(kv.rewrite(work, now_ms=NOW, purge_deletes_older_than_ms=0))
        done.set()

    thread = threading.Thread(target=rewrite_in_background)
    thread.start()
    appended_during = 0
    while not done.is_set() or appended_during < 50:
        store.put(f"k{appended_during % 13}", b"during%d" % appended_during)
        appended_during += 1
    thread.join()
    result = kv.install(store.log, outcome[0])
    assert result.segments_rewritten == len(work.targets) > 3
    after = store.entries()
    assert replay(after) == replay(store.appended)
    assert all(store.appended[e.index - 1] == e for e in after)
    assert after[-1].index == len(store.appended)
    store.reopen()
    assert store.entries() == after
    store.put("k1", b"afterwards")
    assert replay(store.entries())["k1"] == b"afterwards"


def test_a_target_changed_before_install_stops_the_install(store: KvLog) -> None:
    for n in range(150):
        store.put(f"k{n % 5}", b"v%d" % n)
    work = kv.plan(store.log)
    rewritten = kv.rewrite(work, now_ms=NOW, purge_deletes_older_than_ms=0)
    assert len(rewritten) >= 3
    # The second target goes away (a snapshot covered it) before the install.
    store.log.compact_through(work.targets[1].first_index + 1)
    result = kv.install(store.log, rewritten)
    assert result.segments_rewritten == 0  # the first target went too: refused, rest discarded
    assert not list(store.directory.glob("*.kv.tmp"))
    # Nothing was removed: every entry after the new base is still there.
    assert store.entries() == store.appended[store.log.first_index - 1 :]
    store.reopen()
    assert store.entries() == store.appended[store.log.first_index - 1 :]


def test_truncating_into_a_hole_is_refused(store: KvLog) -> None:
    for n in range(80):
        store.put("k", b"%d" % n)
    kv.compact(store.log, now_ms=NOW, purge_deletes_older_than_ms=0)
    hole = next(i for i in range(1, store.log.last_index) if store.log.get(i) is None)
    with pytest.raises(ValueError, match="removed by kv compaction"):
        store.log.truncate_after(hole)


def test_leftover_rewrite_is_removed_on_open(store: KvLog) -> None:
    for n in range(100):
        store.put(f"k{n % 3}", b"v%d" % n)
    rewritten = kv.rewrite(kv.plan(store.log), now_ms=NOW, purge_deletes_older_than_ms=0)
    assert rewritten and rewritten[0].tmp_path.exists()
    before = store.entries()
    store.reopen()  # as after a crash between rewrite and install
    assert not list(store.directory.glob("*.kv.tmp"))
    assert store.entries() == before


def test_progress_is_reported(store: KvLog) -> None:
    for n in range(100):
        store.put(f"k{n % 3}", b"v%d" % n)
    seen: list[tuple[int, int]] = []
    kv.compact(
        store.log,
        now_ms=NOW,
        purge_deletes_older_than_ms=0,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen and all(done <= total for done, total in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


operation = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 7), st.integers(1, 12)),
    st.tuples(st.just("delete"), st.integers(0, 7), st.integers(0, 1)),
    st.tuples(st.just("batch"), st.integers(0, 7), st.integers(2, 4)),
    st.tuples(st.just("compact"), st.integers(50, 100), st.integers(0, 1)),
    st.tuples(st.just("truncate"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("reopen"), st.just(0), st.just(0)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=60))
def test_compaction_never_changes_what_a_replay_yields(ops: list[tuple[str, int, int]]) -> None:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="wal-kv-"))
    store = KvLog(directory / "log", segment_size=250)
    committed = 0  # kv compaction only runs up to here; truncation never goes below it
    try:
        for op, a, b in ops:
            if op == "put":  # a burst of b puts, cycling over the keys from k<a>
                for n in range(b):
                    store.put(f"k{(a + n) % 8}", b"v" * (n * 3), timestamp=store.log.last_index)
            elif op == "delete":
                store.delete(f"k{a}", timestamp=0 if b else NOW)
            elif op == "batch":  # b commands in one entry, every other one a delete
                commands = [
                    encode_delete(f"k{(a + n) % 8}") if n % 2 else encode_put(f"k{a + n}", b"b")
                    for n in range(b)
                ]
                store.add(batch_of(*commands), timestamp=0)
            elif op == "compact":
                committed = max(committed, store.log.last_index * a // 100)
                kv.compact(
                    store.log,
                    now_ms=NOW,
                    purge_deletes_older_than_ms=DAY if b else None,
                    through_index=committed,
                )
            elif op == "truncate":
                index = max(committed, store.log.last_index - a)
                store.log.truncate_after(index)
                del store.appended[index:]
            else:
                store.reopen()
            survivors = store.entries()
            assert replay(survivors) == replay(store.appended)
            assert all(store.appended[e.index - 1] == e for e in survivors)
            assert store.log.last_index == len(store.appended)
            if store.appended:
                assert store.log.get(store.log.last_index) == store.appended[-1]
                assert store.log.last_term == 1
    finally:
        store.log.close()
        shutil.rmtree(directory, ignore_errors=True)
