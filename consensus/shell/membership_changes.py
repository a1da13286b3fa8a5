"""Membership changes in the actor shell: operator requests over the wire, the address book
that follows the configuration, and a node that was removed retiring its Raft.

What it owns
------------
* :func:`request_change`: a :class:`~consensus.shell.protocol.ChangeMembership` ask reaching
  the active role actor becomes one ``core.change_membership`` call; the ask is answered
  (:func:`answer_change`) when the core reports the configuration entry applied, or at once
  when the core refuses (not leader, a change in progress, learner behind, a leadership
  transfer under way before the leader removes itself). An ``add_learner`` request also
  carries the addresses this node knows for current members, so the configuration entry
  records every member's address (a bootstrap configuration carries none) and the node being
  added, which knows nobody, can reach every member it may one day lead or vote with.
* :func:`follow_membership`: ``Ready.membership`` (a configuration took effect) updates the
  wiring's address book and peer refs, so a leader reaches a learner it has never heard of;
  :func:`learn_sender` also keeps the ref a peer message came from when its sender is unknown
  (a joining node answers the leader that adds it before it has read any configuration).
* :class:`RemovalWatch`: a node that was a member, is no member of the configuration in
  effect, and knows that configuration committed has been removed for good; the role actor
  then tells the supervisor :class:`~consensus.shell.protocol.Removed` and the supervisor
  stops the Raft (:func:`answer_removed` answers what still arrives). Waiting for the commit
  matters: an appended removal can still be cut from the log by a new leader, and the node
  would then be needed. It also waits until the removal is applied, so every client waiting
  on an entry before it has its answer; :func:`release_waiters` answers whatever else still
  waits (retryable ``not_leader``, or ``outcome_unknown`` for an entry of ours past the
  removal, which another leader may yet commit). A node that never was a member (joining,
  not yet added) is not removed: it waits.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from consensus.configuration import (
    AddLearner,
    Membership,
    MembershipChange,
    PromoteLearner,
    RemoveServer,
)
from consensus.messages import PEER_MESSAGES, ClientResponse
from consensus.shell.book import answer
from consensus.shell.protocol import (
    MEMBERSHIP_CHANGE_KINDS,
    ChangeMembership,
    ClientBatch,
    ClientBatchResponse,
    ClientQuery,
    MembershipChangeResponse,
    NodeStatus,
    QueryResponse,
    StatusRequest,
)
from consensus.shell.settings import supervisor_path

if TYPE_CHECKING:
    from actors import ActorRef, ActorSystem
    from actors.actor import Reply
    from consensus.node import RaftNode
    from consensus.ready import Ready
    from consensus.shell.book import Book
    from consensus.shell.wiring import Wiring

ERROR_BAD_REQUEST = "bad_request"
ERROR_DUPLICATE = "duplicate_request"
ERROR_REMOVED = "not_leader"  # a removed node leads nothing; the client tries another node
# Prefix of the request ids given to the core for changes: the book's own entry ids are
# "e<n>", so a client's change id can never be taken for an entry's, or the other way round.
CORE_ID_PREFIX = "m:"
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_ADDRESS = re.compile(r"[A-Za-z0-9.:\[\]-]+:(\d{1,5})\Z")


def change_of(request: ChangeMembership, wiring: Wiring, core: RaftNode) -> MembershipChange:
    """The core's change for ``request``; ValueError naming the bad field otherwise."""
    if request.kind not in MEMBERSHIP_CHANGE_KINDS:
        raise ValueError(
            f"kind: {request.kind!r} is not one of {', '.join(MEMBERSHIP_CHANGE_KINDS)}"
        )
    if not _NODE_ID.match(request.node_id):
        raise ValueError(f"node_id: {request.node_id!r} is not a node id")
    if request.kind == "add_learner":
        match = _ADDRESS.match(request.address)
        if match is None or not 0 < int(match.group(1)) < 65536:
            raise ValueError(f"address: {request.address!r} is not host:port")
        known = tuple(
            (member, wiring.addresses[member])
            for member in core.membership.members
            if member in wiring.addresses
        )
        return AddLearner(request.node_id, request.address, known)
    if request.kind == "promote":
        return PromoteLearner(request.node_id)
    return RemoveServer(request.node_id)


def request_change(
    book: Book, wiring: Wiring, request: ChangeMembership, reply: Reply | None, now: int
) -> Ready | None:
    """Hand ``request`` to the core; its answer goes to ``reply`` (see :func:`answer_change`)."""
    core = book.core
    if reply is None:
        return None  # a told request: nobody to answer, and changes are not fire-and-forget
    core_id = CORE_ID_PREFIX + request.request_id
    if core_id in book.changes:
        reply.success(_response(request.request_id, core, wiring, error=ERROR_DUPLICATE))
        return None
    try:
        change = change_of(request, wiring, core)
    except ValueError as exc:
        reply.success(
            _response(request.request_id, core, wiring, error=ERROR_BAD_REQUEST, detail=str(exc))
        )
        return None
    book.changes[core_id] = reply
    return core.change_membership(core_id, change, now)


