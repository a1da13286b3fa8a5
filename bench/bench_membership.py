"""Membership benchmark: heartbeat CPU cost, crash detection time, and the detector against
Akka's defaults.

1. **Heartbeat CPU per peer per second**, in real OS processes over 127.0.0.1: clusters of 5
   (and 9, Akka's monitoring fan-out) members run side by side with two baselines started in
   the same run, an actor system with no membership and a lone member with no peers. Each
   process's CPU time comes from /proc over a fixed window; the cost of one watched peer is
   (member CPU - lone member CPU) / peers. The sans-IO core alone is also timed in-process
   with ``time.process_time`` against a core with no peers.
2. **Detection time of a SIGKILLed member** at the default settings (median over 10 kills;
   quick: 3), and the same with Akka's failure-detector defaults on our runtime, both measured
   from the kill to the ``MemberUnreachable`` event at a subscriber. Any suspicion of a member
   that was not killed is counted as false. Status is polled meanwhile, and the longest
   heartbeat silence seen on a healthy member is reported: it is what this machine's stalls
   actually look like, to set against the stall model below.
3. **Detector simulation** (``membership.detector_sim``): our defaults, Akka's defaults and our
   heartbeat with Akka's stall tolerance, all under the same seeded jitter and stall model:
   detection time distribution, false suspicions per hour, longest tolerated stall, and a
   sweep over the stall length.

Run: ``python -m bench membership [--quick]``. This module also runs the member processes
(``python -m bench.bench_membership --member ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from actors import UNHANDLED, Actor, ActorRef, ActorSystem, Props, configure_logging
from membership import (
    AKKA_DEFAULTS,
    DetectorConfig,
    GetMembershipStatus,
    MembershipConfig,
    MemberUnreachable,
    MemberUp,
    Subscribe,
    membership_path,
    start_node,
)
from membership.config import akka_like_config
from membership.detector_sim import JitterModel, Setup, longest_tolerated_stall, simulate
from membership.detector_sim import false_suspicions as sim_false_suspicions
from membership.liveness import Liveness, make_pong
from membership.messages import Ping
from membership.phi import silence_at_threshold

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# ------------------------------------------------------------------ member processes


def _member_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_membership --member")
    parser.add_argument("--name", default="member")
    parser.add_argument("--seed", action="append", default=[])
    parser.add_argument("--profile", choices=["default", "akka"], default="default")
    parser.add_argument("--no-membership", action="store_true")
    args = parser.parse_args(argv)
    configure_logging("warning", json=True)
    system = ActorSystem(args.name, host="127.0.0.1")
    node = ""
    if not args.no_membership:
        base = akka_like_config() if args.profile == "akka" else MembershipConfig()
        node = start_node(system, base.replace(seeds=tuple(args.seed))).path.text
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"address": system.address.text, "node": node}), flush=True)
    stop.wait()
    system.shutdown()
    return 0


class Member:
    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_membership", "--member", "--name", name, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        self.address = ""
        self.node = ""

    def started(self) -> Member:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"member {self.name} did not start (exit {self.proc.wait(5)})")
        info = json.loads(line)
        self.address, self.node = info["address"], info["node"]
        return self

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime + stime

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start(members: list[Member]) -> list[Member]:
    return [m.started() for m in members]


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def all_up(system: ActorSystem, nodes: list[str]) -> bool:
    for node in nodes:
        try:
            reply = system.ref(membership_path(node)).ask(GetMembershipStatus(), 2.0).result()
        except Exception:
            return False
        if {r.node for r in reply.members if r.state == "up"} != set(nodes):
            return False
    return True


# ------------------------------------------------------------------ 1. CPU per peer


def heartbeat_cpu(quick: bool) -> dict[str, Any]:
    window = 6.0 if quick else 20.0
    sizes = [5] if quick else [5, 9]
    results: dict[str, Any] = {"window_s": window, "clusters": {}}
    operator = ActorSystem("bench-operator", host="127.0.0.1")
    baselines = start([Member("bare", "--no-membership"), Member("lone")])
    clusters: dict[int, list[Member]] = {}
    try:
        for size in sizes:
            seed = Member(f"c{size}-0").started()
            rest = start([Member(f"c{size}-{i}", "--seed", seed.address) for i in range(1, size)])
            clusters[size] = [seed, *rest]
        for members in clusters.values():
            wait_until(lambda m=members: all_up(operator, [x.node for x in m]), 30.0, "cluster up")
        time.sleep(2.0)  # past the joins and the first gossip rounds
        everyone = baselines + [m for ms in clusters.values() for m in ms]
        before = {m.name: m.cpu_seconds() for m in everyone}
        started = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - started
        rate = {m.name: (m.cpu_seconds() - before[m.name]) / elapsed for m in everyone}
        bare, lone = rate["bare"], rate["lone"]
        results["bare_system_cpu_ms_per_s"] = round(bare * 1000, 3)
        results["lone_member_cpu_ms_per_s"] = round(lone * 1000, 3)
        for size, members in clusters.items():
            per_member = statistics.median(rate[m.name] for m in members)
            per_peer = (per_member - lone) / (size - 1)
            results["clusters"][str(size)] = {
                "member_cpu_ms_per_s_median": round(per_member * 1000, 3),
                "per_peer_cpu_ms_per_s": round(per_peer * 1000, 3),
                "per_peer_cpu_percent_of_a_core": round(per_peer * 100, 4),
            }
        # The verdict of the run, for the headline: the largest cluster measured.
        largest = results["clusters"][str(sizes[-1])]
        results["per_peer_cpu_ms_per_s"] = largest["per_peer_cpu_ms_per_s"]
        results["note"] = (
            "a watched peer costs 2 pings and 2 pongs per second each way (heartbeat 0.5 s) "
            "plus its share of gossip; /proc CPU time has 10 ms resolution"
        )
    finally:
        operator.shutdown()
        for m in baselines + [m for ms in clusters.values() for m in ms]:
            m.close()
    return results


def core_cpu(quick: bool) -> dict[str, Any]:
    """The sans-IO liveness table alone: CPU per peer per simulated second, in-process."""
    peers = 50
    seconds = 60.0 if quick else 600.0
    config = MembershipConfig()

    def drive(count: int) -> float:
        live = Liveness(config)
        names = [f"coterie://p{i}@127.0.0.1:{7000 + i}/user/node" for i in range(count)]
        live.sync(names, 0.0)
        now, step = 0.0, config.tick_interval
        started = time.process_time()
        while now < seconds:
            for effect in live.tick(now).effects:
                message = getattr(effect, "message", None)
                if type(message) is Ping:
                    live.on_pong(make_pong(message, effect.to, 1), now + 0.001)
            now += step
        return time.process_time() - started

    drive(peers)  # warm up
    idle = min(drive(0) for _ in range(3))
    busy = min(drive(peers) for _ in range(3))
    per_peer_s = (busy - idle) / peers / seconds
    return {
        "peers": peers,
        "simulated_seconds": seconds,
        "idle_cpu_s": round(idle, 4),
        "busy_cpu_s": round(busy, 4),
        "per_peer_cpu_us_per_s": round(per_peer_s * 1e6, 3),
    }


# ------------------------------------------------------------------ 2. detection time


class Collector(Actor):
    def __init__(self, log: list[tuple[float, str, Any]]) -> None:
        self.log = log

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if isinstance(message, MemberUnreachable | MemberUp):
            self.log.append((time.monotonic(), sender.path.text if sender else "?", message))
            return None
        return UNHANDLED


class DetectionRig:
    """Two observers of one profile; victims join, are watched, and are SIGKILLed."""

    def __init__(self, profile: str, operator: ActorSystem) -> None:
        self.profile = profile
        self.operator = operator
        self.config = akka_like_config() if profile == "akka" else MembershipConfig()
        self.events: list[tuple[float, str, Any]] = []
        self.collector = operator.spawn(Props(Collector, self.events), f"collector-{profile}")
        first = Member(f"{profile}-o0", "--profile", profile).started()
        second = Member(f"{profile}-o1", "--profile", profile, "--seed", first.address)
        self.observers = [first, second.started()]
        self.victims: list[Member] = []
        self.max_healthy_silence = 0.0
        self.killed: set[str] = set()
        wait_until(lambda: all_up(operator, [o.node for o in self.observers]), 20.0, "observers")
        for observer in self.observers:
            ref = operator.ref(membership_path(observer.node))
            ref.tell(Subscribe(self.collector.path.text))

    def add_victims(self, count: int, round_no: int) -> list[Member]:
        seed = self.observers[0].address
        args = ("--profile", self.profile, "--seed", seed)
        victims = start([Member(f"{self.profile}-v{round_no}-{i}", *args) for i in range(count)])
        self.victims += victims
        return victims

    def seen_up(self, victims: list[Member]) -> bool:
        up = {(s, e.node) for _, s, e in list(self.events) if isinstance(e, MemberUp)}
        return all((membership_path(o.node), v.node) in up for o in self.observers for v in victims)

    def poll_silences(self) -> None:
        for observer in self.observers:
            reply = (
                self.operator.ref(membership_path(observer.node))
                .ask(GetMembershipStatus(), 2.0)
                .result()
            )
            for row in reply.members:
                if row.node in self.killed or row.heartbeat_age is None or row.state != "up":
                    continue
                self.max_healthy_silence = max(self.max_healthy_silence, row.heartbeat_age)

    def detections(self, victim: Member, killed_at: float) -> list[float]:
        found = {}
        for t, source, event in list(self.events):
            if isinstance(event, MemberUnreachable) and event.node == victim.node:
                found.setdefault(source, t - killed_at)
        return list(found.values())

    def false_suspicions(self) -> int:
        return sum(
            1
            for _, _, e in list(self.events)
            if isinstance(e, MemberUnreachable) and e.node not in self.killed
        )

    def close(self) -> None:
        for member in self.observers + self.victims:
            member.close()


def detection_time(quick: bool) -> dict[str, Any]:
    kills = 3 if quick else 10
    per_round = 3 if quick else 5
    operator = ActorSystem("bench-detect", host="127.0.0.1")
    rigs = [DetectionRig("default", operator), DetectionRig("akka", operator)]
    samples: dict[str, list[float]] = {rig.profile: [] for rig in rigs}
    rng = random.Random(2024)
    try:
        round_no = 0
        while min(len(s) for s in samples.values()) < kills:
            round_no += 1
            todo = {r.profile: min(per_round, kills - len(samples[r.profile])) for r in rigs}
            batches = {r.profile: r.add_victims(todo[r.profile], round_no) for r in rigs}
            for rig in rigs:
                batch = batches[rig.profile]
                wait_until(lambda r=rig, b=batch: r.seen_up(b), 30.0, "victims up")
            # A steady history: the detector's two bootstrap samples are diluted below the
            # standard-deviation floor after about 10 heartbeats (Akka's profile: 1 s each).
            settle_until = time.monotonic() + 10 * max(r.config.heartbeat_interval for r in rigs)
            while time.monotonic() < settle_until:
                for rig in rigs:
                    rig.poll_silences()
                time.sleep(0.2)
            # Kill at random phases within one heartbeat of each other.
            plan = sorted(
                ((rng.uniform(0.0, 1.0), rig, v) for rig in rigs for v in batches[rig.profile]),
                key=lambda item: item[0],
            )
            kill_times: list[tuple[DetectionRig, Member, float]] = []
            t0 = time.monotonic()
            for offset, rig, victim in plan:
                time.sleep(max(0.0, t0 + offset - time.monotonic()))
                rig.killed.add(victim.node)
                kill_times.append((rig, victim, time.monotonic()))
                victim.kill()
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline and not all(
                len(rig.detections(v, k)) == len(rig.observers) for rig, v, k in kill_times
            ):
                for rig in rigs:
                    rig.poll_silences()
                time.sleep(0.1)
            for rig, victim, killed_at in kill_times:
                found = rig.detections(victim, killed_at)
                if len(found) != len(rig.observers):
                    raise RuntimeError(f"{victim.name} not detected by every observer in 15 s")
                samples[rig.profile].append(statistics.median(found))
    finally:
        for rig in rigs:
            rig.close()
        operator.shutdown()
    result: dict[str, Any] = {"kills_per_profile": kills, "observers_per_kill": 2}
    for rig in rigs:
        values = sorted(samples[rig.profile])
        config = rig.config
        result[rig.profile] = {
            "heartbeat_s": config.heartbeat_interval,
            "acceptable_pause_s": config.detector.acceptable_pause,
            "threshold": config.detector.threshold,
            "min_std_deviation_s": config.detector.min_std_deviation,
            "expected_silence_at_threshold_s": round(
                silence_at_threshold(config.heartbeat_interval, 0.0, config.detector), 3
            ),
            "detection_median_s": round(statistics.median(values), 3),
            "detection_min_s": round(values[0], 3),
            "detection_max_s": round(values[-1], 3),
            "detections_s": [round(v, 3) for v in values],
            "false_suspicions": rig.false_suspicions(),
            "longest_healthy_heartbeat_silence_s": round(rig.max_healthy_silence, 3),
        }
    ours, akka = result["default"]["detection_median_s"], result["akka"]["detection_median_s"]
    result["median_speedup_s"] = round(akka - ours, 3)
    result["median_ratio"] = round(ours / akka, 3)
    return result


# ------------------------------------------------------------------ 3. detector simulation


def detector_simulation(quick: bool) -> dict[str, Any]:
    hours = 1.0 if quick else 10.0
    trials = 100 if quick else 1000
    setups = [
        Setup("coterie_defaults", 0.5, 0.1, DetectorConfig(), regular_only=True),
        Setup("akka_defaults", 1.0, 0.1, AKKA_DEFAULTS),
        # Our heartbeat with Akka's stall tolerance: what the faster heartbeat alone buys.
        Setup(
            "coterie_heartbeat_akka_tolerance",
            0.5,
            0.1,
            DetectorConfig(acceptable_pause=3.0),
            regular_only=True,
        ),
    ]
    model = JitterModel()
    result: dict[str, Any] = {"model": model.__dict__, "healthy_hours": hours, "trials": trials}
    for setup in setups:
        outcome = simulate(setup, model, seed=7, healthy_hours=hours, trials=trials)
        summary = outcome.summary()
        summary["false_suspicions_per_hour"] = round(outcome.false_suspicions / hours, 3)
        summary["longest_tolerated_stall_s"] = round(longest_tolerated_stall(setup), 3)
        result[setup.name] = summary
    sweep: dict[str, dict[str, float]] = {}
    sweep_hours = hours / 2
    for stall_max in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
        swept = JitterModel(stall_max=stall_max)
        sweep[str(stall_max)] = {
            s.name: round(sim_false_suspicions(s, swept, 11, sweep_hours)[0] / sweep_hours, 2)
            for s in setups
        }
    result["false_suspicions_per_hour_by_longest_stall_s"] = sweep
    ours, akka = result["coterie_defaults"], result["akka_defaults"]
    result["detection_median_speedup_s"] = round(
        akka["detection_median"] - ours["detection_median"], 3
    )
    result["detection_median_ratio"] = round(ours["detection_median"] / akka["detection_median"], 3)
    return result


# ------------------------------------------------------------------ entry points


def run(quick: bool = False) -> dict[str, Any]:
    configure_logging("warning")
    return {
        "heartbeat_cpu": heartbeat_cpu(quick),
        "core_cpu": core_cpu(quick),
        "detection": detection_time(quick),
        "detector_sim": detector_simulation(quick),
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--member":
        raise SystemExit(_member_main(sys.argv[2:]))
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
