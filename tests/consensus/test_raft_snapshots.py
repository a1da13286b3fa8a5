"""Snapshots in the core: asking for one, compaction after it, the leader's chunked transfer
(probe, resume from the follower's offset, retry, a vanished snapshot), the follower's side
(writes, install with and without a log reset, stale or malformed chunks), restart from a
snapshot, the file header; and the whole flow over the real WAL log and snapshot store, the
way the shell must carry it out."""

from __future__ import annotations

import pathlib
import random
import zlib

import pytest
from raft_helpers import LATE, VOTERS3, commands, entries, follower_ack, make_leader, make_node, of

from consensus.config import RaftConfig
from consensus.configuration import Membership
from consensus.errors import LocalProtocolError
from consensus.log import MemoryLog
from consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    PreVoteResponse,
    RequestVoteResponse,
)
from consensus.node import RaftNode
from consensus.progress import ProgressState
from consensus.ready import HardState, Ready
from consensus.snapshots import (
    SnapshotInfo,
    decode_header,
    encode_header,
    header_length,
    reconcile_log,
)
from consensus.wal_storage import WalLogStorage
from wal.log import SegmentedLog
from wal.snapshot import SnapshotStore

MEMBERS = Membership(VOTERS3)


def applied_all(node: RaftNode, ready: Ready, log: MemoryLog) -> Ready:
    """Write what a Ready hands out, report it durable and applied, until nothing is left."""
    while ready.entries or ready.committed:
        if ready.entries:
            log.append(ready.entries)
            last = ready.entries[-1]
            ready = node.persisted(last.index, last.term, LATE)
            continue
        ready = node.applied(ready.committed[-1].index, {}, LATE)
    return ready


def snapshot_leader(chunk: int = 100, size: int = 250) -> tuple[RaftNode, MemoryLog, SnapshotInfo]:
    """A leader of term 3 whose log is compacted through 20 (snapshot of ``size`` bytes)."""
    info = SnapshotInfo(20, 2, MEMBERS, size, 1234, 500)
    log = MemoryLog(entries(2, 2, start=21), compacted_index=20, compacted_term=2)
    config = RaftConfig("n1", VOTERS3, snapshot_chunk_bytes=chunk)
    node = RaftNode(config, log, HardState(2), random.Random(1), 0, snapshot=info)
    ready = node.tick(LATE)
    ready = node.step(PreVoteResponse(3, "n2", True), LATE)
    ready = node.step(RequestVoteResponse(3, "n2", True), LATE)
    assert node.is_leader
    applied_all(node, ready, log)
    return node, log, info


# ---------------------------------------------------------------------------- taking one


def test_a_snapshot_is_asked_for_past_the_threshold_and_the_log_compacted_after() -> None:
    leader, log, _ = make_leader(snapshot_threshold_entries=5, snapshot_trailing_entries=2)
    ready = leader.propose(commands(*[f"c{i}" for i in range(7)]), LATE)
    log.append(ready.entries)
    leader.persisted(ready.entries[-1].index, leader.term, LATE)
    ready = follower_ack(leader, "n2", 8, LATE)
    assert [e.index for e in ready.committed] == list(range(1, 9))
    ready = leader.applied(8, {}, LATE)
    assert ready.snapshot_wanted
    assert not leader.applied(8, {}, LATE).snapshot_wanted  # asked once
    point = leader.snapshot_point(8)
    assert (point.index, point.term, point.membership) == (8, leader.term, MEMBERS)
    assert point.timestamp == LATE
    ready = leader.snapshot_taken(
        SnapshotInfo(8, point.term, point.membership, 99, 7, point.timestamp), LATE
    )
    assert ready.compact_through == 6  # two entries kept behind it
    log.compact_through(6)
    assert leader.snapshot is not None and leader.snapshot.size == 99
    with pytest.raises(LocalProtocolError, match="beyond the applied index"):
        leader.snapshot_taken(SnapshotInfo(9, leader.term, MEMBERS), LATE)


