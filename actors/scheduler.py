"""The system's timer thread: one-shot and repeating tasks, ask timeouts.

One thread keeps a heap of deadlines on the monotonic clock. Tasks must be quick (they tell an
actor or settle a future); anything slow belongs in an actor. A task that raises is logged and
does not stop the scheduler.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("coterie.scheduler")


class Cancellable:
    """Handle of a scheduled task; `cancel()` is idempotent and thread-safe."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(self, name: str = "coterie-scheduler") -> None:
        self._heap: list[tuple[float, int, Callable[[], None], Cancellable, float | None]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def schedule_once(self, delay: float, task: Callable[[], None]) -> Cancellable:
        return self._push(time.monotonic() + max(0.0, delay), task, None)

    def schedule_repeatedly(
        self, initial_delay: float, interval: float, task: Callable[[], None]
    ) -> Cancellable:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        return self._push(time.monotonic() + max(0.0, initial_delay), task, interval)

    def _push(
        self, deadline: float, task: Callable[[], None], interval: float | None
    ) -> Cancellable:
        handle = Cancellable()
        with self._cond:
            if not self._running:
                handle.cancel()
                return handle
            heapq.heappush(self._heap, (deadline, next(self._seq), task, handle, interval))
            if self._heap[0][3] is handle:
                self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if not self._running:
                    return
                deadline, _, task, handle, interval = heapq.heappop(self._heap)
                if interval is not None and not handle.cancelled:
                    # Fixed-rate from the previous deadline, but never a burst of catch-ups
                    # after a long pause (a SIGSTOPped process would otherwise fire N times).
                    following = max(deadline + interval, time.monotonic())
                    heapq.heappush(self._heap, (following, next(self._seq), task, handle, interval))
            if handle.cancelled:
                continue
            try:
                task()
            except Exception:
                log.exception("scheduled task failed", task=getattr(task, "__qualname__", task))

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._running = False
            self._heap.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
