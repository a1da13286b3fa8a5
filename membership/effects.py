"""What the sans-IO membership core asks its actor shell to do.

The core never sends, logs or touches a ref itself: every call returns a list of these, in the
order they must happen, and the shell (``membership.actor``) carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from membership.messages import LeaveResult, MemberEvent


@dataclass(frozen=True, slots=True)
class Send:
    """Tell `message` to the actor at path `to`."""

    to: str
    message: Any


@dataclass(frozen=True, slots=True)
class Publish:
    """Tell `event` to every subscriber."""

    event: MemberEvent


@dataclass(frozen=True, slots=True)
class ResolveRef:
    """(Re)create the ref to the node supervisor at `node`; pings to it go through that ref."""

    node: str


@dataclass(frozen=True, slots=True)
class EvictRef:
    """Drop the ref to `node`: stale (no pong within the ref TTL) or no longer watched."""

    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class Log:
    """One line of the node's story: ``event`` is the message, ``fields`` its context."""

    event: str
    level: str = "info"
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LeaveDone:
    """The graceful leave finished: answer whoever asked for it."""

    result: LeaveResult


Effect = Send | Publish | ResolveRef | EvictRef | Log | LeaveDone