def test_compaction_never_passes_what_is_durable() -> None:
    follower = make_node("n2", snapshot_trailing_entries=0)
    ready = follower.step(AppendEntries(1, "n1", 0, 0, entries(1, 1, 1, 1), 4, 1), LATE)
    assert [e.index for e in ready.committed] == [1, 2, 3, 4]  # applied before it is durable
    follower.applied(4, {}, LATE)
    ready = follower.snapshot_taken(SnapshotInfo(4, 1, MEMBERS, 10, 0, 0), LATE)
    assert ready.compact_through is None
    log = follower.log.storage
    assert isinstance(log, MemoryLog)
    log.append(entries(1, 1, 1, 1))
    ready = follower.persisted(4, 1, LATE)
    assert ready.compact_through == 4


# ---------------------------------------------------------------------------- sending one


def test_the_leader_sends_a_snapshot_in_chunks_resuming_where_the_follower_stands() -> None:
    leader, _, info = snapshot_leader(chunk=100, size=250)
    # n2 says its log ends at 5: the leader cannot send 6..20, compacted.
    reject = AppendEntriesResponse(leader.term, "n2", False, 0, 22, 6, 0, 5, 0)
    ready = leader.step(reject, LATE)
    assert ready.need_snapshot == ["n2"]
    (probe,) = of(ready, InstallSnapshot, "n2")
    assert (probe.offset, probe.data, probe.done, probe.last_index) == (0, b"", False, 20)
    assert Membership.decode(probe.membership) == MEMBERS and probe.timestamp == 500
    # n2 holds 100 bytes of it from an earlier, interrupted transfer: resume there.
    ready = leader.step(InstallSnapshotResponse(leader.term, "n2", 20, 2, 0, 100, False, 0), LATE)
    (read,) = ready.snapshot_reads
    assert (read.peer, read.index, read.term, read.offset, read.max_bytes) == (
        "n2",
        20,
        2,
        100,
        100,
    )
    ready = leader.snapshot_chunk(read, bytes(100), LATE)
    (chunk,) = of(ready, InstallSnapshot, "n2")
    assert (chunk.offset, len(chunk.data), chunk.done) == (100, 100, False)
    # A stale answer (to the probe, again) changes nothing.
    stale = InstallSnapshotResponse(leader.term, "n2", 20, 2, 0, 100, False, 0)
    assert not leader.step(stale, LATE).snapshot_reads
    ready = leader.step(InstallSnapshotResponse(leader.term, "n2", 20, 2, 100, 200, False, 0), LATE)
    (read,) = ready.snapshot_reads
    ready = leader.snapshot_chunk(read, bytes(50), LATE)
    (last,) = of(ready, InstallSnapshot, "n2")
    assert (last.offset, len(last.data), last.done) == (200, 50, True)
    ready = leader.step(InstallSnapshotResponse(leader.term, "n2", 20, 2, 200, 250, True, 0), LATE)
    progress = leader.role.progress["n2"]  # type: ignore[union-attr]
    assert progress.match == 20 and progress.state is ProgressState.PROBE
    (append,) = of(ready, AppendEntries, "n2")
    assert (append.prev_log_index, append.prev_log_term) == (20, 2)
    assert info.size == 250


def test_a_silent_follower_is_probed_again_and_a_vanished_snapshot_restarts() -> None:
    leader, _, _ = snapshot_leader()
    ready = leader.step(AppendEntriesResponse(leader.term, "n2", False, 0, 22, 1, 0, 0, 0), LATE)
    assert of(ready, InstallSnapshot, "n2")
    later = LATE + leader.config.snapshot_retry_interval
    ready = leader.tick(later)
    (probe,) = of(ready, InstallSnapshot, "n2")
    assert probe.data == b"" and probe.offset == 0
    ready = leader.step(InstallSnapshotResponse(leader.term, "n2", 20, 2, 0, 0, False, 0), later)
    (read,) = ready.snapshot_reads
    ready = leader.snapshot_chunk(read, None, later)  # the store no longer has it
    (again,) = of(ready, InstallSnapshot, "n2")  # starts over with the latest snapshot
    assert again.data == b"" and again.last_index == 20
    with pytest.raises(LocalProtocolError, match="does not fit"):
        resp = InstallSnapshotResponse(leader.term, "n2", 20, 2, 0, 0, False, 0)
        (read,) = leader.step(resp, later).snapshot_reads
        leader.snapshot_chunk(read, bytes(101), later)


