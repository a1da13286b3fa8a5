"""What the sans-IO Rapid core asks its host (actor shell or simulator) to do.

``Send`` and ``Log`` are the gossip membership's own effects (:mod:`membership.effects`); a
``Send`` here names the recipient *node* (its supervisor path) and the host delivers to that
node's Rapid membership actor. ``Publish`` hands an event to subscribers.
"""

from __future__ import annotations

from dataclasses import dataclass

from membership.effects import Log, Send
from membership.rapid.messages import RemovedFromCluster, ViewChange

RapidEvent = ViewChange | RemovedFromCluster


@dataclass(frozen=True, slots=True)
class Publish:
    event: RapidEvent


Effect = Send | Publish | Log

__all__ = ["Effect", "Log", "Publish", "RapidEvent", "Send"]
