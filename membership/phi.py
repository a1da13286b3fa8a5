"""The phi accrual failure detector (Hayashibara et al., as in Akka and Cassandra), sans-IO.

Theory of operation
-------------------
A binary "alive/dead after N seconds" timeout is either slow or twitchy. The accrual detector
instead keeps a bounded window of recent heartbeat *inter-arrival* times and models them as a
normal distribution. Asked at time ``now`` how suspicious the silence since the last heartbeat
is, it answers with

    phi = -log10(P(an interval at least this long))

so phi = 1 means a 10 % chance the peer is merely late, phi = 8 one chance in 10^8. A peer is
*suspected* once phi reaches the threshold and *recovers* when a heartbeat brings phi below it;
:meth:`PhiAccrualDetector.check` reports both transitions, once each.

Two settings keep it calm on a real network, exactly as in Akka:

* ``acceptable_pause`` is added to the mean, so a stall of that length (a GC pause, a busy
  GIL, a scheduler hiccup) raises no suspicion at all;
* ``min_std_deviation`` floors the standard deviation: perfectly regular heartbeats would
  otherwise make the distribution a spike and a few milliseconds of lateness look fatal.

The window starts with two synthetic samples around ``first_heartbeat_estimate`` (mean +- a
quarter of it), so a peer that never answers is suspected too, after about the time a real one
would have been.

Numerics. The tail probability uses the logistic approximation of the normal CDF that Akka uses
(``P = 1 / (1 + e^z)``, ``z = y (1.5976 + 0.070566 y^2)``, ``y`` the standardised silence). Then
``phi = log10(1 + e^z)``, computed as a softplus that never overflows or underflows: for a long
silence phi grows like ``z / ln 10`` instead of jumping to infinity when ``e^-z`` underflows,
so phi stays a finite, comparable number for operators. Window sums are kept relative to a
shift (the first sample) so the variance does not cancel catastrophically, clamped at zero, and
recomputed exactly every time the window has turned over once, so rounding never accumulates.

Nothing here reads a clock: every call takes ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

_LN10 = math.log(10.0)


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of one detector; see the module docstring for what each one buys."""

    threshold: float = 8.0
    max_sample_size: int = 200
    min_std_deviation: float = 0.1
    acceptable_pause: float = 1.5
    first_heartbeat_estimate: float = 0.5  # the membership default heartbeat interval

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be positive, got {self.threshold}")
        if self.max_sample_size < 2:
            raise ValueError(f"max_sample_size must be at least 2, got {self.max_sample_size}")
        if not self.min_std_deviation > 0:
            raise ValueError(f"min_std_deviation must be positive, got {self.min_std_deviation}")
        if not self.acceptable_pause >= 0:
            raise ValueError(f"acceptable_pause must be >= 0, got {self.acceptable_pause}")
        if not self.first_heartbeat_estimate > 0:
            raise ValueError(
                f"first_heartbeat_estimate must be positive, got {self.first_heartbeat_estimate}"
            )


# Akka Cluster's failure-detector defaults (akka.cluster.failure-detector): heartbeat-interval
# 1 s, threshold 8, max-sample-size 1000, min-std-deviation 100 ms, acceptable-heartbeat-pause
# 3 s; the first-heartbeat estimate is the heartbeat interval.
AKKA_DEFAULTS = DetectorConfig(
    threshold=8.0,
    max_sample_size=1000,
    min_std_deviation=0.1,
    acceptable_pause=3.0,
    first_heartbeat_estimate=1.0,
)


def phi(elapsed: float, mean: float, std_deviation: float) -> float:
    """-log10 of the probability that a heartbeat interval is longer than `elapsed`.

    `mean` already includes the acceptable pause; `std_deviation` must be positive.
    """
    y = (elapsed - mean) / std_deviation
    z = y * (1.5976 + 0.070566 * y * y)
    # phi = log10(1 + e^z) = softplus(z) / ln 10, split by sign so exp never overflows.
    if z > 0.0:
        return (z + math.log1p(math.exp(-z))) / _LN10
    return math.log1p(math.exp(z)) / _LN10


# phi when the silence equals the mean: z = 0, log10(1 + e^0).
_PHI_AT_MEAN = math.log10(2.0)


def silence_at_threshold(
    mean_interval: float, std_deviation: float, config: DetectorConfig
) -> float:
    """How long after the last heartbeat phi reaches the threshold, for steady heartbeats.

    With a history of mean `mean_interval` and deviation `std_deviation`, this is the time a
    crash takes to be suspected when it happens right after a heartbeat (plus up to one
    check interval). Solved by bisection on the same `phi` the detector uses.
    """
    mean = mean_interval + config.acceptable_pause
    std = max(std_deviation, config.min_std_deviation)
    low, high = mean, mean + std
    while phi(high, mean, std) < config.threshold:
        high = mean + 2 * (high - mean)
    for _ in range(100):
        middle = (low + high) / 2
        if phi(middle, mean, std) < config.threshold:
            low = middle
        else:
            high = middle
    return high


