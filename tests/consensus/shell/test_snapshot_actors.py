"""The shell's snapshot pieces as actors and with a real core: the state machine actor
serialising itself after what it applied and restoring (by message and at start-up); the
snapshot-IO actor saving, reading and receiving chunks; SnapshotShell carrying out a Ready's
snapshot fields in order and feeding the answers back to the core."""

from __future__ import annotations

import pathlib
import queue
import random
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import structlog

from actors import Actor, ActorRef, ActorSystem, Props
from consensus.config import RaftConfig
from consensus.configuration import Membership
from consensus.log import MemoryLog
from consensus.messages import ClientCommand, Entry, EntryKind
from consensus.node import RaftNode
from consensus.ready import HardState, Ready
from consensus.shell.batching import encode_commands
from consensus.shell.protocol import Applied, Apply
from consensus.shell.snapshot_files import SnapshotFiles
from consensus.shell.snapshot_io import (
    ChunkLoaded,
    ChunkStored,
    ReadChunk,
    RestoreSnapshot,
    SaveSnapshot,
    SnapshotIO,
    SnapshotSaved,
    SnapshotState,
    TakeSnapshot,
    WriteChunk,
)
from consensus.shell.snapshot_shell import SnapshotShell
from consensus.shell.state_machine import QueryJob, StateMachineActor
from consensus.snapshots import ChunkRead, ChunkWrite, SnapshotInfo, SnapshotInstall
from tests.cluster.recorder import Recorder
from wal.writer_messages import CompactThrough, InstallSnapshotReset, LogCompacted, LogReset

LATE = 10_000
LOG = structlog.get_logger("test")


class Probe(Actor):
    def __init__(self, seen: queue.Queue[Any]) -> None:
        self.seen = seen

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        self.seen.put(message)


class Answer:
    """A reply handle for a QueryJob."""

    def __init__(self) -> None:
        self.answers: queue.Queue[Any] = queue.Queue()

    def success(self, value: Any) -> None:
        self.answers.put(value)


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    with ActorSystem("snapshot-test") as s:
        yield s


def probe(system: ActorSystem, name: str) -> tuple[ActorRef, queue.Queue[Any]]:
    seen: queue.Queue[Any] = queue.Queue()
    return system.spawn(Props(Probe, seen), name), seen


def command_entries(start: int, *names: str) -> list[Entry]:
    return [
        Entry(start + i, 1, EntryKind.COMMAND, 500 + i, encode_commands([name.encode()]))
        for i, name in enumerate(names)
    ]


def history(machine: ActorRef) -> list[bytes]:
    reply = Answer()
    machine.tell(QueryJob("q", msgpack.packb(["all"]), 0, reply))
    return reply.answers.get(timeout=5).result[0]  # type: ignore[no-any-return]


def test_the_state_machine_snapshots_after_what_it_applied_and_restores(
    system: ActorSystem, tmp_path: pathlib.Path
) -> None:
    files = SnapshotFiles(tmp_path / "snaps")
    report, reports = probe(system, "report")
    machine = system.spawn(
        Props(StateMachineActor, Recorder(), report, 0, None, files), "state-machine"
    )
    machine.tell(Apply(command_entries(1, "a", "b", "c")))
    machine.tell(TakeSnapshot())
    assert reports.get(timeout=5) == Applied(3, {3: [3], 1: [1], 2: [2]})
    state = reports.get(timeout=5)
    assert isinstance(state, SnapshotState) and state.index == 3
    members = Membership(("n1",))
    info = files.save(SnapshotInfo(3, 1, members, timestamp=502), state.data)

    # Restored at start-up: the next entry applied is the one after the snapshot.
    restarted = system.spawn(
        Props(StateMachineActor, Recorder(), report, 3, None, files, info), "restarted"
    )
    assert history(restarted) == [b"a", b"b", b"c"]
    restarted.tell(Apply(command_entries(3, "c", "d")))  # 3 again is skipped
    assert reports.get(timeout=5).index == 4
    assert history(restarted) == [b"a", b"b", b"c", b"d"]

    # Restored by message (an installed snapshot): the state goes back to the snapshot's.
    restarted.tell(RestoreSnapshot(info))
    assert history(restarted) == [b"a", b"b", b"c"]


