"""A seeded synthetic-jitter simulation of heartbeats, to compare detector configurations.

Used by the tests and the benchmark to answer two questions about a configuration (heartbeat
interval, how often phi is checked, detector settings) under one jitter model:

* how often does it suspect a healthy peer (false suspicions per simulated hour)?
* how long after a crash does it suspect the peer (detection time distribution)?

The jitter model (:class:`JitterModel`) describes the heartbeat path as the membership actor
sees it: the pinger's timer fires a little late (exponential), the ping and pong cross the
network (log-normal round trip), and the *observed* process sometimes stalls (a GC pause, CPU
starvation, a busy GIL): stalls start as a Poisson process, last a log-uniform time between
``stall_min`` and ``stall_max``, and hold every pong until the stall ends (so they then arrive
in a burst). The stall schedule is drawn from its own random stream, so two configurations
simulated with the same seed face exactly the same stalls, whatever their heartbeat rate.

What to expect from the comparison: for a stall of length S beginning at a random moment
between heartbeats, the detector fires iff S exceeds the silence at the threshold minus the time
since the last heartbeat, and a crash is detected after exactly that silence minus that time. So
P(a stall S is suspected) = P(a crash is detected within S): no setting detects crashes sooner
without suspecting some stalls that a slower one forgives. The comparison therefore reports the
detection distribution, the longest stall tolerated, and false suspicions across stall lengths.

This is a tool, not protocol: it owns its random streams (seeded) and never reads a clock.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from dataclasses import asdict, dataclass

from membership.phi import DetectorConfig, PhiAccrualDetector, Verdict


@dataclass(frozen=True)
class JitterModel:
    timer_lateness_mean: float = 0.002
    rtt_median: float = 0.001
    rtt_sigma: float = 0.7
    stalls_per_second: float = 1 / 20
    stall_min: float = 0.010
    stall_max: float = 1.5


@dataclass(frozen=True)
class Setup:
    """One configuration under test.

    ``regular_only`` is coterie's sampling rule (:mod:`membership.liveness`): only a pong to a
    ping sent after the previous pong arrived adds an interval to the history, so the burst of
    replies after a stall does not. Akka samples every heartbeat (``False``).
    """

    name: str
    heartbeat_interval: float
    check_interval: float
    detector: DetectorConfig
    regular_only: bool = False


@dataclass(frozen=True)
class Outcome:
    name: str
    healthy_hours: float
    false_suspicions: int
    max_healthy_phi: float
    trials: int
    detection_median: float
    detection_p90: float
    detection_p99: float
    detection_max: float
    detections: tuple[float, ...]

    def summary(self) -> dict[str, float | int | str]:
        data = asdict(self)
        del data["detections"]
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in data.items()}


class _Stalls:
    """The observed process's stall schedule: sorted, non-overlapping (start, end) pairs."""

    def __init__(self, model: JitterModel, rng: random.Random, horizon: float) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        t = 0.0
        log_min, log_max = math.log(model.stall_min), math.log(model.stall_max)
        while model.stalls_per_second > 0:
            t += rng.expovariate(model.stalls_per_second)
            if t >= horizon:
                break
            length = math.exp(rng.uniform(log_min, log_max))
            self.starts.append(t)
            self.ends.append(t + length)
            t += length

    def release(self, t: float) -> float:
        """When a message arriving at `t` is handled: at once, or at the end of a stall."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i >= 0 and t < self.ends[i]:
            return self.ends[i]
        return t


def _arrivals(
    setup: Setup, model: JitterModel, stalls: _Stalls, rng: random.Random, until: float
) -> list[tuple[float, float]]:
    """(pong arrival, ping sent) for pings sent every heartbeat interval from 0 to `until`,
    in arrival order."""
    arrivals = []
    mu = math.log(model.rtt_median)
    k = 0
    while True:
        sent = k * setup.heartbeat_interval + rng.expovariate(1 / model.timer_lateness_mean)
        if sent >= until:
            break
        rtt = rng.lognormvariate(mu, model.rtt_sigma)
        answered = stalls.release(sent + rtt / 2)
        arrivals.append((answered + rtt / 2, sent))
        k += 1
    arrivals.sort()
    return arrivals


def _feed(detector: PhiAccrualDetector, setup: Setup, arrival: float, sent: float) -> None:
    """One pong, sampled as the configuration's rule says."""
    last = detector.last_heartbeat
    regular = last is not None and sent >= last and not detector.suspected
    detector.heartbeat(arrival, sample=regular or not setup.regular_only)