def answer_change(book: Book, wiring: Wiring, response: ClientResponse) -> bool:
    """Answer the change ``response`` is about, if it is one; False if it is not."""
    reply = book.changes.pop(response.request_id, None)
    if reply is None:
        return False
    request_id = response.request_id.removeprefix(CORE_ID_PREFIX)
    hint = None if response.ok else wiring.address_of(response.leader_hint)
    detail = "" if response.ok or response.result is None else str(response.result)
    reply.success(
        MembershipChangeResponse(
            request_id,
            response.ok,
            response.index,
            response.error,
            hint,
            detail,
            book.core.membership.voters,
            book.core.membership.learners,
        )
    )
    return True


def _response(
    request_id: str, core: RaftNode, wiring: Wiring, *, error: str, detail: str = ""
) -> MembershipChangeResponse:
    return MembershipChangeResponse(
        request_id,
        False,
        0,
        error,
        wiring.address_of(core.leader_id),
        detail,
        core.membership.voters,
        core.membership.learners,
    )


# ---------------------------------------------------------------------------- addresses


def start(core: RaftNode, wiring: Wiring, system: ActorSystem) -> RemovalWatch:
    """At start-up: the addresses of the configuration the log holds (a member added since
    the cluster file was written is only there), and the removal watch."""
    follow_membership(wiring, system, core.membership)
    return RemovalWatch(core)


def follow_membership(wiring: Wiring, system: ActorSystem, membership: Membership) -> list[str]:
    """Record the addresses ``membership`` carries; returns the nodes whose address is new."""
    learned = []
    for node, address in membership.addresses:
        if node == wiring.node_id or (
            wiring.addresses.get(node) == address and node in wiring.peers
        ):
            continue
        wiring.addresses[node] = address
        wiring.peers[node] = system.ref(supervisor_path(node, address))
        learned.append(node)
    return learned


def learn_sender(wiring: Wiring, message: Any, sender: ActorRef | None) -> bool:
    """Keep the ref of a peer message's sender when we know no way to reach it yet."""
    if sender is None or not isinstance(message, PEER_MESSAGES):
        return False
    source = message.source
    if source in wiring.peers or source == wiring.node_id:
        return False
    wiring.peers[source] = sender
    return True


# ---------------------------------------------------------------------------- removal


class RemovalWatch:
    """Tells when this node has been removed for good (see the module docstring)."""

    __slots__ = ("announced", "node_id", "seen_member")

    def __init__(self, core: RaftNode) -> None:
        self.node_id = core.id
        configs = core.configs
        self.seen_member = any(
            core.id in membership.members for membership in (configs.base, *configs.memberships)
        )
        self.announced = False

    def saw(self, membership: Membership) -> None:
        if self.node_id in membership.members:
            self.seen_member = True

    def removed(self, core: RaftNode) -> bool:
        """True once, when the removal is known committed."""
        if self.announced or not self.seen_member:
            return False
        if self.node_id in core.membership.members:
            return False
        # Applied, not only committed: every client ask waiting on an entry up to the
        # removal is answered by the state machine before the Raft stops.
        if min(core.commit_index, core.applied_index) < core.configs.latest_index:
            return False
        self.announced = True
        return True


def release_waiters(book: Book) -> int:
    """Answer every ask still waiting in ``book`` as the Raft stops; returns how many."""
    proposed = {request_id for _, _, request_id in book.core.pending}
    count = 0
    for request_id, group in list(book.waiting.items()):
        error = "outcome_unknown" if request_id in proposed else ERROR_REMOVED
        answer(group, False, 0, None, error, None)
        count += len(group)
    book.waiting.clear()
    if book.proposals:
        answer(book.proposals, False, 0, None, ERROR_REMOVED, None)
        count += len(book.proposals)
        book.proposals = []
    for request_id, (reply, _payload) in book.reads.items():
        reply.success(QueryResponse(request_id, False, 0, None, ERROR_REMOVED, None))
    count += len(book.reads)
    book.reads.clear()
    for core_id, reply in book.changes.items():
        request_id = core_id.removeprefix(CORE_ID_PREFIX)
        reply.success(
            MembershipChangeResponse(request_id, False, 0, ERROR_REMOVED, None, "removed")
        )
    count += len(book.changes)
    book.changes.clear()
    return count


def removed_status(last: NodeStatus) -> NodeStatus:
    """What a removed node says about itself from now on: its last state, role ``removed``."""
    return dataclasses.replace(last, role="removed", leader=None, matches=())


def answer_removed(message: Any, status: NodeStatus) -> Any:
    """The answer of a node whose Raft stopped after its removal (None: nothing to say).
    Clients are sent on (``not_leader`` with no hint: they try another node)."""
    if isinstance(message, StatusRequest):
        return status
    if isinstance(message, ClientBatch):
        return ClientBatchResponse(False, 0, [], ERROR_REMOVED, None)
    if isinstance(message, ClientQuery):
        return QueryResponse(message.request_id, False, 0, None, ERROR_REMOVED, None)
    if isinstance(message, ChangeMembership):
        return MembershipChangeResponse(
            message.request_id, False, 0, ERROR_REMOVED, None, "this node was removed"
        )
    return None
