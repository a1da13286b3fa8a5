"""The endpoint and the follower over real HTTP on 127.0.0.1, in one process: parameters,
compaction and snapshots, disconnects, planted gaps and mismatches, restart, chaining."""

from __future__ import annotations

import http.client
import json
import pathlib
import socket
import threading

import msgpack
import pytest

from consensus.configuration import Membership
from consensus.sessions import SESSION_SHIFT, encode_command, encode_register
from consensus.shell.batching import encode_commands
from follow.client import SourceClient
from follow.records import JSONL, EntryRecord, Header, RecordDecoder, Trailer
from follow.server import LogServer
from follow.source import WalSource
from tests.follow.follow_helpers import (
    Running,
    Source,
    build_entries,
    command,
    make_follower,
    replay,
    wait_until,
    write_snapshot,
)
from wal.compare import diff_logs
from wal.entry import Entry, EntryKind
from wal.errors import WalError
from wal.log import SegmentedLog
from wal.snapshot import SnapshotStore


@pytest.fixture
def source(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    served = Source(tmp_path / "source")
    served.append(build_entries(1, 300))
    yield served
    served.close()


def get(address: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body, dict(response.getheaders())


# ---------------------------------------------------------------------------- the endpoint


def test_log_streams_entries_with_seq_term_timestamp_and_crc(source: Source) -> None:
    status, body, headers = get(source.server.address, "/log?from=10&to=19")
    assert status == 200 and headers["Transfer-Encoding"] == "chunked"
    records = RecordDecoder(headers["Content-Type"]).feed(body)
    assert records[0] == Header(9, 1, 300)
    wanted = build_entries(10, 10)
    assert [r.to_entry() for r in records[1:-1]] == wanted  # type: ignore[union-attr]
    assert records[-1] == Trailer(20, 300)


def test_log_as_json_lines_on_accept(source: Source) -> None:
    status, body, headers = get(
        source.server.address, "/log?from=299", {"Accept": "application/jsonl"}
    )
    assert status == 200 and headers["Content-Type"] == JSONL
    lines = [json.loads(line) for line in body.splitlines()]
    assert [line["type"] for line in lines] == ["header", "entry", "entry", "trailer"]
    assert lines[1]["seq"] == 299 and lines[1]["ts"] == 10_299 and lines[1]["term"] == 1


def test_status_and_empty_ranges_past_the_commit(source: Source) -> None:
    status, body, _ = get(source.server.address, "/log/status")
    answer = json.loads(body)
    assert status == 200
    assert (answer["first"], answer["last"], answer["commit"]) == (1, 300, 300)
    status, body, headers = get(source.server.address, "/log?from=500")
    assert RecordDecoder(headers["Content-Type"]).feed(body) == [Trailer(500, 300)]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/log?from=x", 400, "'from'"),
        ("/log?to=3", 400, "'from' is required"),
        ("/log?from=3&to=1", 400, "before"),
        ("/log?from=1&bogus=1", 400, "unknown parameter 'bogus'"),
        ("/nothing", 404, "no such resource"),
    ],
)
def test_bad_requests_get_a_message(source: Source, path: str, status: int, message: str) -> None:
    got, body, _ = get(source.server.address, path)
    assert got == status and message in json.loads(body)["error"]


def test_not_acceptable_format(source: Source) -> None:
    status, _, _ = get(source.server.address, "/log?from=1", {"Accept": "text/html"})
    assert status == 406


def test_compacted_range_points_to_the_snapshot_which_streams(source: Source) -> None:
    machine = replay(source.entries()[:200])
    write_snapshot(source.directory / "snapshots", 200, 1, machine)
    source.shared.compact_through(200)
    status, body, _ = get(source.server.address, "/log?from=5")
    answer = json.loads(body)
    assert status == 410
    assert answer["snapshot"] == "/snapshot/latest" and answer["snapshot_index"] == 200
    status, body, headers = get(source.server.address, "/snapshot/latest")
    assert status == 200 and headers["X-Snapshot-Index"] == "200"
    assert int(headers["Content-Length"]) == len(body)
    assert body.endswith(machine.snapshot())


