"""The shell's snapshot files: a saved snapshot read back whole, by chunks and by its header;
the follower's receiver writing chunks, resuming after an interruption at its checkpoint and
refusing a snapshot whose checksum is wrong; restart reconciling the log with the snapshot;
errors that name the file."""

from __future__ import annotations

import os
import pathlib

import pytest

from consensus.configuration import Membership
from consensus.shell.snapshot_files import Receiver, SnapshotFiles
from consensus.shell.snapshot_shell import prepare_restart
from consensus.snapshots import ChunkWrite, SnapshotInfo
from wal.entry import Entry
from wal.errors import WalCorruption
from wal.log import SegmentedLog
from wal.snapshot import HEADER_SIZE

MEMBERS = Membership(("n1", "n2", "n3"))
STATE = bytes(range(256)) * 40 + b"tail"  # 10 KiB and a bit: several chunks


def point(index: int = 30, term: int = 2) -> SnapshotInfo:
    return SnapshotInfo(index, term, MEMBERS, timestamp=1234)


def test_a_saved_snapshot_reads_back_whole_by_chunks_and_by_header(tmp_path: pathlib.Path) -> None:
    files = SnapshotFiles(tmp_path / "snaps")
    info = files.save(point(), STATE)
    assert (info.index, info.term, info.timestamp, info.membership) == (30, 2, 1234, MEMBERS)
    assert info.size > len(STATE) and info.crc != 0
    latest = files.latest()
    assert latest is not None and latest[0] == info
    assert files.read_body(30, 2) == STATE

    chunks, offset = [], 0
    while offset < info.size:
        chunk = files.read_chunk(30, 2, offset, 1000)
        assert chunk is not None and 0 < len(chunk) <= 1000
        chunks.append(chunk)
        offset += len(chunk)
    assert files.read_chunk(30, 2, offset, 1000) == b""  # at the end: nothing more
    content = b"".join(chunks)
    assert content.endswith(STATE) and len(content) == info.size
    assert files.read_chunk(31, 2, 0, 1000) is None  # no such snapshot
    assert files.read_chunk(30, 2, info.size + 1, 10) is None


def test_old_snapshots_are_pruned_and_then_unreadable(tmp_path: pathlib.Path) -> None:
    files = SnapshotFiles(tmp_path / "snaps", keep=2)
    for index in (10, 20, 30):
        files.save(point(index), STATE[:index])
    assert [m.index for m in files.store.list()] == [20, 30]
    assert files.read_chunk(10, 2, 0, 100) is None  # the leader's core then starts over
    assert files.read_body(20, 2) == STATE[:20]
    with pytest.raises(FileNotFoundError, match="no complete snapshot at index 10"):
        files.read_body(10, 2)


def transfer(source: SnapshotFiles, info: SnapshotInfo, offset: int, chunk: int) -> ChunkWrite:
    data = source.read_chunk(info.index, info.term, offset, chunk) if chunk else b""
    assert data is not None
    return ChunkWrite(
        "n1",
        info.index,
        info.term,
        info.size,
        info.crc,
        info.timestamp,
        info.membership,
        offset,
        data,
        offset + len(data) == info.size,
        1,
    )


def test_the_receiver_resumes_an_interrupted_transfer_at_its_checkpoint(
    tmp_path: pathlib.Path,
) -> None:
    leader = SnapshotFiles(tmp_path / "leader")
    info = leader.save(point(), STATE)
    follower = SnapshotFiles(tmp_path / "follower")
    receiver = Receiver(follower)
    assert receiver.write(transfer(leader, info, 0, 0)) == (0, False)  # the probe
    held, _ = receiver.write(transfer(leader, info, 0, 3000))
    held, _ = receiver.write(transfer(leader, info, held, 3000))
    assert held == 6000 and receiver.receiving
    # A chunk not where the file ends is skipped; the offset held is still reported.
    assert receiver.write(transfer(leader, info, 1000, 3000)) == (6000, False)
    receiver.abandon()  # the follower crashes here

    receiver = Receiver(SnapshotFiles(tmp_path / "follower"))
    offset, complete = receiver.write(transfer(leader, info, 0, 0))  # the leader probes again
    assert (offset, complete) == (6000, False)  # resumes at the checkpoint
    while not complete:
        offset, complete = receiver.write(transfer(leader, info, offset, 3000))
    assert offset == info.size and not receiver.receiving
    received = follower.latest()
    assert received is not None and received[0] == info
    assert follower.read_body(info.index, info.term) == STATE


def test_a_received_snapshot_with_a_wrong_checksum_starts_over(tmp_path: pathlib.Path) -> None:
    leader = SnapshotFiles(tmp_path / "leader")
    info = leader.save(point(), STATE)
    receiver = Receiver(SnapshotFiles(tmp_path / "follower"))
    bad = SnapshotInfo(info.index, info.term, info.membership, info.size, info.crc ^ 1, 1234)
    offset, complete = 0, False
    for _ in range(10):
        offset, complete = receiver.write(transfer(leader, bad, offset, 4096))
        if offset in (0, bad.size):
            break
    assert (offset, complete) == (0, False)
    assert receiver.files.latest() is None


def test_a_damaged_snapshot_names_its_file(tmp_path: pathlib.Path) -> None:
    files = SnapshotFiles(tmp_path / "snaps")
    files.save(point(), STATE)
    (meta,) = files.store.list()
    fd = os.open(meta.path, os.O_WRONLY)
    os.pwrite(fd, b"garbage!", HEADER_SIZE)  # the core's header magic
    os.close(fd)
    with pytest.raises(WalCorruption, match=r"snap-0+30-0+2\.snap.*bad magic"):
        files.latest()
    with pytest.raises(WalCorruption, match="bad magic"):
        files.read_body(30, 2)


def test_restart_resets_a_log_that_does_not_continue_the_snapshot(tmp_path: pathlib.Path) -> None:
    files = SnapshotFiles(tmp_path / "snaps")
    assert prepare_restart(files, None) is None  # no snapshot: nothing to do
    with SegmentedLog.open(tmp_path / "log") as log:
        log.append([Entry(i, 1, 0, 0, b"x") for i in range(1, 11)])
        info = files.save(point(30, 2), STATE)  # installed, then a crash before the reset
        assert prepare_restart(files, log) == info
        assert (log.first_index, log.last_index, log.term_at(30)) == (31, 30, 2)
        # A log that continues the snapshot is kept as it is.
        log.append([Entry(31, 2, 0, 0, b"y")])
        assert prepare_restart(files, log) == info and log.last_index == 31
