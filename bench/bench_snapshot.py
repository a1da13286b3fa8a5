"""Snapshot benchmark: InstallSnapshot of a large snapshot between real node processes.

Three ``coterie node`` processes on 127.0.0.1 (durability ``always``) run the
``bench.bench_snapshot_machine:Blob`` state machine. One follower is stopped; one command fills
the state with ``size_mb`` MiB of incompressible bytes and a few more pass the snapshot
threshold, so the leader and the other follower snapshot it and compact their logs. The
stopped follower is started again: it is behind the leader's first log index, so it receives
the snapshot by chunked InstallSnapshot (1 MiB chunks, each made durable before it is
acknowledged), restores its state machine from the file and catches up.

Reported:

* ``transfer_seconds``: from the leader's "peer needs a snapshot" log event to the follower's
  "state machine restored" event (the transfer, the fsyncs and the restore), and ``mb_per_s``
  from it; ``catch_up_seconds`` from starting the follower's process to its state matching.
* ``sender_peak_rss_mb``: the leader's peak RSS during the transfer (its peak is reset just
  before, with ``/proc/<pid>/clear_refs``), next to ``sender_rss_before_mb`` (which already
  holds the state itself); the difference is what sending costs.
* ``receiver_peak_rss_mb``: the follower's peak RSS over its whole run, which includes the
  restored state (``size_mb``) once, and ``idle_node_rss_mb``: a node's RSS before it held any
  state, for comparison.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import signal
import tempfile
import time
from typing import Any

import msgpack

from consensus.shell.protocol import ClientQuery
from tests.cluster.cluster import LocalCluster

THRESHOLD = 20  # entries between snapshots: one snapshot of the filled state
INFLIGHT = 8  # the core's default max_inflight


def run(quick: bool) -> dict[str, Any]:
    size_mb = 8 if quick else 100
    with tempfile.TemporaryDirectory(prefix="coterie-bench-snapshot-") as directory:
        return _transfer(pathlib.Path(directory), size_mb)


def _rss_mb(pid: int, field: str) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _reset_peak(pid: int) -> bool:
    """Start a new peak RSS measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _digest(cluster: LocalCluster, node: str) -> list[Any] | None:
    ref = cluster.system.ref(f"coterie://_@{cluster.addresses[node]}/user/node")
    query = ClientQuery(f"d-{node}-{time.monotonic()}", msgpack.packb(["digest"]), True)
    try:
        return ref.ask(query, timeout=10).result(12).result  # type: ignore[no-any-return]
    except Exception:
        return None


def _compacted_to_end(cluster: LocalCluster, leader: str, past: int) -> bool:
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        status = cluster.status(leader, timeout=5)
        if status is not None and status.first_index == status.last_index + 1 > past + 1:
            return True
        time.sleep(0.05)
    return False


def _event_time(cluster: LocalCluster, node: str, event: str) -> float:
    """The time (epoch seconds) of the last log event ``event`` of ``node``."""
    found = None
    for line in (cluster.directory / f"{node}.log").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            found = record["timestamp"]
    if found is None:
        raise RuntimeError(f"{node} never logged {event!r}; logs in {cluster.directory}")
    stamp = datetime.datetime.fromisoformat(found.replace("Z", "+00:00"))
    return stamp.timestamp()


def _transfer(directory: pathlib.Path, size_mb: int) -> dict[str, Any]:
    cluster = LocalCluster(
        directory,
        state_machine="bench.bench_snapshot_machine:Blob",
        raft={
            "election_timeout_min_ms": 1000,
            "election_timeout_max_ms": 2000,
            "heartbeat_interval_ms": 100,
            "snapshot_threshold_entries": THRESHOLD,
            "snapshot_trailing_entries": 0,
        },
    )
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        behind, other = (node for node in cluster.ids if node != leader)
        assert cluster.client.submit(msgpack.packb(["count"]), timeout=30).ok
        time.sleep(1.0)
        idle_rss = _rss_mb(cluster.procs[behind].pid, "VmRSS")
        cluster.kill(behind, signal.SIGTERM)

        # Entries sent to the stopped follower wait in the leader's socket queue and arrive
        # when it is back; the leader sends at most max_inflight (8) messages before it waits
        # for an answer, so these fill that window and the fill itself is never sent.
        for _ in range(2 * INFLIGHT):
            assert cluster.client.submit(msgpack.packb(["count"]), timeout=60).ok
        filled = cluster.client.submit(msgpack.packb(["fill", size_mb, 7]), timeout=120)
        assert filled.ok
        # Count until the leader's latest snapshot covers its whole log (compacted to empty):
        # the follower then installs it and has nothing after it to apply, so it takes no
        # snapshot of its own while measured.
        for _ in range(2 * THRESHOLD):
            assert cluster.client.submit(msgpack.packb(["count"]), timeout=60).ok
            if _compacted_to_end(cluster, leader, filled.index):
                break
        else:
            raise RuntimeError(f"the leader did not compact its log; logs in {directory}")
        expected = _digest(cluster, leader)
        assert expected is not None and expected[1] == size_mb << 20
        snapshots = sorted((directory / leader / "snapshots").glob("*.snap"))
        snapshot_bytes = snapshots[-1].stat().st_size

        leader_pid = cluster.procs[leader].pid
        time.sleep(0.5)  # let the leader give back the serialised copy of its snapshot
        sender_before = _rss_mb(leader_pid, "VmRSS")
        peak_reset = _reset_peak(leader_pid)
        started = time.monotonic()
        cluster.start(behind)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            got = _digest(cluster, behind)
            if got is not None and got == expected:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{behind} did not catch up; logs in {directory}")
        catch_up = time.monotonic() - started
        sender_peak = _rss_mb(leader_pid, "VmHWM")
        receiver_peak = _rss_mb(cluster.procs[behind].pid, "VmHWM")
        transfer = _event_time(cluster, behind, "state machine restored from a snapshot") - (
            _event_time(cluster, leader, "peer is behind the compacted log and needs a snapshot")
        )
        return {
            "snapshot_mb": round(snapshot_bytes / (1 << 20), 1),
            "state_mb": size_mb,
            "chunk_bytes": 1 << 20,
            "transfer_seconds": round(transfer, 3),
            "mb_per_s": round(snapshot_bytes / (1 << 20) / transfer, 1),
            "catch_up_seconds": round(catch_up, 3),
            "sender_rss_before_mb": round(sender_before, 1),
            "sender_peak_rss_mb": round(sender_peak, 1),
            "sender_peak_reset": peak_reset,
            "receiver_peak_rss_mb": round(receiver_peak, 1),
            "idle_node_rss_mb": round(idle_rss, 1),
            "other_follower_snapshots": len(list((directory / other / "snapshots").glob("*"))),
        }
    finally:
        cluster.close()