class _Window:
    """A bounded window of intervals with O(1) mean and variance.

    Sums are of (x - shift), the shift being a typical value, so the variance is a difference
    of small numbers rather than of two nearly equal large ones.
    """

    __slots__ = ("_shift", "_size", "_sum", "_sum_sq", "_turnover", "_values")

    def __init__(self, size: int, shift: float) -> None:
        self._size = size
        self._shift = shift
        self._values: deque[float] = deque()
        self._sum = 0.0
        self._sum_sq = 0.0
        self._turnover = 0

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: float) -> None:
        if len(self._values) == self._size:
            old = self._values.popleft() - self._shift
            self._sum -= old
            self._sum_sq -= old * old
            self._turnover += 1
        self._values.append(value)
        d = value - self._shift
        self._sum += d
        self._sum_sq += d * d
        if self._turnover >= self._size:
            self._recompute()

    def _recompute(self) -> None:
        # Subtracting evicted values leaves rounding behind; a window's worth of evictions
        # is the point at which an exact recomputation costs no more than the updates did.
        shifted = [v - self._shift for v in self._values]
        self._sum = math.fsum(shifted)
        self._sum_sq = math.fsum(d * d for d in shifted)
        self._turnover = 0

    @property
    def mean(self) -> float:
        return self._shift + self._sum / len(self._values)

    @property
    def std_deviation(self) -> float:
        n = len(self._values)
        m = self._sum / n
        return math.sqrt(max(0.0, self._sum_sq / n - m * m))


class Verdict(Enum):
    """A change of the detector's opinion, reported once per change."""

    SUSPECTED = "suspected"
    RECOVERED = "recovered"


class PhiAccrualDetector:
    """Failure detector of one monitored peer.

    Feed it :meth:`heartbeat` on every heartbeat (the first call starts the clock), ask it
    :meth:`phi` whenever, and call :meth:`check` periodically to learn of suspicion and
    recovery.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        estimate = config.first_heartbeat_estimate
        self._intervals = _Window(config.max_sample_size, estimate)
        # Bootstrap: a plausible distribution before the first real interval is known.
        self._intervals.add(estimate - estimate / 4)
        self._intervals.add(estimate + estimate / 4)
        self._last: float | None = None
        self.suspected = False

    @property
    def last_heartbeat(self) -> float | None:
        return self._last

    @property
    def samples(self) -> int:
        return len(self._intervals)

    @property
    def mean_interval(self) -> float:
        return self._intervals.mean

    @property
    def std_deviation(self) -> float:
        return self._intervals.std_deviation

    def heartbeat(self, now: float, *, sample: bool = True) -> None:
        """Record a heartbeat arriving at `now`.

        With ``sample=False`` the clock restarts without the interval entering the history:
        the caller knows the interval measures an outage or a burst of queued replies, not
        the heartbeat rhythm, and must not teach the detector that such gaps are normal.
        """
        last = self._last
        if last is not None and sample and now >= last:
            self._intervals.add(now - last)
        if last is None or now > last:
            self._last = now

    def phi(self, now: float) -> float:
        """Suspicion level at `now`; 0 before the first heartbeat."""
        last = self._last
        if last is None:
            return 0.0
        mean = self._intervals.mean + self.config.acceptable_pause
        std = max(self._intervals.std_deviation, self.config.min_std_deviation)
        return phi(max(0.0, now - last), mean, std)

    def is_available(self, now: float) -> bool:
        last = self._last
        # phi grows with the silence and is log10(2) when the silence equals the mean
        # interval (plus pause): anything shorter is available without the logarithms.
        # Most checks are such, and a 10,000-member simulation makes millions of them.
        if (
            last is not None
            and self.config.threshold > _PHI_AT_MEAN
            and now - last <= self._intervals.mean + self.config.acceptable_pause
        ):
            return True
        return self.phi(now) < self.config.threshold

    def check(self, now: float) -> Verdict | None:
        """Update the suspected flag; return the change, if any."""
        available = self.is_available(now)
        if self.suspected and available:
            self.suspected = False
            return Verdict.RECOVERED
        if not self.suspected and not available:
            self.suspected = True
            return Verdict.SUSPECTED
        return None

    def forgive(self, seconds: float) -> None:
        """Move the last heartbeat `seconds` later: the *observer* was paused that long, so the
        missing heartbeats say nothing about the peer (we were not even asking)."""
        if self._last is not None and seconds > 0:
            self._last += seconds
