"""Faults on a schedule drawn from a seed, carried out on a NetnsCluster.

Kinds of fault (each held for a while, then undone, with quiet gaps in between):

``kill``               SIGKILL one or two nodes (or the leader); restart them when it ends
``pause``              SIGSTOP the leader or a random node (a long GC pause); SIGCONT at the end
``partition-halves``   two random sides, 2 | 3 nodes
``partition-leader``   the leader alone on one side
``partition-bridge``   two majorities sharing one node that sees everyone (a bridge)
``loss``               a fraction (10-40%) of the packets between nodes dropped
``kill-majority``      SIGKILL three of the five nodes at once: no quorum until restarted
``partition-split``    three sides, 2 | 2 | 1: no side has a majority

The schedule (kinds, targets when not "the leader", durations) is a pure function of the
seed, so a run can be replayed; "the leader" is resolved when the fault starts, and every
fault as carried out is logged with its times. The last fault usually outlasts the fault
phase: :meth:`Nemesis.stop` leaves it in force and :meth:`Nemesis.heal` undoes everything
(network healed, paused nodes resumed, killed nodes restarted), so the healing phase
measures a real recovery.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from typing import Any

from tests.jepsen.nscluster import NetnsCluster

KINDS = (
    "kill",
    "pause",
    "partition-halves",
    "partition-leader",
    "partition-bridge",
    "loss",
    "kill-majority",
    "partition-split",
)


@dataclasses.dataclass
class Fault:
    kind: str
    at: float  # seconds after the start of the run
    duration: float
    params: dict[str, Any]
    started: float | None = None
    ended: float | None = None
    targets: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        when = f"{self.started:.1f}-{self.ended:.1f}s" if self.started is not None else "?"
        return f"{self.kind} {','.join(self.targets)} {when}"


def schedule(seed: int, seconds: float, nodes: list[str]) -> list[Fault]:
    rng = random.Random(seed)
    faults = []
    at = rng.uniform(0.5, 1.5)
    while at < seconds:
        kind = rng.choice(KINDS)
        duration = rng.uniform(1.0, 4.0)
        params: dict[str, Any] = {}
        if kind == "kill":
            params["who"] = rng.choice(["leader", "one", "two"])
            params["nodes"] = rng.sample(nodes, 2)
        elif kind == "pause":
            params["who"] = rng.choice(["leader", "one"])
            params["nodes"] = rng.sample(nodes, 1)
        elif kind == "partition-halves":
            shuffled = rng.sample(nodes, len(nodes))
            params["sides"] = [shuffled[: len(nodes) // 2], shuffled[len(nodes) // 2 :]]
        elif kind == "partition-bridge":
            params["order"] = rng.sample(nodes, len(nodes))
        elif kind == "kill-majority":
            params["nodes"] = rng.sample(nodes, len(nodes) // 2 + 1)
        elif kind == "partition-split":
            shuffled = rng.sample(nodes, len(nodes))
            third = max(1, len(nodes) * 2 // 5)
            params["sides"] = [shuffled[:third], shuffled[third : 2 * third], shuffled[2 * third :]]
        elif kind == "loss":
            params["fraction"] = round(rng.uniform(0.1, 0.4), 2)
        faults.append(Fault(kind, at, duration, params))
        at += duration + rng.uniform(0.5, 2.0)
    return faults


class Nemesis:
    def __init__(self, cluster: NetnsCluster, faults: list[Fault]) -> None:
        self.cluster = cluster
        self.faults = faults
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="jepsen-nemesis", daemon=True)
        self.started = 0.0
        self.errors: list[str] = []
        self.pending: Fault | None = None  # the fault in force when the nemesis stopped

    def start(self) -> None:
        self.started = time.monotonic()
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)

    def done(self) -> list[Fault]:
        return [f for f in self.faults if f.started is not None]

    def _now(self) -> float:
        return time.monotonic() - self.started

    def _run(self) -> None:
        for fault in self.faults:
            if self.stopping.wait(max(0.0, fault.at - self._now())):
                return
            try:
                fault.started = self._now()
                self._begin(fault)
                if self.stopping.wait(fault.duration):
                    self.pending = fault  # still in force: heal() undoes it
                    return
                self._end(fault)
            except Exception as exc:  # a fault that could not be made is reported, not fatal
                self.errors.append(f"{fault.kind}: {exc!r}")
            fault.ended = self._now()

    def _leader(self) -> str | None:
        return self.cluster.leader(timeout=0.3)

    def _pick(self, fault: Fault, count: int) -> list[str]:
        if fault.params["who"] == "leader":
            leader = self._leader()
            if leader is not None:
                return [leader]
        return list(fault.params["nodes"][:count])

    def _begin(self, fault: Fault) -> None:
        cluster, network = self.cluster, self.cluster.network
        if fault.kind == "kill":
            targets = self._pick(fault, 2 if fault.params["who"] == "two" else 1)
            for node in targets:
                if node in cluster.procs:
                    cluster.kill(node)
                    self.killed.add(node)
                    self.paused.discard(node)
            fault.targets = targets
        elif fault.kind == "kill-majority":
            for node in fault.params["nodes"]:
                if node in cluster.procs:
                    cluster.kill(node)
                    self.killed.add(node)
                    self.paused.discard(node)
            fault.targets = list(fault.params["nodes"])
        elif fault.kind == "pause":
            targets = [n for n in self._pick(fault, 1) if n in cluster.running()]
            for node in targets:
                cluster.pause(node)
                self.paused.add(node)
            fault.targets = targets
        elif fault.kind in ("partition-halves", "partition-split"):
            network.partition(fault.params["sides"])
            fault.targets = ["|".join(",".join(side) for side in fault.params["sides"])]
        elif fault.kind == "partition-leader":
            leader = self._leader() or cluster.ids[0]
            network.partition([[leader], [n for n in cluster.ids if n != leader]])
            fault.targets = [leader]
        elif fault.kind == "partition-bridge":
            order = fault.params["order"]
            half = len(order) // 2
            left, bridge, right = order[:half], order[half], order[half + 1 :]
            network.cut_links([(a, b) for a in left for b in right])
            fault.targets = [f"{','.join(left)}<{bridge}>{','.join(right)}"]
        elif fault.kind == "loss":
            network.lose(fault.params["fraction"])
            fault.targets = [f"{fault.params['fraction']:.0%}"]

    def _end(self, fault: Fault) -> None:
        cluster = self.cluster
        if fault.kind in ("kill", "kill-majority"):
            for node in fault.targets:
                if node in self.killed:
                    cluster.start(node)
                    self.killed.discard(node)
        elif fault.kind == "pause":
            for node in fault.targets:
                cluster.resume(node)
                self.paused.discard(node)
        else:
            cluster.network.heal()

    def heal(self) -> None:
        """Undo every fault still in force."""
        if self.pending is not None:
            self.pending.ended = self._now()
            self.pending = None
        self.cluster.network.heal()
        for node in list(self.paused):
            self.cluster.resume(node)
        self.paused.clear()
        for node in list(self.killed):
            self.cluster.start(node)
        self.killed.clear()
