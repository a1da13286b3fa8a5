"""The follower's request window (entries asked for per ``GET /log``) and its retry backoff.

Sirius throttled catch-up with a TCP-Tahoe-like window; so does this: the window doubles on
each full, successful response while below the slow-start threshold, then grows by a fixed
step; a timeout halves it and lowers the threshold to the halved size, so a slow source is
not asked for more than it delivered in time. A response that returned fewer entries than
asked for (the follower caught up) leaves the window alone: it says nothing about capacity.

:class:`Backoff` spaces retries while the source is unreachable: exponential with full
jitter from a seeded ``random.Random``, reset by a success. Both are sans-IO: numbers in,
numbers out.
"""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass
class Window:
    """Entries per request. Call :meth:`on_success` / :meth:`on_timeout` after each one."""

    initial: int = 64
    minimum: int = 1
    maximum: int = 16384
    step: int = 64  # growth per success past the slow-start threshold
    size: int = 0
    threshold: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.initial <= self.maximum:
            raise ValueError(
                f"window: need 1 <= minimum ({self.minimum}) <= initial ({self.initial}) "
                f"<= maximum ({self.maximum})"
            )
        if self.step < 1:
            raise ValueError(f"window: step must be at least 1, got {self.step}")
        self.size = self.size or self.initial
        self.threshold = self.threshold or self.maximum

    def on_success(self, received: int) -> None:
        """A response arrived in time with `received` entries."""
        if received < self.size:
            return  # caught up: the source had no more, capacity unknown
        if self.size < self.threshold:
            self.size = min(self.size * 2, self.threshold, self.maximum)
        else:
            self.size = min(self.size + self.step, self.maximum)

    def on_timeout(self) -> None:
        """A request timed out: halve the window and remember where trouble started."""
        self.size = max(self.minimum, self.size // 2)
        self.threshold = max(self.minimum, self.size)


class Backoff:
    """Delays (seconds) between attempts to reach a source that is down."""

    def __init__(
        self, base: float = 0.05, cap: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff: need 0 < base ({base}) <= cap ({cap})")
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt after one more failure."""
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        # Full jitter, but never below half the ceiling: many followers restarting together
        # spread out, and none hammers the source.
        return ceiling / 2 + self.rng.random() * ceiling / 2

    def reset(self) -> None:
        self.failures = 0
