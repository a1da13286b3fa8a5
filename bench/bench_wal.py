"""Write-ahead log benchmark: append throughput beside raw file IO, open time, streaming memory.

* **Append throughput** for 100-byte and 4 KiB entries under each durability policy. Beside
  each, in the same run, a raw baseline writes the same number of bytes with the same batch
  sizes into a preallocated file with ``pwrite``: once with an fdatasync per batch (the issue's
  "raw sequential write+fsync"; target: ``always`` and ``group`` >= 0.8 of it), and once with
  the policy's own fsync cadence (fsync per batch, at most every 2 ms, never), which is the
  stricter like-for-like comparison. Entries are built before the clock starts, as the raw
  side's buffers are: the caller of ``append`` already has its entries. Rounds alternate log
  and raw, and the median is kept, so a noisy moment hurts both sides alike.
* **Open time** of a log of 1,000,000 100-byte entries (100,000 with ``--quick``): a normal
  open (sealed segments from their sidecar indexes, the open segment scanned), then the same
  after deleting the sidecars (every segment scanned, the worst case after a crash that lost
  them). The page cache is warm: the figures are CPU cost, not disk reads.
* **Peak RSS while streaming** the whole log with ``read_range``, measured in a fresh child
  process (VmHWM from /proc/self/status) for a log of N entries and one of 4N: a flat profile
  gives a ratio near 1.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from actors import configure_logging
from wal import Durability, Entry, GroupCommit, SegmentedLog

GROUP_INTERVAL_MS = 2.0
TARGET_RATIO = 0.8


# -- append throughput -------------------------------------------------------------------------


def build_batches(entry_size: int, per_batch: int, batches: int) -> list[list[Entry]]:
    payload = bytes(range(256)) * (entry_size // 256 + 1)
    payload = payload[:entry_size]
    return [
        [Entry(b * per_batch + i + 1, 1, 0, 1_700_000_000_000, payload) for i in range(per_batch)]
        for b in range(batches)
    ]


def log_append_run(workdir: pathlib.Path, batches: list[list[Entry]], policy: Durability) -> dict:
    directory = pathlib.Path(tempfile.mkdtemp(dir=workdir))
    log = SegmentedLog.open(directory)
    group = GroupCommit(policy, interval_ms=GROUP_INTERVAL_MS)
    clock = time.perf_counter
    sizes = []
    started = clock()
    for batch in batches:
        appended = log.append(batch, sync=False)
        sizes.append(appended.size)
        now = (clock() - started) * 1000
        if group.appended(appended.first_index, appended.last_index, now):
            group.synced(log.sync(), (clock() - started) * 1000)
    if policy is not Durability.NEVER:
        log.sync()  # everything durable at the end, for the policies that promise it
    elapsed = clock() - started
    log.close()
    shutil.rmtree(directory)
    return {"seconds": elapsed, "batch_bytes": sizes}


def raw_write_run(workdir: pathlib.Path, batch_bytes: list[int], cadence: Durability) -> float:
    """pwrite the same byte counts into a preallocated file; fdatasync by `cadence`."""
    path = workdir / f"raw-{time.monotonic_ns()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.posix_fallocate(fd, 0, max(sum(batch_bytes), 1 << 20))
    buffers = [bytes(size) for size in sorted(set(batch_bytes))]
    by_size = {len(buffer): buffer for buffer in buffers}
    clock = time.perf_counter
    offset = 0
    last_sync = None
    started = clock()
    for size in batch_bytes:
        os.pwrite(fd, by_size[size], offset)
        offset += size
        if cadence is Durability.ALWAYS:
            os.fdatasync(fd)
        elif cadence is Durability.GROUP:
            now = (clock() - started) * 1000
            if last_sync is None or now >= last_sync + GROUP_INTERVAL_MS:
                os.fdatasync(fd)
                last_sync = (clock() - started) * 1000
    if cadence is not Durability.NEVER:
        os.fdatasync(fd)
    elapsed = clock() - started
    os.close(fd)
    path.unlink()
    return elapsed


def append_throughput(
    workdir: pathlib.Path, entry_size: int, per_batch: int, batches: int, rounds: int
) -> dict[str, Any]:
    entries = build_batches(entry_size, per_batch, batches)
    count = per_batch * batches
    out: dict[str, Any] = {"entry_bytes": entry_size, "entries_per_batch": per_batch}
    for policy in Durability:
        log_s, raw_fsync_s, raw_same_s = [], [], []
        file_bytes = 0
        for _ in range(rounds):
            run = log_append_run(workdir, entries, policy)
            log_s.append(run["seconds"])
            file_bytes = sum(run["batch_bytes"])
            raw_fsync_s.append(raw_write_run(workdir, run["batch_bytes"], Durability.ALWAYS))
            raw_same_s.append(raw_write_run(workdir, run["batch_bytes"], policy))
        ours, raw, same = (statistics.median(s) for s in (log_s, raw_fsync_s, raw_same_s))
        out[policy.value] = {
            "entries": count,
            "file_bytes": file_bytes,
            "entries_per_s": round(count / ours),
            "mb_per_s": round(file_bytes / ours / 1e6, 2),
            "payload_mb_per_s": round(count * entry_size / ours / 1e6, 2),
            "raw_write_fsync_mb_per_s": round(file_bytes / raw / 1e6, 2),
            "ratio_vs_raw_write_fsync": round(raw / ours, 3),
            "raw_same_cadence_mb_per_s": round(file_bytes / same / 1e6, 2),
            "ratio_vs_raw_same_cadence": round(same / ours, 3),
        }
        if policy is not Durability.NEVER:
            out[policy.value]["target_ratio_min"] = TARGET_RATIO
            out[policy.value]["meets_target"] = raw / ours >= TARGET_RATIO
    return out


# -- open time and streaming memory ------------------------------------------------------------


def build_log(directory: pathlib.Path, entries: int, entry_size: int = 100) -> None:
    payload = b"p" * entry_size
    with SegmentedLog.open(directory) as log:
        index = 1
        while index <= entries:
            count = min(1000, entries - index + 1)
            log.append(
                [Entry(i, 1 + i // 250_000, 0, i, payload) for i in range(index, index + count)],
                sync=False,
            )
            index += count


def open_time(directory: pathlib.Path, rounds: int) -> dict[str, Any]:
    def timed_open() -> tuple[float, int]:
        started = time.perf_counter()
        log = SegmentedLog.open(directory)
        elapsed = time.perf_counter() - started
        last = log.last_index
        data_bytes.append(sum(segment.size for segment in log.segments()))
        log.close()
        return elapsed, last

    data_bytes: list[int] = []

    normal = [timed_open() for _ in range(rounds)]
    segments = sorted(directory.glob("*.wal"))
    scans = []
    for _ in range(rounds):
        for sidecar in directory.glob("*.idx"):
            sidecar.unlink()
        scans.append(timed_open())  # rebuilds every sidecar
    entries = normal[0][1]
    normal_s = statistics.median(t for t, _ in normal)
    scan_s = statistics.median(t for t, _ in scans)
    return {
        "entries": entries,
        "segments": len(segments),
        "data_bytes": data_bytes[0],
        "open_seconds": round(normal_s, 4),
        "open_without_sidecars_seconds": round(scan_s, 4),
        "full_scan_entries_per_s": round(entries / scan_s),
    }


def stream_in_child(directory: pathlib.Path) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-m", "bench.bench_wal", "stream", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(pathlib.Path(__file__).parent.parent),
        timeout=600,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def stream_child_main(directory: str) -> None:
    """Child process: stream the whole log once; report memory figures as JSON."""
    configure_logging("warning")
    before = _status_kb("VmRSS")
    started = time.perf_counter()
    entries = payload = 0
    with SegmentedLog.open(directory, readonly=True) as log:
        for entry in log.read_range(log.first_index, log.last_index + 1):
            entries += 1
            payload += len(entry.payload)
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "entries": entries,
                "payload_bytes": payload,
                "seconds": round(elapsed, 3),
                "entries_per_s": round(entries / elapsed),
                "rss_before_kb": before,
                "peak_rss_kb": _status_kb("VmHWM"),
            }
        )
    )


def streaming_memory(small: pathlib.Path, large: pathlib.Path) -> dict[str, Any]:
    n, four_n = stream_in_child(small), stream_in_child(large)
    grow_n = n["peak_rss_kb"] - n["rss_before_kb"]
    grow_4n = four_n["peak_rss_kb"] - four_n["rss_before_kb"]
    return {
        "n": n,
        "4n": four_n,
        "peak_rss_ratio_4n_over_n": round(four_n["peak_rss_kb"] / n["peak_rss_kb"], 3),
        "growth_while_streaming_kb": {"n": grow_n, "4n": grow_4n},
        "flat": four_n["peak_rss_kb"] <= 1.1 * n["peak_rss_kb"],
    }


# -- entry point -------------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, Any]:
    configure_logging("warning")
    rounds = 1 if quick else 3
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="coterie-bench-wal-"))
    try:
        result: dict[str, Any] = {
            "append_100B": append_throughput(
                workdir, 100, per_batch=64, batches=300 if quick else 1500, rounds=rounds
            ),
            # The same entries in smaller batches: how the ratio depends on batch size.
            "append_100B_batch16": append_throughput(
                workdir, 100, per_batch=16, batches=600 if quick else 3000, rounds=rounds
            ),
            "append_4KiB": append_throughput(
                workdir, 4096, per_batch=16, batches=100 if quick else 500, rounds=rounds
            ),
        }
        big_n = 100_000 if quick else 1_000_000
        small, large = workdir / "small", workdir / "large"
        build_log(large, big_n)
        build_log(small, big_n // 4)
        result["open_1M" if not quick else "open_100k"] = open_time(large, rounds)
        result["streaming_peak_rss"] = streaming_memory(small, large)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "stream":
        stream_child_main(sys.argv[2])
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