def _checks_between(start: float, end: float, interval: float, phase: float) -> range:
    first = math.ceil((start - phase) / interval)
    last = math.floor((end - phase) / interval)
    return range(first, last + 1)


def false_suspicions(
    setup: Setup, model: JitterModel, seed: int, hours: float
) -> tuple[int, float]:
    """Suspicions of a healthy peer over `hours`, and the highest phi seen at a check."""
    horizon = hours * 3600.0
    stalls = _Stalls(model, random.Random(seed), horizon + 10)
    rng = random.Random(seed + 1)
    arrivals = _arrivals(setup, model, stalls, rng, horizon)
    detector = PhiAccrualDetector(setup.detector)
    phase = rng.uniform(0, setup.check_interval)
    suspicions = 0
    max_phi = 0.0
    previous = 0.0
    detector.heartbeat(0.0, sample=False)
    for arrival, sent in arrivals:
        # Checks falling strictly between two arrivals see the longest silences.
        for j in _checks_between(previous, arrival, setup.check_interval, phase):
            t = phase + j * setup.check_interval
            if t <= previous or t >= arrival:
                continue
            value = detector.phi(t)
            max_phi = max(max_phi, value)
            if detector.check(t) is Verdict.SUSPECTED:
                suspicions += 1
        _feed(detector, setup, arrival, sent)
        detector.check(arrival)
        previous = arrival
    return suspicions, max_phi


def detection_times(
    setup: Setup, model: JitterModel, seed: int, trials: int, warmup: float = 120.0
) -> list[float]:
    """Seconds from a crash to the first check that suspects it, over `trials` crashes."""
    results = []
    for trial in range(trials):
        stalls = _Stalls(model, random.Random(seed * 1_000_003 + trial), warmup + 60)
        rng = random.Random(seed * 1_000_003 + trial + 500_000)
        crash = warmup - rng.uniform(0, 10.0)
        arrivals = [a for a in _arrivals(setup, model, stalls, rng, crash) if a[0] <= crash]
        detector = PhiAccrualDetector(setup.detector)
        detector.heartbeat(0.0, sample=False)
        for arrival, sent in arrivals:
            _feed(detector, setup, arrival, sent)
            detector.check(arrival)
        phase = rng.uniform(0, setup.check_interval)
        j = math.ceil((crash - phase) / setup.check_interval)
        while True:
            t = phase + j * setup.check_interval
            if t >= crash and not detector.is_available(t):
                results.append(t - crash)
                break
            j += 1
    return results


def simulate(
    setup: Setup, model: JitterModel, seed: int, healthy_hours: float, trials: int
) -> Outcome:
    suspicions, max_phi = false_suspicions(setup, model, seed, healthy_hours)
    detections = detection_times(setup, model, seed, trials)
    ordered = sorted(detections)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return Outcome(
        name=setup.name,
        healthy_hours=healthy_hours,
        false_suspicions=suspicions,
        max_healthy_phi=max_phi,
        trials=trials,
        detection_median=statistics.median(ordered),
        detection_p90=pct(0.90),
        detection_p99=pct(0.99),
        detection_max=ordered[-1],
        detections=tuple(detections),
    )


def longest_tolerated_stall(setup: Setup, resolution: float = 0.01) -> float:
    """The longest stall of the observed node (beginning right after a heartbeat, with steady
    heartbeats before it) that raises no suspicion at any check."""
    detector = PhiAccrualDetector(setup.detector)
    t = 0.0
    detector.heartbeat(t, sample=False)
    for _ in range(500):
        t += setup.heartbeat_interval
        detector.heartbeat(t)
    low, high = 0.0, 60.0
    while high - low > resolution:
        stall = (low + high) / 2
        # Worst case: the stall begins just before a ping arrives, so the pong after the
        # previous one comes a whole interval plus the stall later.
        gap = setup.heartbeat_interval + stall
        if detector.is_available(t + gap):
            low = stall
        else:
            high = stall
    return low