def test_client_disconnect_mid_stream_costs_nothing(source: Source) -> None:
    source.append(build_entries(301, 20_000))
    host, _, port = source.server.address.rpartition(":")
    for _ in range(5):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /log?from=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.close()  # gone with most of the range unread
    # The writer is never held up and the server still answers.
    source.append(build_entries(20_301, 10))
    status, body, _ = get(source.server.address, "/log/status")
    assert status == 200 and json.loads(body)["last"] == 20_310
    wait_until(lambda: source.server.counters["disconnects"] >= 1)


def test_long_poll_waits_for_new_entries(source: Source) -> None:
    client = SourceClient(source.uri)
    timer = threading.Timer(0.2, lambda: source.append(build_entries(301, 3)))
    timer.start()
    records = list(client.log(301, None, wait_ms=3000))
    assert [r.seq for r in records if isinstance(r, EntryRecord)] == [301, 302, 303]
    client.close()


# ---------------------------------------------------------------------------- the follower


class FaultySource(WalSource):
    """Serves the log with planted faults on the first reads, below the server's own check
    that indexes run on: one entry's frame replaced by the next one's (the stream skips an
    entry: a gap) and a flipped payload byte (a checksum mismatch)."""

    calls = 0

    def read_frames(self, start: int, stop: int, limit: int) -> list[tuple[int, bytes]]:
        frames = super().read_frames(start, stop, limit)
        FaultySource.calls += 1
        if FaultySource.calls == 2 and len(frames) > 3:
            frames[2] = (frames[2][0], frames[3][1])
        elif FaultySource.calls == 4 and len(frames) > 3:
            index, raw = frames[1]
            frames[1] = (index, raw[:-1] + bytes([raw[-1] ^ 0x01]))
        return frames


def assert_same(follower_dir: pathlib.Path, source: Source) -> None:
    with SegmentedLog.open(follower_dir / "log", readonly=True) as mine, source.shared.lock:
        assert list(diff_logs(mine, source.shared._log)) == []
        assert mine.last_index == source.shared.last_index


def test_follower_detects_planted_gaps_and_mismatches_and_refetches(
    tmp_path: pathlib.Path,
) -> None:
    FaultySource.calls = 0
    source = Source(tmp_path / "source", FaultySource)
    source.append(build_entries(1, 500))
    follower = make_follower(source.uri, tmp_path / "f")
    try:
        while follower.applied < 500:
            follower.step()
        problems = follower.checker.problems
        assert problems["gap"] == 1 and problems["checksum"] == 1
        assert follower.machine.applied == replay(source.entries()).applied
        assert_same(tmp_path / "f", source)
    finally:
        follower.close()
        source.close()


def test_follower_follows_restarts_and_resumes(tmp_path: pathlib.Path, source: Source) -> None:
    running = Running(make_follower(source.uri, tmp_path / "f"))
    wait_until(lambda: running.follower.applied == 300)
    running.close()
    source.append(build_entries(301, 200, term=2))
    follower = make_follower(source.uri, tmp_path / "f")
    assert follower.applied == 300  # replayed its own WAL, resumes after it
    first_request = follower.checker.next_seq
    running = Running(follower)
    wait_until(lambda: follower.applied == 500)
    running.close()
    assert first_request == 301
    assert follower.machine.applied == replay(source.entries()).applied
    assert_same(tmp_path / "f", source)


def test_follower_backs_off_while_the_source_is_down(tmp_path: pathlib.Path) -> None:
    follower = make_follower("http://127.0.0.1:9", tmp_path / "f")
    delays = [follower.step() for _ in range(5)]
    follower.close()
    assert follower.counters["unreachable"] == 5
    assert delays[-1] > delays[0] > 0


