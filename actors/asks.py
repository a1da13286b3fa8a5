"""In-flight asks: the futures waiting for replies, by correlation id, and their expiry.

An ask registers its future here and gets a correlation id; the reply (local or remote) pops
it. Deadlines go into buckets of `granularity` seconds that one periodic sweep expires, so an
ask costs a dict insert and a list append instead of a timer object, a closure and a wake-up of
the scheduler thread. A completed ask leaves only its id in a bucket until the bucket is swept.
Timeouts therefore fire up to one granularity late, which no caller can tell from network delay.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from concurrent.futures import Future
from typing import Any

from actors.errors import AskError, AskTimeout
from actors.ref import settle


class PendingAsks:
    def __init__(self, granularity: float = 0.02) -> None:
        self.granularity = granularity
        self._entries: dict[int, tuple[Future[Any], str, str, float]] = {}
        self._buckets: dict[int, list[int]] = {}
        self._bucket_keys: list[int] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self, future: Future[Any], target: str, message_type: str, timeout: float, now: float
    ) -> int:
        correlation = next(self._ids)
        self._entries[correlation] = (future, target, message_type, timeout)
        key = math.ceil((now + timeout) / self.granularity)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                self._buckets[key] = bucket = []
                heapq.heappush(self._bucket_keys, key)
            bucket.append(correlation)
        return correlation

    def pop(self, correlation: int) -> tuple[Future[Any], str, str, float] | None:
        """The ask's entry if it is still waiting (then it is no longer), else None."""
        return self._entries.pop(correlation, None)

    def expire_due(self, now: float) -> int:
        """Fail every ask whose deadline has passed; returns how many expired."""
        tick = now / self.granularity
        due: list[int] = []
        with self._lock:
            while self._bucket_keys and self._bucket_keys[0] <= tick:
                due.extend(self._buckets.pop(heapq.heappop(self._bucket_keys)))
        expired = 0
        for correlation in due:
            entry = self._entries.pop(correlation, None)
            if entry is not None:
                future, target, message_type, timeout = entry
                settle(
                    future, error=AskTimeout(target, message_type, f"no reply within {timeout}s")
                )
                expired += 1
        return expired

    def fail(self, correlations: list[int], error_type: type[AskError], reason: str) -> None:
        for correlation in correlations:
            entry = self._entries.pop(correlation, None)
            if entry is not None:
                future, target, message_type, _timeout = entry
                settle(future, error=error_type(target, message_type, reason))

    def fail_all(self, error_type: type[AskError], reason: str) -> None:
        self.fail(list(self._entries), error_type, reason)