def test_the_io_actor_saves_reads_and_receives(system: ActorSystem, tmp_path: pathlib.Path) -> None:
    report, reports = probe(system, "report")
    leader_files = SnapshotFiles(tmp_path / "leader")
    leader = system.spawn(Props(SnapshotIO, leader_files, report), "leader-io")
    members = Membership(("n1", "n2"))
    state = bytes(range(256)) * 64
    leader.tell(SaveSnapshot(SnapshotInfo(7, 2, members, timestamp=9), state))
    saved = reports.get(timeout=5)
    assert isinstance(saved, SnapshotSaved) and saved.info is not None
    info = saved.info
    assert (info.index, info.term, info.timestamp) == (7, 2, 9) and info.size > len(state)

    follower = system.spawn(Props(SnapshotIO, SnapshotFiles(tmp_path / "f"), report), "f-io")
    offset, complete, chunk = 0, False, 5000
    while not complete:
        read = ChunkRead("n2", 7, 2, offset, chunk)
        leader.tell(ReadChunk(read))
        loaded = reports.get(timeout=5)
        assert isinstance(loaded, ChunkLoaded) and loaded.read == read and loaded.data
        done = offset + len(loaded.data) == info.size
        write = ChunkWrite(
            "n1", 7, 2, info.size, info.crc, 9, members, offset, loaded.data, done, 1
        )
        follower.tell(WriteChunk(write))
        stored = reports.get(timeout=5)
        assert isinstance(stored, ChunkStored) and stored.write == write
        if not done:
            # A local snapshot waits while a transfer is being received.
            follower.tell(SaveSnapshot(SnapshotInfo(5, 2, members), b"mine"))
            refused = reports.get(timeout=5)
            assert refused.info is None and "being received" in refused.error
        offset, complete = stored.offset, stored.complete
    assert offset == info.size
    assert SnapshotFiles(tmp_path / "f").read_body(7, 2) == state
    leader.tell(ReadChunk(ChunkRead("n2", 6, 2, 0, 10)))  # no such snapshot
    assert reports.get(timeout=5).data is None


def leader_core(threshold: int) -> tuple[RaftNode, MemoryLog]:
    config = RaftConfig(
        "n1", ("n1",), snapshot_threshold_entries=threshold, snapshot_trailing_entries=0
    )
    log = MemoryLog()
    core = RaftNode(config, log, HardState(), random.Random(1), 0)
    drive(core, log, core.tick(LATE))
    assert core.is_leader
    return core, log


def drive(core: RaftNode, log: MemoryLog, ready: Ready) -> Ready:
    """Write and apply what the Ready hands out (as the log writer and state machine would);
    returns the Ready that applying the last entries produced."""
    while ready.entries or ready.committed:
        if ready.entries:
            log.append(ready.entries)
            last = ready.entries[-1]
            ready = core.persisted(last.index, last.term, LATE)
            continue
        ready = core.applied(ready.committed[-1].index, {}, LATE)
    return ready


def test_snapshot_shell_takes_a_snapshot_reports_it_and_compacts(
    system: ActorSystem, tmp_path: pathlib.Path
) -> None:
    io, io_seen = probe(system, "io")
    machine, machine_seen = probe(system, "machine")
    writer, writer_seen = probe(system, "writer")
    supervisor, _ = probe(system, "supervisor")
    shell = SnapshotShell(io, machine, writer, supervisor)
    core, log = leader_core(threshold=3)
    ready = Ready()
    for i in range(2):
        ready = drive(core, log, core.propose([ClientCommand(f"c{i}", b"x")], LATE))
    assert ready.snapshot_wanted and core.applied_index == 3
    shell.after_apply(ready)
    assert isinstance(machine_seen.get(timeout=5), TakeSnapshot)

    assert shell.on_input(core, SnapshotState(3, b"state"), LATE, LOG) is None
    save = io_seen.get(timeout=5)
    assert isinstance(save, SaveSnapshot) and save.point.index == 3 and save.data == b"state"
    info = SnapshotFiles(tmp_path / "snaps").save(save.point, save.data)
    ready = shell.on_input(core, SnapshotSaved(info), LATE, LOG)
    assert ready is not None and ready.compact_through == 3 and core.snapshot == info
    assert not shell.taking and shell.taken == 1
    shell.after_apply(ready)
    assert writer_seen.get(timeout=5) == CompactThrough(3)
    assert shell.on_input(core, LogCompacted(4), LATE, LOG) is None
    assert machine_seen.empty()

    # Asked again while one is in progress: one at a time, the second right after the first.
    shell.after_apply(Ready(snapshot_wanted=True))
    assert isinstance(machine_seen.get(timeout=5), TakeSnapshot)
    shell.after_apply(Ready(snapshot_wanted=True))
    assert shell.taking and shell.wanted and machine_seen.empty()
    assert shell.on_input(core, SnapshotSaved(None, "busy"), LATE, LOG) is None
    assert isinstance(machine_seen.get(timeout=5), TakeSnapshot)
    assert shell.taking and not shell.wanted

    # A snapshot the state machine made below the one the core holds is dropped.
    shell.taking = True
    assert shell.on_input(core, SnapshotState(2, b"old"), LATE, LOG) is None
    assert not shell.taking and io_seen.empty()
    # A refused save frees the shell for the next request.
    shell.taking = True
    assert shell.on_input(core, SnapshotSaved(None, "busy"), LATE, LOG) is None
    assert not shell.taking


