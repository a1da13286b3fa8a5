"""Supervision strategies: what a parent does when a child fails.

This module is sans-IO: a strategy sees the failing child's name, the exception and the time,
and returns a :class:`Directive`. The actor cell carries the directive out.

One-for-one with a restart budget (at most `max_restarts` within `within_seconds`) is the
default: a child that keeps failing is stopped and the failure escalates to the parent, which
then fails itself and asks its own supervisor, up to the user guardian.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


class Directive(enum.Enum):
    RESUME = "resume"  # keep the instance and its state, drop the failing message
    RESTART = "restart"  # new instance from the props, same path and mailbox
    STOP = "stop"  # stop the child for good
    ESCALATE = "escalate"  # stop the child and fail the parent with the child's failure


Decider = Callable[[BaseException], Directive]


def restart_everything(_exc: BaseException) -> Directive:
    return Directive.RESTART


@dataclass
class OneForOne:
    """Decide per child; only the failing child is affected.

    The decider picks the directive for an exception; a RESTART beyond the budget becomes
    ESCALATE. Timestamps are seconds on any monotonic clock the caller uses.
    """

    max_restarts: int = 3
    within_seconds: float = 10.0
    decider: Decider = restart_everything
    _history: dict[str, deque[float]] = field(default_factory=dict, repr=False)

    def decide(self, child: str, exc: BaseException, now: float) -> Directive:
        directive = self.decider(exc)
        if directive is not Directive.RESTART:
            return directive
        restarts = self._history.setdefault(child, deque())
        while restarts and now - restarts[0] > self.within_seconds:
            restarts.popleft()
        if len(restarts) >= self.max_restarts:
            restarts.clear()
            return Directive.ESCALATE
        restarts.append(now)
        return Directive.RESTART

    def forget(self, child: str) -> None:
        """The child is gone: its restart history must not count against a new one."""
        self._history.pop(child, None)