# ---------------------------------------------------------------------------- receiving one


def install_message(offset: int, data: bytes, done: bool, *, size: int = 6, term: int = 3):
    return InstallSnapshot(
        term, "n1", 10, 2, size, zlib.crc32(b"abcdef"), 77, MEMBERS.encode(), offset, data, done, 1
    )


def test_a_follower_writes_chunks_then_installs_the_snapshot() -> None:
    log = MemoryLog(entries(1, 1, 1))  # 1..3, far behind 10
    follower = make_node("n2", log=log)
    ready = follower.step(install_message(0, b"", False), LATE)
    (write,) = ready.snapshot_writes
    assert (write.index, write.offset, write.data, write.leader) == (10, 0, b"", "n1")
    ready = follower.snapshot_written(write, 4, False, LATE)  # it had 4 bytes already
    (answer,) = of(ready, InstallSnapshotResponse, "n1")
    assert (answer.offset, answer.done, answer.chunk_offset) == (4, False, 0)
    (write,) = follower.step(install_message(4, b"ef", True), LATE).snapshot_writes
    ready = follower.snapshot_written(write, 6, True, LATE)
    install = ready.install_snapshot
    assert install is not None and install.reset_log
    assert (install.info.index, install.info.term, install.info.timestamp) == (10, 2, 77)
    assert (follower.commit_index, follower.applied_index, follower.log.first_index) == (10, 10, 11)
    assert follower.log.term_at(10) == 2 and follower.snapshot == install.info
    (answer,) = of(ready, InstallSnapshotResponse, "n1")
    assert answer.done
    log.reset(10, 2)
    # Replication continues right after the snapshot.
    ready = follower.step(AppendEntries(3, "n1", 10, 2, entries(3, start=11), 11, 2), LATE)
    assert [e.index for e in ready.entries] == [11]


def test_a_snapshot_whose_entry_the_log_holds_keeps_the_log_after_it() -> None:
    log = MemoryLog(entries(1, 1, 2, 2, 2))
    follower = make_node("n2", log=log, hard=HardState(2))
    message = InstallSnapshot(3, "n1", 4, 2, 6, 0, 0, MEMBERS.encode(), 0, b"abcdef", True, 1)
    (write,) = follower.step(message, LATE).snapshot_writes
    ready = follower.snapshot_written(write, 6, True, LATE)
    assert ready.install_snapshot is not None and not ready.install_snapshot.reset_log
    assert follower.log.last_index == 5 and follower.applied_index == 4


def test_a_snapshot_covering_only_committed_entries_is_answered_done_at_once() -> None:
    follower = make_node("n2")
    follower.step(AppendEntries(1, "n1", 0, 0, entries(1, 1, 1), 3, 1), LATE)
    message = InstallSnapshot(1, "n1", 2, 1, 6, 0, 0, MEMBERS.encode(), 0, b"", False, 1)
    ready = follower.step(message, LATE)
    assert not ready.snapshot_writes
    (answer,) = of(ready, InstallSnapshotResponse, "n1")
    assert answer.done


