"""NodeMetrics: one node's Prometheus metrics, and the HTTP endpoint that serves them.

Each node has its own ``CollectorRegistry`` (never the process-global one), so several nodes
in one test process keep separate series. What is measured, and where:

* ``coterie_term``, ``coterie_role{role}`` (1 for the current role), ``coterie_commit_index``,
  ``coterie_applied_index``, ``coterie_last_index``: read at scrape time from a tuple the
  active role actor publishes after every input it handled (one attribute store, no lock:
  the hot path pays nothing per scrape);
* ``coterie_wal_append_seconds``: from a role actor handing entries to the log writer to the
  writer's ``Persisted`` for them (write, plus the fsync the durability policy asks for);
* ``coterie_wal_fsync_seconds``: each fsync of the log (timed around ``SegmentedLog.sync``);
* ``coterie_apply_seconds``: the state machine applying one batch of committed entries;
* ``coterie_elections_total``, ``coterie_role_changes_total{role}``,
  ``coterie_proposed_entries_total`` / ``coterie_proposed_commands_total`` (their ratio is
  the batching factor), ``coterie_applied_commands_total``,
  ``coterie_raft_dropped_messages_total`` (peer messages the core refused);
* ``coterie_snapshots_taken_total``, ``coterie_snapshots_installed_total`` (received from a
  leader by InstallSnapshot), ``coterie_snapshot_index`` and ``coterie_snapshot_bytes`` (the
  latest snapshot this node holds, taken or installed);
* ``coterie_dropped_frames_total{reason}`` and ``coterie_actor_events_total{event}``: the
  actor system's counters (``system.stats()``), read at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

ROLES = ("follower", "candidate", "leader")
# From 50 us (an unsynced write) to 2.5 s (a disk in trouble).
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class NodeMetrics:
    def __init__(self, node_id: str, stats: Callable[[], dict[str, int]] | None = None) -> None:
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.wal_append = Histogram(
            "coterie_wal_append_seconds",
            "Entries handed to the log writer until persisted as the durability policy says",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.wal_fsync = Histogram(
            "coterie_wal_fsync_seconds",
            "One fsync of the write-ahead log",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.apply = Histogram(
            "coterie_apply_seconds",
            "The state machine applying one batch of committed entries",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.elections = Counter(
            "coterie_elections",
            "Elections this node started (pre-votes excluded)",
            registry=registry,
        )
        self.role_changes = Counter(
            "coterie_role_changes", "Role transitions of this node", ["role"], registry=registry
        )
        self.proposed_entries = Counter(
            "coterie_proposed_entries",
            "Log entries this node proposed as leader",
            registry=registry,
        )
        self.proposed_commands = Counter(
            "coterie_proposed_commands",
            "Client commands carried by those entries",
            registry=registry,
        )
        self.applied_commands = Counter(
            "coterie_applied_commands",
            "Client commands applied to the state machine",
            registry=registry,
        )
        self.dropped_messages = Counter(
            "coterie_raft_dropped_messages",
            "Peer messages the Raft core dropped as protocol violations",
            registry=registry,
        )
        self.snapshots_taken = Counter(
            "coterie_snapshots_taken", "Snapshots this node took of its state", registry=registry
        )
        self.snapshots_installed = Counter(
            "coterie_snapshots_installed",
            "Snapshots this node installed from a leader (InstallSnapshot)",
            registry=registry,
        )
        self.snapshot_index = Gauge(
            "coterie_snapshot_index",
            "Last log index covered by the latest snapshot this node holds",
            registry=registry,
        )
        self.snapshot_bytes = Gauge(
            "coterie_snapshot_bytes",
            "Size of the latest snapshot this node holds",
            registry=registry,
        )
        # (term, role, commit index, applied index, last index): replaced whole, never mutated
        self.state: tuple[int, str, int, int, int] = (0, "follower", 0, 0, 0)
        self._stats = stats
        registry.register(_Snapshot(self))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def serve(self, address: str) -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
        host, _, port = address.rpartition(":")
        self._server, self._thread = start_http_server(int(port), host, self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot_held(self, index: int, size: int, *, installed: bool) -> None:
        """A snapshot taken here or installed from a leader is now the latest one held."""
        (self.snapshots_installed if installed else self.snapshots_taken).inc()
        self.snapshot_index.set(index)
        self.snapshot_bytes.set(size)

    def stats(self) -> dict[str, int]:
        return self._stats() if self._stats is not None else {}


class _Snapshot(Collector):
    """The series read at scrape time: Raft state and the actor system's counters."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        term, role, commit, applied, last = self.metrics.state
        yield GaugeMetricFamily("coterie_term", "Current Raft term", value=term)
        roles = GaugeMetricFamily("coterie_role", "1 for this node's current role", labels=["role"])
        for name in ROLES:
            roles.add_metric([name], 1.0 if name == role else 0.0)
        yield roles
        yield GaugeMetricFamily("coterie_commit_index", "Highest committed index", value=commit)
        yield GaugeMetricFamily(
            "coterie_applied_index", "Highest index reported applied", value=applied
        )
        yield GaugeMetricFamily("coterie_last_index", "Last index of the log", value=last)
        stats = self.metrics.stats()
        dropped = CounterMetricFamily(
            "coterie_dropped_frames",
            "Frames and envelopes the actor transport dropped, by reason",
            labels=["reason"],
        )
        events = CounterMetricFamily(
            "coterie_actor_events", "Actor system counters (system.stats())", labels=["event"]
        )
        for name, value in sorted(stats.items()):
            reason = name.removeprefix("transport_")
            if reason.startswith("dropped_"):
                dropped.add_metric([reason.removeprefix("dropped_")], value)
            else:
                events.add_metric([name], value)
        yield dropped
        yield events
