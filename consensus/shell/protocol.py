"""The messages of a Raft node's actor shell: what clients and operators send to a node, and
what the shell's own actors tell each other.

Clients talk to ``/user/node`` (the node supervisor) with asks: a :class:`ClientBatch` (many
commands, the client's normal way) is answered by one :class:`ClientBatchResponse`, a single
``ClientCommand`` by a ``ClientResponse``, a :class:`ClientQuery` by a :class:`QueryResponse`,
a :class:`StatusRequest` by a :class:`NodeStatus`. Leader hints in answers are the leader's
actor-system address (``host:port``), so a client given any node can follow them.

The messages below the line never leave the process; they carry live objects (the core, reply
handles) between the supervisor and its role actors, so they are plain dataclasses.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from actors import message

if TYPE_CHECKING:
    from actors import ActorRef
    from actors.actor import Reply
    from consensus.shell.book import Book


@message("node.client_batch")
class ClientBatch:
    """Commands from one client, applied in this order. The leader puts a whole batch in one
    log entry (never splitting it), so its commands share one fate: all applied or none."""

    payloads: list[bytes]


@message("node.client_batch_response")
class ClientBatchResponse:
    """The outcome of a :class:`ClientBatch`: on success ``results`` holds one result per
    command, in order, and ``index`` is the log index of the entry that carried them;
    otherwise ``error`` says why (``not_leader`` and the like, with ``leader_hint``)."""

    ok: bool
    index: int
    results: list[Any]
    error: str | None
    leader_hint: str | None


@message("node.query")
class ClientQuery:
    """A read of the state machine. ``stale`` reads are served by any node from what it has
    applied, with no leadership check; otherwise only the leader answers, linearizably."""

    request_id: str
    payload: bytes
    stale: bool = False


@message("node.query_response")
class QueryResponse:
    request_id: str
    ok: bool
    index: int  # the applied index the answer reflects
    result: Any
    error: str | None
    leader_hint: str | None


@message("node.status_request")
class StatusRequest:
    """Ask a node for its :class:`NodeStatus`."""

    detail: bool = False


@message("node.status")
class NodeStatus:
    node_id: str
    role: str
    role_actor: str  # path of the role actor that owns the core now
    term: int
    leader: str | None
    first_index: int
    last_index: int
    commit_index: int
    applied_index: int


@message("node.campaign")
class Campaign:
    """Operator request: start an election on this node now."""

    reason: str = "operator request"


@message("node.transfer_leadership")
class TransferLeadership:
    """Operator request to the leader: hand leadership to ``target`` (a node id; empty for the
    most caught-up follower) once its log is caught up. Answered with a :class:`NodeStatus`
    at once; the transfer itself follows."""

    target: str


# ---------------------------------------------------------------- local to one process


@dataclasses.dataclass(slots=True)
class Forwarded:
    """A message the supervisor hands to the active role actor, with where its answer goes."""

    message: Any
    sender: ActorRef | None
    reply: Reply | None


@dataclasses.dataclass(slots=True)
class Handoff:
    """A role actor's last word: the core moved to ``role``; here are the core and its book."""

    book: Book
    reason: str


@dataclasses.dataclass(slots=True)
class Bounced:
    """A message a retiring role actor received after it handed the core off."""

    forwarded: Forwarded


@dataclasses.dataclass(slots=True)
class Retire:
    """Supervisor to an old role actor: everything forwarded to you before this is bounced."""


@dataclasses.dataclass(slots=True)
class Retired:
    pass


@dataclasses.dataclass(slots=True)
class Tick:
    pass


@dataclasses.dataclass(slots=True)
class Flush:
    """Self-message that closes a batch of client commands: every command queued before it
    goes to the core as one proposal (adaptive batching, no timer)."""


@dataclasses.dataclass(slots=True)
class Apply:
    """Committed entries for the state machine actor, in order; ``waiters`` maps the index of
    an entry this node proposed to the client asks its commands came from, which the state
    machine answers once it applied the entry."""

    entries: list[Any]
    waiters: dict[int, list[Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class Applied:
    """The state machine applied up to ``index``; ``results`` maps the index of each command
    entry whose asks it did not answer itself to the list of its commands' results."""

    index: int
    results: dict[int, Any]