def test_snapshot_shell_installs_before_writes_and_drops_persisted_until_the_reset(
    system: ActorSystem,
) -> None:
    io, io_seen = probe(system, "io")
    machine, machine_seen = probe(system, "machine")
    writer, writer_seen = probe(system, "writer")
    supervisor, _ = probe(system, "supervisor")
    shell = SnapshotShell(io, machine, writer, supervisor)
    info = SnapshotInfo(40, 3, Membership(("n1",)), 100, 7, 0)
    shell.before_writes(Ready(install_snapshot=SnapshotInstall(info, reset_log=True)))
    assert machine_seen.get(timeout=5) == RestoreSnapshot(info)
    assert writer_seen.get(timeout=5) == InstallSnapshotReset(40, 3)
    assert shell.drop_persisted and shell.installed == 1
    core, _ = leader_core(threshold=0)
    assert shell.on_input(core, LogReset(40, 3), LATE, LOG) is None
    assert not shell.drop_persisted

    # Kept log: restore only, no reset.
    shell.before_writes(Ready(install_snapshot=SnapshotInstall(info, reset_log=False)))
    assert machine_seen.get(timeout=5) == RestoreSnapshot(info)
    assert not shell.drop_persisted

    members = info.membership
    read = ChunkRead("n2", 40, 3, 0, 10)
    write = ChunkWrite("n1", 40, 3, 100, 7, 0, members, 0, b"", False, 1)
    shell.after_apply(Ready(snapshot_reads=[read], snapshot_writes=[write]))
    assert io_seen.get(timeout=5) == ReadChunk(read)
    assert io_seen.get(timeout=5) == WriteChunk(write)
    assert writer_seen.empty()


class Unsnapshottable(Recorder):
    def snapshot(self) -> bytes:
        raise RuntimeError("cannot serialise")


def test_failures_are_answered_so_the_next_snapshot_is_not_blocked(
    system: ActorSystem, tmp_path: pathlib.Path
) -> None:
    report, reports = probe(system, "report")
    files = SnapshotFiles(tmp_path / "snaps")
    machine = system.spawn(
        Props(StateMachineActor, Unsnapshottable(), report, 0, None, files), "state-machine"
    )
    machine.tell(Apply(command_entries(1, "a")))
    machine.tell(TakeSnapshot())
    assert reports.get(timeout=5).index == 1  # Applied
    assert reports.get(timeout=5) == SnapshotState(1, None)
    assert history(machine) == [b"a"]  # the actor and its state carry on

    io_ref = system.spawn(Props(SnapshotIO, files, report), "io")
    io_ref.tell(SaveSnapshot(SnapshotInfo(1, 1, Membership(("n1",))), 12345))  # type: ignore[arg-type]
    failed = reports.get(timeout=5)
    assert failed.info is None and "saving failed" in failed.error
    files.save(SnapshotInfo(2, 1, Membership(("n1",))), b"state")
    (meta,) = files.store.list()
    meta.path.write_bytes(b"damaged")  # every listing of the store now fails
    read = ChunkRead("n2", 2, 1, 0, 10)
    io_ref.tell(ReadChunk(read))
    assert reports.get(timeout=5) == ChunkLoaded(read, None)

    shell = SnapshotShell(io_ref, machine, report, report)
    core, _ = leader_core(threshold=0)
    shell.taking = True
    assert shell.on_input(core, SnapshotState(1, None), LATE, LOG) is None
    assert not shell.taking
