"""Helpers for the follow tests: source logs of recorder commands, servers, followers."""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack

from consensus.configuration import Membership
from consensus.shell.batching import encode_commands
from consensus.shell.node_storage import SharedLog
from consensus.shell.sessions_shell import with_sessions
from consensus.snapshots import encode_header
from follow.follower import Follower
from follow.server import LogServer
from follow.source import WalSource
from follow.window import Backoff, Window
from tests.cluster.recorder import Recorder
from wal.entry import Entry, EntryKind
from wal.log import SegmentedLog
from wal.snapshot import SnapshotStore


def command(n: int) -> bytes:
    return msgpack.packb(["put", n])


def build_entries(start: int, count: int, term: int = 1) -> list[Entry]:
    """Entries of one or three commands (batch entries, as a leader writes them), with a
    no-op now and then, as a Raft log holds."""
    out = []
    for index in range(start, start + count):
        if index % 17 == 0:
            out.append(Entry(index, term, EntryKind.NOOP, 10_000 + index, b""))
            continue
        commands = [command(index)] if index % 2 else [command(index * 10 + k) for k in range(3)]
        out.append(Entry(index, term, EntryKind.COMMAND, 10_000 + index, encode_commands(commands)))
    return out


def open_shared(directory: pathlib.Path, segment_size: int = 1 << 20) -> SharedLog:
    directory.mkdir(parents=True, exist_ok=True)
    return SharedLog(lambda: SegmentedLog.open(directory, segment_size=segment_size))


def replay(entries: list[Entry]) -> Recorder:
    """What a Raft state machine actor ends with after applying `entries`."""
    from follow.apply import apply_entry

    machine = Recorder()
    replica = with_sessions(machine)
    for entry in entries:
        apply_entry(replica, entry)
    return machine


def write_snapshot(directory: pathlib.Path, index: int, term: int, machine: Recorder) -> None:
    """A snapshot as the Raft shell stores one: the core's header, then the machine's bytes."""
    header = encode_header(index, term, 10_000 + index, Membership(("n1",)))
    SnapshotStore(directory).write(index, term, [header, machine.snapshot()])


class Source:
    """A WAL served over HTTP as a node would (everything in it counted committed)."""

    def __init__(self, directory: pathlib.Path, source_class: type[WalSource] = WalSource) -> None:
        self.directory = directory
        self.shared = open_shared(directory / "log")
        self.source = source_class(lambda last, _term: last, directory / "snapshots", self.shared)
        self.server = LogServer("127.0.0.1:0", self.source)
        self.uri = f"http://{self.server.address}"

    def append(self, entries: list[Entry]) -> None:
        self.shared.append(entries, sync=False)

    def entries(self) -> list[Entry]:
        with self.shared.lock:
            return list(self.shared.read_range(self.shared.first_index, self.shared.last_index + 1))

    def close(self) -> None:
        self.server.close()
        self.shared.close()


def make_follower(uri: str, directory: pathlib.Path, **kwargs: Any) -> Follower:
    kwargs.setdefault("window", Window(initial=8, maximum=256, step=8))
    kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05))
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("wait_ms", 50)
    return Follower(uri, directory, Recorder(), **kwargs)


class Running:
    """A follower's loop on a thread."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower
        self.stop = threading.Event()
        self.thread = threading.Thread(target=follower.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.follower.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    assert predicate(), f"not reached within {timeout}s"
