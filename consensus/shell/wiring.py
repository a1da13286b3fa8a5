"""Wiring: what a role actor needs to reach the rest of its node and its peers, the clock and
the node's metrics.

The clock is wall time that cannot jump: it starts at the wall clock and then advances with the
monotonic clock, so entry timestamps look like wall time while election timers are immune to
clock adjustments (a wall clock stepped forward would otherwise fire every timer at once).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from consensus.shell.metrics import NodeMetrics

if TYPE_CHECKING:
    from actors import ActorRef


class SteadyClock:
    """Milliseconds, wall-clock based at start, monotonic afterwards."""

    def __init__(self) -> None:
        self._base_wall = time.time()
        self._base_mono = time.monotonic()

    def now_ms(self) -> int:
        return int((self._base_wall + time.monotonic() - self._base_mono) * 1000)


@dataclasses.dataclass(slots=True)
class Wiring:
    node_id: str
    supervisor: ActorRef
    writer: ActorRef
    state_machine: ActorRef
    peers: dict[str, ActorRef]  # node id -> the peer's node supervisor
    addresses: dict[str, str]  # node id -> "host:port", for leader hints given to clients
    clock: SteadyClock
    metrics: NodeMetrics = dataclasses.field(default_factory=lambda: NodeMetrics("-"))

    def address_of(self, node_id: str | None) -> str | None:
        if node_id is None:
            return None
        return self.addresses.get(node_id, node_id)
