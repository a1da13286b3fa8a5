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
    # The configuration in effect on this node (newest in its log, committed or not).
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    # Leader only: (node id, highest index known replicated there) of every other member.
    matches: tuple[tuple[str, int], ...] = ()


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


MEMBERSHIP_CHANGE_KINDS = ("add_learner", "promote", "remove")


@message("node.change_membership")
class ChangeMembership:
    """Operator request to the leader: change the cluster's membership by one server.

    ``kind`` is ``add_learner`` (``address`` is the new node's ``host:port``; with the core's
    ``auto_promote`` the leader promotes it by itself once it is within ``promote_lag``),
    ``promote`` (a caught-up learner becomes a voter) or ``remove``. Answered with a
    :class:`MembershipChangeResponse` once the configuration entry is committed and applied,
    or at once when refused (``not_leader`` with ``leader_hint``, ``config_change_in_progress``,
    ``learner_behind``, ``leadership_transfer`` while the leader hands over before removing
    itself: all retryable; ``invalid_membership_change`` or ``bad_request``: not).
    ``request_id`` must be unique per request."""

    request_id: str
    kind: str
    node_id: str
    address: str = ""


@message("node.change_membership_response")
class MembershipChangeResponse:
    request_id: str
    ok: bool
    index: int  # the configuration entry's log index, when ok
    error: str | None
    leader_hint: str | None
    detail: str = ""
    voters: tuple[str, ...] = ()  # the answering node's configuration
    learners: tuple[str, ...] = ()


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
class Removed:
    """Role actor to supervisor: this node's removal from the configuration is committed;
    its Raft stops. ``status`` is what the node answers status requests with from now on."""

    status: NodeStatus


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