def test_a_stalling_source_times_out_and_halves_the_window(tmp_path: pathlib.Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    try:
        port = listener.getsockname()[1]
        follower = make_follower(f"http://127.0.0.1:{port}", tmp_path / "f", timeout=0.2)
        before = follower.window.size
        assert follower.step() == 0.0  # a timeout is retried at once, with a smaller window
        assert follower.counters["timeouts"] == 1 and follower.window.size == before // 2
        follower.close()
    finally:
        listener.close()


def test_follower_restores_from_snapshot_after_compaction_and_chains(
    tmp_path: pathlib.Path, source: Source
) -> None:
    # The snapshot is written with wal/snapshot.py as the Raft shell lays one out.
    write_snapshot(source.directory / "snapshots", 250, 1, replay(source.entries()[:250]))
    source.shared.compact_through(250)
    first = make_follower(source.uri, tmp_path / "f1")
    server = LogServer("127.0.0.1:0", first.source(), first.query)
    chained = make_follower(f"http://{server.address}", tmp_path / "f2")
    runs = [Running(first), Running(chained)]
    try:
        source.append(build_entries(301, 100))
        wait_until(lambda: chained.applied == 400)
        full = replay(build_entries(1, 400))
        for follower in (first, chained):
            assert follower.counters["snapshots_installed"] == 1
            assert follower.machine.applied == full.applied
        # Reads on a follower carry the sequence they reflect.
        host, _, port = server.address.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST", "/query", body=msgpack.packb(["digest"]))
        answer = msgpack.unpackb(conn.getresponse().read())
        assert answer == {"applied": 400, "result": [len(full.applied), full.digest.hexdigest()]}
    finally:
        for run in runs:
            run.close()
        server.close()
    with SegmentedLog.open(tmp_path / "f2" / "log", readonly=True) as mine, source.shared.lock:
        assert mine.first_index == 251 and list(diff_logs(mine, source.shared._log)) == []
    # Restarted, the chained follower comes back from its own snapshot and WAL.
    again = make_follower(source.uri, tmp_path / "f2")
    assert again.applied == 400 and again.machine.applied == full.applied
    again.close()
    # Without the snapshot its log starts after, it refuses to start rather than apply a
    # suffix to an empty state.
    for path in (tmp_path / "f2" / "snapshots").glob("*.snap"):
        path.unlink()
    with pytest.raises(WalError, match="no snapshot covers it"):
        make_follower(source.uri, tmp_path / "f2")


def test_follower_snapshots_compacts_and_serves_its_snapshot_to_a_chained_one(
    tmp_path: pathlib.Path,
) -> None:
    source = Source(tmp_path / "source")
    membership = Membership(("n1", "n2", "n3"))
    source.append([Entry(1, 1, EntryKind.CONFIGURATION, 10_001, membership.encode())])
    source.append(build_entries(2, 399))
    first = make_follower(source.uri, tmp_path / "f1", snapshot_every=100, snapshot_trailing=10)
    try:
        while first.applied < 400:
            first.step()
        full = replay(source.entries())
        snapshots = SnapshotStore(tmp_path / "f1" / "snapshots").list()
        assert snapshots and snapshots[-1].index >= 300
        with first.shared.lock:
            assert first.shared.first_index == snapshots[-1].index - 10 + 1
        server = LogServer("127.0.0.1:0", first.source(), first.query)
        chained = make_follower(f"http://{server.address}", tmp_path / "f2")
        while chained.applied < 400:
            chained.step()
        assert chained.counters["snapshots_installed"] == 1
        assert chained.machine.applied == full.applied
        chained.close()
        server.close()
    finally:
        first.close()
    again = make_follower(source.uri, tmp_path / "f1")  # restart: snapshot, then the WAL
    assert again.applied == 400 and again.machine.applied == full.applied
    again.close()
    source.close()


def test_a_retried_session_command_takes_effect_once_on_the_follower(
    tmp_path: pathlib.Path,
) -> None:
    """A client retry puts the same (session, seq) in the log twice; the voters apply it once
    (the session layer answers the second from its cache), so the follower must too. It once
    applied both, and its state drifted from the cluster's by one command per retry."""
    source = Source(tmp_path / "source")
    register = encode_register(60_000)
    session = 1 << SESSION_SHIFT  # a register at index 1, position 0
    put = encode_command(session, 1, 0, command(7))
    source.append(
        [
            Entry(1, 1, EntryKind.COMMAND, 10_001, encode_commands([register])),
            Entry(2, 1, EntryKind.COMMAND, 10_002, encode_commands([put])),
            Entry(3, 1, EntryKind.COMMAND, 10_003, encode_commands([put])),  # the retry
            Entry(4, 1, EntryKind.COMMAND, 10_004, encode_commands([command(8)])),
        ]
    )
    follower = make_follower(source.uri, tmp_path / "f")
    running = Running(follower)
    try:
        wait_until(lambda: follower.applied == 4)
        assert follower.machine.applied == [command(7), command(8)]
        assert follower.machine.applied == replay(source.entries()).applied
    finally:
        running.close()
        source.close()
