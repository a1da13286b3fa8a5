"""Book: everything a role actor needs besides the core's own state, moved with the core from
one role actor to the next so a role change loses no client and no message.

It holds who is waiting for what (client commands and reads by request id), the client
commands gathered for the next proposal batch, and the outgoing messages held back until the
hard state they depend on is durable.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.actor import Reply
    from consensus.messages import ClientCommand
    from consensus.node import RaftNode


@dataclasses.dataclass(slots=True)
class Book:
    core: RaftNode
    # request id -> where the answer goes
    commands: dict[str, Reply] = dataclasses.field(default_factory=dict)
    reads: dict[str, tuple[Reply, bytes]] = dataclasses.field(default_factory=dict)
    # client commands queued since the last Flush; proposed together as one batch
    proposals: list[ClientCommand] = dataclasses.field(default_factory=list)
    # messages waiting for a hard-state write (a vote must not leave before it is durable)
    held: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    hard_state_writes: int = 0
    generation: int = 0  # how many role actors this book has passed through