@pytest.mark.parametrize(
    ("offset", "data", "done", "size", "why"),
    [
        (5, b"abc", False, 6, "inconsistent"),
        (0, b"abc", True, 6, "inconsistent"),
        (-1, b"", False, 6, "inconsistent"),
    ],
)
def test_malformed_snapshot_chunks_are_dropped(
    offset: int, data: bytes, done: bool, size: int, why: str
) -> None:
    follower = make_node("n2")
    ready = follower.step(install_message(offset, data, done, size=size), LATE)
    assert ready.dropped and why in ready.dropped[0] and not ready.snapshot_writes
    bad = InstallSnapshot(3, "n1", 10, 2, 6, 0, 0, b"\xc1", 0, b"", False, 1)
    assert "configuration" in follower.step(bad, LATE).dropped[0]


# ---------------------------------------------------------------------------- restart


def test_a_node_restarts_from_its_snapshot_and_the_log_after_it() -> None:
    grown = Membership(("n1", "n2", "n3", "n4"))
    log = MemoryLog(
        [Entry(21, 2, 2, 0, grown.encode()), *entries(2, start=22)],
        compacted_index=20,
        compacted_term=2,
    )
    info = SnapshotInfo(20, 2, MEMBERS, 10, 0, 900)
    node = RaftNode(RaftConfig("n1", VOTERS3), log, HardState(2), random.Random(1), 0, info)
    assert (node.commit_index, node.applied_index) == (20, 20)
    assert node.membership == grown and node.membership_at(20) == MEMBERS
    with pytest.raises(LocalProtocolError, match="snapshot covering it must be given"):
        RaftNode(RaftConfig("n1", VOTERS3), log, HardState(2), random.Random(1), 0)
    other = SnapshotInfo(23, 3, MEMBERS)
    with pytest.raises(LocalProtocolError, match="reconcile"):
        RaftNode(RaftConfig("n1", VOTERS3), log, HardState(2), random.Random(1), 0, other)
    assert reconcile_log(log, other)  # the log does not continue it: reset
    assert (log.first_index, log.last_index, log.term_at(23)) == (24, 23, 3)
    node = RaftNode(RaftConfig("n1", VOTERS3), log, HardState(3), random.Random(1), 0, other)
    assert node.commit_index == 23 and node.membership == MEMBERS


def test_the_snapshot_header_round_trips_and_names_what_is_wrong() -> None:
    header = encode_header(20, 2, 500, MEMBERS)
    assert header_length(header[: 8 + 4]) == len(header)
    info, body_at = decode_header(header + b"state", size=99, crc=5)
    assert (info.index, info.term, info.timestamp, info.membership, info.size) == (
        20,
        2,
        500,
        MEMBERS,
        99,
    )
    assert (header + b"state")[body_at:] == b"state"
    with pytest.raises(ValueError, match="bad magic"):
        header_length(b"x" * 12)
    with pytest.raises(ValueError, match="only"):
        decode_header(header[:-1])


# ---------------------------------------------------------------------------- over the WAL


