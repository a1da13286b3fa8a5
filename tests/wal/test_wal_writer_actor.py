"""The log-writer actor on a real ActorSystem: acknowledgements follow the durability policy,
queued appends are coalesced, requests keep inbox order, IO failures escalate."""

from __future__ import annotations

import errno
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from structlog.testing import capture_logs
from wal_helpers import make_entries

from actors import (
    UNHANDLED,
    Actor,
    ActorNotFound,
    ActorRef,
    ActorSystem,
    OneForOne,
    Props,
)
from wal import EntryKind, HardState, HardStateStore, SegmentedLog
from wal.kv_compaction import encode_put
from wal.writer_actor import LogWriter, WalWriteFailed, WriterConfig, escalate_io_failures
from wal.writer_messages import (
    AppendBatch,
    CompactKeys,
    CompactThrough,
    HardStateSaved,
    InstallSnapshotReset,
    KeysCompacted,
    LogCompacted,
    LogReset,
    Persisted,
    SaveHardState,
    StatusRequest,
)


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    sys_ = ActorSystem("wal-test")
    yield sys_
    sys_.shutdown()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


class Events:
    """One ordered record, shared by the log (durability) and the subscriber (acks)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.slow_first_write = 0.0

    def add(self, kind: str, value: int) -> None:
        with self.lock:
            self.items.append((kind, value))

    def of(self, kind: str) -> list[int]:
        with self.lock:
            return [value for k, value in self.items if k == kind]

    def acks_follow_durability(self, only: int | None = None) -> None:
        """Every ack (or the ack of `only`) is preceded by a durability report covering it."""
        durable = 0
        with self.lock:
            for kind, value in self.items:
                if kind == "durable":
                    durable = max(durable, value)
                elif kind == "ack" and only in (None, value):
                    assert value <= durable, f"ack {value} before it was durable ({durable})"


def recording_log(events: Events) -> Callable[..., SegmentedLog]:
    class RecordingLog(SegmentedLog):
        def append(self, entries, *, sync=True):  # type: ignore[no-untyped-def]
            if events.slow_first_write:
                time.sleep(events.slow_first_write)  # let later appends queue up
                events.slow_first_write = 0.0
            appended = super().append(entries, sync=sync)
            events.add("write", appended.last_index)
            events.add("durable", self.durable_index)
            return appended

        def sync(self) -> int:
            durable = super().sync()
            events.add("sync", durable)
            events.add("durable", durable)
            return durable

    return RecordingLog.open


class Subscriber(Actor):
    def __init__(self, events: Events) -> None:
        self.events = events

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if isinstance(message, Persisted):
            self.events.add("ack", message.up_to_index)
            self.events.add("ack_term", message.term)
            return None
        return UNHANDLED


def start_writer(
    system: ActorSystem,
    directory: pathlib.Path,
    policy: str,
    events: Events | None = None,
    **options: Any,
) -> ActorRef:
    subscriber = None
    open_log = SegmentedLog.open
    if events is not None:
        subscriber = system.spawn(Props(Subscriber, events), "subscriber")
        open_log = recording_log(events)
    config = WriterConfig(
        directory=str(directory), policy=policy, segment_size=64 << 10, open_log=open_log, **options
    )
    return system.spawn(Props(LogWriter, config, subscriber=subscriber), "writer")


def test_always_acknowledges_each_ask_after_its_fsync(
    system: ActorSystem, logdir: pathlib.Path
) -> None:
    events = Events()
    writer = start_writer(system, logdir, "always", events)
    for start in range(1, 31, 3):
        persisted = writer.ask(AppendBatch(make_entries(start, 3, term=2), None)).result(5)
        assert persisted == Persisted(start + 2, 2)
    wait_until(lambda: events.of("ack")[-1:] == [30])
    events.acks_follow_durability()
    assert events.of("sync")[-1] == 30
    status = writer.ask(StatusRequest()).result(5)
    assert (status.first_index, status.last_index, status.durable_index) == (1, 30, 30)
    assert (status.segments, status.policy, status.acknowledged_index) == (1, "always", 30)
    assert status.bytes > 30 * 20


def test_queued_appends_are_coalesced_into_one_write_and_fsync(
    system: ActorSystem, logdir: pathlib.Path
) -> None:
    events = Events()
    events.slow_first_write = 0.2
    writer = start_writer(system, logdir, "always", events)
    for start in range(1, 101):  # 100 tells; all but the first queue behind the slow write
        writer.tell(AppendBatch(make_entries(start, 1), None))
    wait_until(lambda: events.of("ack")[-1:] == [100])
    events.acks_follow_durability()
    assert len(events.of("write")) <= 3 and len(events.of("sync")) <= 3
    assert events.of("ack") == sorted(set(events.of("ack")))  # cumulative, increasing


def test_group_commit_fsyncs_at_most_every_interval_and_acks_after_it(
    system: ActorSystem, logdir: pathlib.Path
) -> None:
    events = Events()
    writer = start_writer(system, logdir, "group", events, group_interval_ms=40.0)
    started = time.monotonic()
    index = 1
    while time.monotonic() - started < 0.4:
        writer.tell(AppendBatch(make_entries(index, 2), None))
        index += 2
        time.sleep(0.002)
    last = index - 1
    wait_until(lambda: events.of("ack")[-1:] == [last])
    elapsed_ms = (time.monotonic() - started) * 1000
    events.acks_follow_durability()
    syncs = len(events.of("sync"))
    assert 2 <= syncs <= elapsed_ms / 40 + 2, (syncs, elapsed_ms)
    assert len(events.of("write")) > syncs  # several writes share one fsync


def test_never_acks_after_the_write_but_configuration_after_an_fsync(
    system: ActorSystem, logdir: pathlib.Path
) -> None:
    events = Events()
    writer = start_writer(system, logdir, "never", events)
    writer.ask(AppendBatch(make_entries(1, 5), None)).result(5)
    assert events.of("sync") == [] and max(events.of("durable")) == 0  # acked, not synced
    config = make_entries(6, 1, kind=EntryKind.CONFIGURATION)
    assert writer.ask(AppendBatch(config, None)).result(5) == Persisted(6, 1)
    wait_until(lambda: events.of("ack")[-1:] == [6])
    events.acks_follow_durability(only=6)  # the configuration ack came after durability
    assert max(events.of("durable")) == 6


def test_acks_go_to_the_sender_without_a_subscriber(
    system: ActorSystem, logdir: pathlib.Path
) -> None:
    got: list[Persisted] = []

    class Role(Actor):
        def __init__(self, writer: ActorRef) -> None:
            self.writer = writer

        def receive(self, message: Any, sender: ActorRef | None) -> Any:
            if message == "go":
                self.writer.tell(AppendBatch(make_entries(1, 2, term=3), None))
                self.writer.tell(AppendBatch(make_entries(3, 2, term=3), None))
                return None
            if isinstance(message, Persisted):
                got.append(message)
                return None
            return UNHANDLED

    writer = start_writer(system, logdir, "always")
    role = system.spawn(Props(Role, writer), "role")
    role.tell("go")
    wait_until(lambda: got and got[-1] == Persisted(4, 3))


def test_hard_state_is_durable_before_the_reply_and_keeps_inbox_order(
    system: ActorSystem, logdir: pathlib.Path
) -> None:
    writer = start_writer(system, logdir, "never")
    writer.tell(AppendBatch(make_entries(1, 4), None))
    saved = writer.ask(SaveHardState(5, "node-b")).result(5)
    assert saved == HardStateSaved(5, "node-b")
    assert HardStateStore(logdir / "hardstate").load() == HardState(5, "node-b")
    status = writer.ask(StatusRequest()).result(5)
    assert status.last_index == 4  # the append queued before was written first
    assert (status.term, status.voted_for) == (5, "node-b")
    with pytest.raises(ValueError, match="already voted"):
        writer.ask(SaveHardState(5, "node-c")).result(5)
    assert writer.ask(SaveHardState(6, None)).result(5) == HardStateSaved(6, None)


def test_truncation_compaction_and_reset(system: ActorSystem, logdir: pathlib.Path) -> None:
    writer = start_writer(system, logdir, "always")
    writer.ask(AppendBatch(make_entries(1, 10, term=1), None)).result(5)
    replaced = writer.ask(AppendBatch(make_entries(6, 3, term=2), 5)).result(5)
    assert replaced == Persisted(8, 2)
    assert writer.ask(CompactThrough(3)).result(5) == LogCompacted(4)
    with pytest.raises(ValueError, match="the log ends at 8"):
        writer.ask(CompactThrough(9)).result(5)
    assert writer.ask(InstallSnapshotReset(100, 4)).result(5) == LogReset(100, 4)
    assert writer.ask(AppendBatch(make_entries(101, 1, term=4), None)).result(5) == Persisted(
        101, 4
    )
    system.stop(writer)
    with SegmentedLog.open(logdir) as log:
        assert (log.first_index, log.last_index, log.term_at(100)) == (101, 101, 4)


def test_truncating_buffered_entries_before_they_are_written(
    system: ActorSystem, logdir: pathlib.Path
) -> None:
    events = Events()
    events.slow_first_write = 0.2
    writer = start_writer(system, logdir, "always", events)
    writer.tell(AppendBatch(make_entries(1, 2, term=1), None))  # written slowly
    writer.tell(AppendBatch(make_entries(3, 4, term=1), None))  # buffered meanwhile ...
    writer.tell(AppendBatch(make_entries(5, 2, term=2), 4))  # ... and partly replaced
    wait_until(lambda: events.of("ack")[-1:] == [6])
    system.stop(writer)
    with SegmentedLog.open(logdir) as log:
        terms = [(e.index, e.term) for e in log.read_range(1, 10)]
    assert terms == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)]


def test_a_bad_batch_is_refused_and_the_writer_goes_on(
    system: ActorSystem, logdir: pathlib.Path
) -> None:
    writer = start_writer(system, logdir, "always")
    writer.ask(AppendBatch(make_entries(1, 3, term=2), None)).result(5)
    with capture_logs() as logs:
        with pytest.raises(ValueError, match=r"does not continue the log \(expected 4\)"):
            writer.ask(AppendBatch(make_entries(6, 1, term=2), None)).result(5)
        with pytest.raises(ValueError, match="term 1 below 2"):
            writer.ask(AppendBatch(make_entries(4, 1, term=1), None)).result(5)
        with pytest.raises(ValueError, match="below the compaction base"):
            writer.ask(AppendBatch(make_entries(1, 1, term=2), -1)).result(5)
    assert [e["event"] for e in logs].count("wal.writer_refused") == 3
    assert writer.ask(AppendBatch(make_entries(4, 1, term=2), None)).result(5) == Persisted(4, 2)


def test_kv_compaction_runs_while_appends_continue(
    system: ActorSystem, logdir: pathlib.Path
) -> None:
    config = WriterConfig(
        directory=str(logdir), policy="never", segment_size=2048, max_batch_bytes=512
    )
    writer = system.spawn(Props(LogWriter, config), "writer")
    index = 1
    for n in range(400):
        entry = make_entries(index, 1)[0]
        payload = encode_put(f"k{n % 7}", b"v%d" % n)
        writer.tell(AppendBatch([type(entry)(index, 1, 0, n, payload)], None))
        index += 1
    writer.ask(StatusRequest()).result(5)
    future = writer.ask(CompactKeys(index - 1, None, 0), timeout=10)
    for n in range(100):  # appends queued while the rewrite runs in the background
        payload = encode_put(f"k{n % 5}", b"late%d" % n)
        entry = make_entries(index, 1)[0]
        writer.tell(AppendBatch([type(entry)(index, 1, 0, n, payload)], None))
        index += 1
    result = future.result(10)
    assert isinstance(result, KeysCompacted) and result.entries_removed > 200
    status = writer.ask(StatusRequest()).result(5)
    assert status.last_index == index - 1
    system.stop(writer)
    with SegmentedLog.open(logdir, segment_size=2048) as log:
        state = {}
        for entry in log.read_range(1, log.last_index + 1):
            _op, key, value = msgpack.unpackb(entry.payload)
            state[key] = value
    assert state == {
        **{f"k{k}": b"v%d" % max(n for n in range(400) if n % 7 == k) for k in range(7)},
        **{f"k{k}": b"late%d" % max(n for n in range(100) if n % 5 == k) for k in range(5)},
    }


class Node(Actor):
    """Stands for the Raft node: the writer's parent, escalating IO failures."""

    def __init__(self, config: WriterConfig) -> None:
        self.config = config

    def supervisor_strategy(self) -> OneForOne:
        return OneForOne(decider=escalate_io_failures)

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if message == "spawn":
            return self.ctx.spawn(Props(LogWriter, self.config), "writer")
        return UNHANDLED


def test_a_failed_fsync_is_loud_and_escalates(
    system: ActorSystem, logdir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = WriterConfig(directory=str(logdir), policy="always", segment_size=64 << 10)
    node = system.spawn(Props(Node, config), "node")
    writer = node.ask("spawn").result(5)
    assert writer.ask(AppendBatch(make_entries(1, 2), None)).result(5) == Persisted(2, 1)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr("wal.log.datasync", failing_fsync)
    with capture_logs() as logs:
        future = writer.ask(AppendBatch(make_entries(3, 2), None))
        with pytest.raises(WalWriteFailed, match="fsync failed"):
            future.result(5)
        wait_until(lambda: any(e.get("directive") == "escalate" for e in logs))
    failure = next(e for e in logs if e["event"] == "wal.writer_io_failed")
    assert failure["operation"] == "fsync" and failure["errno"] == errno.EIO
    assert failure["errno_name"] == "EIO" and failure["path"] == str(logdir)
    wait_until(lambda: not system.is_alive(writer))
    with pytest.raises(ActorNotFound):
        writer.ask(StatusRequest()).result(5)
