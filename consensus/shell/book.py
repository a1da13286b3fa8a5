"""Book: everything a role actor needs besides the core's own state, moved with the core from
one role actor to the next so a role change loses no client and no message.

It holds who is waiting for what (client commands by the log entry that carries them, reads
by request id), the client commands gathered for the next entry, and the outgoing messages
held back until the hard state they depend on is durable.

Client commands reach the core in batches: every :class:`Waiter` queued since the leader's
last ``Flush`` goes into one log entry (``consensus.shell.batching``), proposed to the core
under a request id of the book's own (``e<n>``). When the leader hands the entry to the state
machine committed, its waiters travel with it and the state machine answers them as soon as
the entry is applied (:func:`answer`), two actor hops before the core would report the
results; an entry the core refuses or finds superseded is answered from the core's result.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Any

from consensus.messages import ClientResponse
from consensus.shell.protocol import ClientBatchResponse

if TYPE_CHECKING:
    from actors.actor import Reply
    from consensus.node import RaftNode
    from consensus.shell.membership_changes import RemovalWatch


@dataclasses.dataclass(slots=True)
class Waiter:
    """One client ask: a ``ClientBatch`` (``request_id`` None) or a single ``ClientCommand``."""

    reply: Reply
    payloads: list[bytes]
    request_id: str | None = None
    size: int = 0  # bytes of the payloads


@dataclasses.dataclass(slots=True)
class Book:
    core: RaftNode
    # entry request id (given to the core) -> the asks its commands came from, in order
    waiting: dict[str, list[Waiter]] = dataclasses.field(default_factory=dict)
    next_entry: int = 0
    # request ids of single ClientCommands in flight (a duplicate is refused)
    command_ids: set[str] = dataclasses.field(default_factory=set)
    reads: dict[str, tuple[Reply, bytes]] = dataclasses.field(default_factory=dict)
    # client asks queued since the last Flush; proposed together as one entry
    proposals: list[Waiter] = dataclasses.field(default_factory=list)
    # messages waiting for a hard-state write (a vote must not leave before it is durable)
    held: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    hard_state_writes: int = 0
    generation: int = 0  # how many role actors this book has passed through
    # (last index, perf_counter) of appends handed to the writer, for the append latency
    appends: collections.deque[tuple[int, float]] = dataclasses.field(
        default_factory=collections.deque
    )

    # membership change id given to the core ("m:" + the request's id) -> where its answer goes
    changes: dict[str, Reply] = dataclasses.field(default_factory=dict)
    removal: RemovalWatch | None = None  # set by the first role actor

    def entry_id(self) -> str:
        self.next_entry += 1
        return f"e{self.next_entry}"


def answer(
    group: list[Waiter],
    ok: bool,
    index: int,
    results: Any,
    error: str | None,
    hint: str | None,
) -> None:
    """Answer every ask whose commands one entry carried: ``results`` is the entry's list of
    per-command results, split among the asks in order; anything else (a refusal, an entry
    the state machine could not split) is every command's outcome."""
    total = sum(len(waiter.payloads) for waiter in group)
    if not ok or type(results) is not list or len(results) != total:
        results = [results] * total
    position = 0
    for waiter in group:
        n = len(waiter.payloads)
        part = results[position : position + n]
        position += n
        if waiter.request_id is None:
            waiter.reply.success(ClientBatchResponse(ok, index, part, error, hint))
        else:
            waiter.reply.success(ClientResponse(waiter.request_id, ok, index, part[0], error, hint))