def test_the_whole_flow_over_the_wal_log_and_snapshot_store(tmp_path: pathlib.Path) -> None:
    """What the shell does: a leader snapshots into a SnapshotStore and compacts its
    SegmentedLog; a follower receives the snapshot chunk by chunk into its own store, is
    interrupted (its writer closed mid-way), resumes from the checkpointed offset, installs
    it and resets its log; both restart from store + log."""
    store = SnapshotStore(tmp_path / "leader-snaps")
    with SegmentedLog.open(tmp_path / "leader-log", segment_size=4096) as wal:
        storage = WalLogStorage(wal)
        leader, _, _ = make_leader(
            log=storage, snapshot_trailing_entries=0, snapshot_chunk_bytes=64
        )  # type: ignore[arg-type]
        ready = leader.propose(commands(*[f"c{i}" for i in range(30)]), LATE)
        storage.append(ready.entries)
        leader.persisted(31, leader.term, LATE)
        ready = follower_ack(leader, "n3", 31, LATE)
        leader.applied(31, {}, LATE)
        point = leader.snapshot_point(31)
        body = bytes(range(256)) * 2
        header = encode_header(point.index, point.term, point.timestamp, point.membership)
        meta = store.write(point.index, point.term, [header, body])
        info = SnapshotInfo(
            point.index, point.term, point.membership, meta.size, meta.crc, point.timestamp
        )
        ready = leader.snapshot_taken(info, LATE)
        assert ready.compact_through == 31
        storage.compact_through(31)

        # n2 is behind the compacted log: the transfer starts with a probe.
        probe_at = leader.role.progress["n2"].next - 1  # type: ignore[union-attr]
        reject = AppendEntriesResponse(leader.term, "n2", False, 0, probe_at, 1, 0, 0, 0)
        ready = leader.step(reject, LATE)
        follower_store = SnapshotStore(tmp_path / "follower-snaps")
        follower_log = MemoryLog(entries(1, 1))
        follower = make_node("n2", log=follower_log)
        message = of(ready, InstallSnapshot, "n2")[0]
        interrupted = False
        sent_offsets = []
        for _ in range(100):
            (write,) = follower.step(message, LATE).snapshot_writes
            writer = follower_store.begin(write.index, write.term)  # resumes a partial one
            if write.data and write.offset == writer.offset:
                writer.write(write.data, write.offset)
            if write.done and writer.offset == write.size:
                writer.finish(expected_size=write.size, expected_crc=write.crc)
                answer_ready = follower.snapshot_written(write, write.size, True, LATE)
                break
            held = writer.checkpoint()
            writer.close()
            if held >= 128 and not interrupted:
                interrupted = True  # the transfer is cut here; the leader probes again later
                later = LATE + leader.config.snapshot_retry_interval
                (message,) = of(leader.tick(later), InstallSnapshot, "n2")
                assert message.data == b""
                continue
            answer_ready = follower.snapshot_written(write, held, False, LATE)
            (answer,) = of(answer_ready, InstallSnapshotResponse, "n1")
            ready = leader.step(answer, LATE)
            (read,) = ready.snapshot_reads
            sent_offsets.append(read.offset)
            data = next(store.read(meta, read.offset, read.max_bytes))
            (message,) = of(leader.snapshot_chunk(read, data, LATE), InstallSnapshot, "n2")
        assert interrupted and 128 in sent_offsets  # resumed at the checkpoint, not at 0
        assert sent_offsets == sorted(set(sent_offsets))  # no chunk sent twice
        install = answer_ready.install_snapshot
        assert install is not None and install.reset_log
        received = follower_store.latest()
        assert received is not None and (received.size, received.crc) == (meta.size, meta.crc)
        content = b"".join(follower_store.read(received))
        restored_info, body_at = decode_header(content, received.size, received.crc)
        assert content[body_at:] == body and restored_info.membership == MEMBERS
        follower_log.reset(install.info.index, install.info.term)
        (answer,) = of(answer_ready, InstallSnapshotResponse, "n1")
        leader.step(answer, LATE)
        assert leader.role.progress["n2"].match == 31  # type: ignore[union-attr]
        ready = leader.propose(commands("next"), LATE)
        (append,) = of(ready, AppendEntries, "n2")
        assert (append.prev_log_index, [e.index for e in append.entries]) == (31, [32])
        storage.append(ready.entries)
        leader.persisted(32, leader.term, LATE)

    # Restart the leader from its store and log: the shell's start-up sequence.
    with SegmentedLog.open(tmp_path / "leader-log", segment_size=4096) as wal:
        storage = WalLogStorage(wal)
        latest = store.latest()
        assert latest is not None
        first = next(store.read(latest, 0, 4096))
        info, _ = decode_header(first[: header_length(first)], latest.size, latest.crc)
        assert not reconcile_log(storage, info)
        node = RaftNode(
            RaftConfig("n1", VOTERS3),
            storage,
            HardState(leader.term),
            random.Random(2),
            0,
            snapshot=info,
        )
        assert (node.commit_index, node.applied_index, node.log.first_index) == (31, 31, 32)
        assert node.log.last_index == 32  # the entry after the snapshot, from the log
        assert node.snapshot == info
