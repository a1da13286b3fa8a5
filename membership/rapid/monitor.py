"""The edge failure detector: an observer probes its K subjects and keeps one phi accrual
detector per subject. Sans-IO.

Theory of operation
-------------------
Rapid's edge detector is pluggable; coterie plugs in the phi accrual detector of
:mod:`membership.phi`, the one the gossip membership uses. Once per ``heartbeat_interval``
(at a phase of its own) the observer checks every subject's detector and then probes every
subject. A ``ProbeAck`` is a heartbeat; as in :mod:`membership.liveness`, only an ack to the
latest probe, sent after the previous ack arrived, adds its interval to the detector's
history, so an outage or a burst of late acks does not teach it that long gaps are normal.

A subject whose detector crosses the threshold is *reported* (the node turns that into an
alert for the rings on which it observes the subject), once per configuration: alerts are
never withdrawn within a configuration, and a subject still suspected when the next
configuration keeps it is reported again there.

Detectors survive view changes for subjects that stay subjects, so a view change does not make
every observer relearn its edges. If this node's own probe rounds come late by more than
``self_pause_tolerance`` (it was stopped or starved), the silence is forgiven rather than
blamed on every subject at once.
"""

from __future__ import annotations

from membership.phi import PhiAccrualDetector
from membership.rapid.config import RapidConfig


class Edge:
    __slots__ = (
        "detector",
        "incarnation",
        "last_ack",
        "mask",
        "node",
        "reported_epoch",
        "sent_at",
        "seq",
    )

    def __init__(
        self, node: str, incarnation: int, mask: int, detector: PhiAccrualDetector
    ) -> None:
        self.node = node
        self.incarnation = incarnation
        self.mask = mask  # the rings on which we observe it
        self.detector = detector
        self.seq = 0
        self.sent_at = 0.0
        self.last_ack: float | None = None
        self.reported_epoch = -1


class EdgeMonitor:
    def __init__(self, cfg: RapidConfig, phase: float) -> None:
        self.cfg = cfg
        self.phase = phase
        self.edges: dict[str, Edge] = {}
        self.next_probe_at: float | None = None
        self._last_round: float | None = None
        self.probes_sent = 0
        self.pauses_forgiven = 0

    def watch(self, subjects: dict[str, tuple[int, int]], now: float) -> None:
        """Probe exactly `subjects` (node -> (incarnation, ring mask)) from now on."""
        edges: dict[str, Edge] = {}
        for node, (incarnation, mask) in subjects.items():
            edge = self.edges.get(node)
            if edge is None or edge.incarnation != incarnation:
                detector = PhiAccrualDetector(self.cfg.detector)
                # The clock starts now, as if a probe had just been answered: a subject that
                # never answers is suspected about when a real one would have been.
                detector.heartbeat(now, sample=False)
                edge = Edge(node, incarnation, mask, detector)
            edge.mask = mask
            edges[node] = edge
        self.edges = edges
        if not edges:
            self.next_probe_at = None
            self._last_round = None
        elif self.next_probe_at is None:
            self.next_probe_at = now + self.phase

    def clear(self) -> None:
        self.watch({}, 0.0)

    def probe_round(self, epoch: int, now: float) -> tuple[list[tuple[str, int]], list[Edge]]:
        """Check every detector, then probe every subject: (probes as (node, seq), edges to
        report now)."""
        interval = self.cfg.heartbeat_interval
        last = self._last_round
        if last is not None and now - last > interval + self.cfg.self_pause_tolerance:
            paused = now - last - interval
            self.pauses_forgiven += 1
            for edge in self.edges.values():
                edge.detector.forgive(paused)
        self._last_round = now
        report = []
        probes = []
        for edge in self.edges.values():
            edge.detector.check(now)
            if edge.detector.suspected and edge.reported_epoch != epoch:
                edge.reported_epoch = epoch
                report.append(edge)
            edge.seq += 1
            edge.sent_at = now
            probes.append((edge.node, edge.seq))
        self.probes_sent += len(probes)
        nxt = (self.next_probe_at or now) + interval
        self.next_probe_at = nxt if nxt > now else now + interval
        return probes, report

    def on_ack(self, node: str, seq: int, now: float) -> bool:
        """An ack from `node`; False if it is not a subject of ours."""
        edge = self.edges.get(node)
        if edge is None:
            return False
        last = edge.last_ack
        regular = (
            seq == edge.seq
            and last is not None
            and edge.sent_at >= last
            and not edge.detector.suspected
        )
        edge.detector.heartbeat(now, sample=regular)
        edge.last_ack = now
        return True
