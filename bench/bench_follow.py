"""Following over HTTP: catch-up throughput of a follower, and its peak memory.

* **Catch-up**: a source log of 1,000,000 entries of 100-byte commands (100,000 with
  ``--quick``) is served by a ``LogServer`` in one child process; a ``Follower`` in another
  child process, starting empty, pulls it all over HTTP on 127.0.0.1: every entry decoded,
  checked (sequence, term, crc32c), appended to the follower's WAL (durability ``group``:
  one fsync per response) and applied to a state machine that counts commands. Reported:
  entries/s and MB/s of payload, from the first request to the last entry applied. Server and
  follower have a core each when the machine has two; the follower is the bottleneck.
* **Peak RSS** of the follower child (VmHWM) after following N/4 entries and after N: a
  follower streams, so the peak must not grow with the log's length (ratio near 1).
  ``wal_index_bytes_held`` is what the follower's WAL holds of the per-entry offset arrays
  (8 bytes per entry) of the segments it sealed: ``wal.log`` keeps at most
  ``MAX_LOADED_INDEXES`` of them loaded (an LRU), so it is bounded by the segment size, not
  the log's length.

Segments are 4 MiB on both sides (about 31,000 of these entries each), so both runs cross more
segment boundaries than that LRU holds: the bound is reached in the short run already, and the
long run shows whether anything else grows with the log.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

PAYLOAD = 100
SEGMENT = 4 << 20
ROOT = pathlib.Path(__file__).resolve().parents[1]


class CountingMachine:
    """A state machine that only counts what it is given (the bench measures following)."""

    def __init__(self) -> None:
        self.commands = 0
        self.bytes = 0

    def apply(self, command: bytes, meta: Any) -> int:
        self.commands += 1
        self.bytes += len(command)
        return self.commands

    def query(self, payload: bytes) -> Any:
        return [self.commands, self.bytes]

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


def build_source(directory: pathlib.Path, count: int) -> None:
    from wal.entry import Entry, EntryKind
    from wal.log import SegmentedLog

    payload = (bytes(range(32, 127)) * 2)[:PAYLOAD]
    kind = int(EntryKind.COMMAND)
    with SegmentedLog.open(directory, segment_size=SEGMENT) as log:
        for start in range(1, count + 1, 10_000):
            stop = min(count + 1, start + 10_000)
            log.append(
                [Entry(i, 1, kind, 1_700_000_000_000 + i, payload) for i in range(start, stop)],
                sync=False,
            )


def serve(directory: str) -> None:
    """Child: serve `directory` until stdin closes; prints the address first."""
    from actors import configure_logging
    from consensus.shell.node_storage import SharedLog
    from follow.server import LogServer
    from follow.source import WalSource
    from wal.log import SegmentedLog

    configure_logging("warning")
    shared = SharedLog(lambda: SegmentedLog.open(directory, segment_size=SEGMENT))
    server = LogServer("127.0.0.1:0", WalSource(lambda last, _term: last, None, shared))
    print(server.address, flush=True)
    sys.stdin.read()
    server.close()
    shared.close()


def follow(uri: str, data_dir: str, count: int) -> None:
    """Child: follow `uri` until `count` entries are applied; prints figures as JSON."""
    from actors import configure_logging
    from follow.follower import Follower

    configure_logging("warning")
    machine = CountingMachine()
    follower = Follower(
        uri, pathlib.Path(data_dir), machine, durability="group", segment_bytes=SEGMENT,
        timeout=30.0,
    )  # fmt: skip
    started = time.perf_counter()
    cpu_started = time.process_time()
    requests = 0
    while follower.applied < count:
        follower.step()
        requests += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    # Where memory that grows with the log's length sits: the WAL keeps the offset array of
    # every segment it sealed while appending (8 bytes per entry) until something reads and
    # unloads it. Private attributes, read for this diagnosis only.
    segments = follower.shared._log._segments
    held = sum(
        len(s._offsets) * s._offsets.itemsize
        for s in segments
        if s.sealed and s._offsets is not None
    )
    follower.close()
    print(
        json.dumps(
            {
                "entries": follower.applied,
                "commands": machine.commands,
                "seconds": round(elapsed, 3),
                "follower_cpu_seconds": round(cpu, 3),
                "entries_per_s": round(follower.applied / elapsed),
                "payload_mb_per_s": round(machine.bytes / elapsed / 1e6, 2),
                "requests": requests,
                "final_window": follower.window.size,
                "problems": dict(follower.checker.problems),
                "peak_rss_kb": _status_kb("VmHWM"),
                "wal_index_bytes_held": held,
            }
        )
    )


def _status_kb(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.bench_follow", *args],
        cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True, **kwargs,
    )  # fmt: skip


def catch_up(uri: str, workdir: pathlib.Path, count: int) -> dict[str, Any]:
    data_dir = pathlib.Path(tempfile.mkdtemp(dir=workdir))
    child = _child("follow", uri, str(data_dir), str(count), stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=1800)
    shutil.rmtree(data_dir)
    if child.returncode != 0:
        raise RuntimeError(f"follower child failed ({child.returncode})")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(quick: bool) -> dict[str, Any]:
    count = 100_000 if quick else 1_000_000
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-follow-"))
    try:
        source = workdir / "source"
        started = time.perf_counter()
        build_source(source, count)
        build_seconds = time.perf_counter() - started
        server = _child("serve", str(source), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdin is not None
        uri = "http://" + server.stdout.readline().strip()
        try:
            quarter = catch_up(uri, workdir, count // 4)
            full = catch_up(uri, workdir, count)
        finally:
            server.stdin.close()
            server.wait(30)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "entries": count,
        "payload_bytes": PAYLOAD,
        "source_build_seconds": round(build_seconds, 2),
        "catch_up": full,
        "catch_up_quarter": quarter,
        "peak_rss_kb": {str(count // 4): quarter["peak_rss_kb"], str(count): full["peak_rss_kb"]},
        "peak_rss_ratio": round(full["peak_rss_kb"] / quarter["peak_rss_kb"], 3),
        # The same without the WAL's retained offset arrays (see the module docstring).
        "peak_rss_ratio_without_wal_index": round(
            (full["peak_rss_kb"] - full["wal_index_bytes_held"] // 1024)
            / (quarter["peak_rss_kb"] - quarter["wal_index_bytes_held"] // 1024),
            3,
        ),
    }


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif sys.argv[1] == "follow":
        follow(sys.argv[2], sys.argv[3], int(sys.argv[4]))
