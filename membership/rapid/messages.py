"""Wire messages of the Rapid-style membership protocol (tags ``rapid.*``), its events and its
status reply.

Every message between members names its sender (a node path) and the configuration it was sent
in, as ``epoch`` and ``config_id``: a receiver in another configuration never interprets it,
and answers an older one with the current view (anti-entropy, see :mod:`membership.rapid.view`).

Who sends what
--------------
* ``Probe``/``ProbeAck`` observer -> subject -> observer, every heartbeat: the edge detector's
  heartbeat. Answered whatever the configurations, since liveness is not about views.
* ``PreJoin`` joiner -> a seed: answered with ``JoinGateway`` (the joiner's K expected
  observers in the seed's configuration).
* ``JoinRequest`` joiner -> each of those observers: they announce it (an UP report).
* ``JoinRetry`` observer -> joiner: the configuration changed without it; start again.
* ``Gossip`` member -> a few random members, every gossip round while it has news: aggregated
  reports (ring masks per subject) and fast-round votes (voter bitsets per proposal).
* ``Phase1a``/``Phase1b``/``Phase2a``/``Phase2b``/``Decided``: the classic Paxos fallback.
* ``SyncRequest`` a member that saw a newer configuration -> the member that has it.
* ``ViewChain`` (the decided cuts since the receiver's view) or ``ViewSnapshot`` (the whole
  member list) -> a lagging member or a newly admitted joiner.
* ``Leave`` a member leaving gracefully -> its observers, who report it at once.

Bitsets travel as little-endian bytes (msgpack integers stop at 64 bits).
"""

from __future__ import annotations

from actors import message


@message("rapid.proposal")
class Proposal:
    """A cut: the members it removes or adds, sorted; ``pid`` is the hash of ``changes``."""

    pid: str
    changes: tuple[tuple[str, int], ...]


@message("rapid.vote_set")
class VoteSet:
    proposal: Proposal
    voters: bytes  # bit i: the member at index i of the configuration voted for it


# ------------------------------------------------------------------ edge failure detection


@message("rapid.probe")
class Probe:
    sender: str
    epoch: int
    config_id: str
    seq: int


@message("rapid.probe_ack")
class ProbeAck:
    sender: str
    incarnation: int
    epoch: int
    config_id: str
    seq: int


# ------------------------------------------------------------------ joining and leaving


@message("rapid.pre_join")
class PreJoin:
    node: str
    incarnation: int


@message("rapid.join_gateway")
class JoinGateway:
    sender: str
    epoch: int
    config_id: str
    observers: tuple[str, ...]  # the joiner's expected observer on each ring, in ring order


@message("rapid.join_request")
class JoinRequest:
    node: str
    incarnation: int
    epoch: int
    config_id: str
    rings: tuple[int, ...]  # the rings on which the receiver is the joiner's observer


@message("rapid.join_retry")
class JoinRetry:
    sender: str
    epoch: int
    reason: str


@message("rapid.leave")
class Leave:
    sender: str
    epoch: int
    config_id: str


# ------------------------------------------------------------------ dissemination


@message("rapid.gossip")
class Gossip:
    sender: str
    epoch: int
    config_id: str
    reports: tuple[tuple[str, int, int], ...]  # (node, incarnation, ring mask)
    votes: tuple[VoteSet, ...]


# ------------------------------------------------------------------ classic Paxos fallback


@message("rapid.phase1a")
class Phase1a:
    sender: str
    epoch: int
    config_id: str
    rank: tuple[int, int]


@message("rapid.phase1b")
class Phase1b:
    sender: str
    epoch: int
    config_id: str
    rank: tuple[int, int]
    promised: bool  # False: refused, `rank` is then the higher rank already promised
    vrnd: tuple[int, int]
    vval: Proposal | None


@message("rapid.phase2a")
class Phase2a:
    sender: str
    epoch: int
    config_id: str
    rank: tuple[int, int]
    value: Proposal


@message("rapid.phase2b")
class Phase2b:
    sender: str
    epoch: int
    config_id: str
    rank: tuple[int, int]


@message("rapid.decided")
class Decided:
    sender: str
    epoch: int
    config_id: str
    value: Proposal


# ------------------------------------------------------------------ anti-entropy


@message("rapid.sync_request")
class SyncRequest:
    sender: str
    epoch: int
    config_id: str


@message("rapid.view_chain")
class ViewChain:
    """The cuts decided from configuration (from_epoch, from_config_id) on; ``config_ids[i]``
    is the id of the configuration that ``cuts[i]`` produced."""

    sender: str
    from_epoch: int
    from_config_id: str
    cuts: tuple[Proposal, ...]
    config_ids: tuple[str, ...]


@message("rapid.view_snapshot")
class ViewSnapshot:
    sender: str
    epoch: int
    config_id: str
    members: tuple[tuple[str, int], ...]


# ------------------------------------------------------------------ events and status


@message("rapid.view_change")
class ViewChange:
    """Published on every configuration this member installs, in epoch order."""

    epoch: int
    config_id: str
    size: int
    joined: tuple[tuple[str, int], ...]
    removed: tuple[tuple[str, int], ...]
    via: str  # fast, classic, decided, sync, join, bootstrap


@message("rapid.removed_from_cluster")
class RemovedFromCluster:
    """This member learned that a configuration without it was decided."""

    epoch: int
    config_id: str


@message("rapid.get_status")
class GetRapidStatus:
    pass


@message("rapid.status")
class RapidStatus:
    node: str
    incarnation: int
    state: str
    epoch: int
    config_id: str
    size: int
    members: tuple[tuple[str, int], ...]
    counters: dict[str, int]


RAPID_PROTOCOL = (
    Probe,
    ProbeAck,
    PreJoin,
    JoinGateway,
    JoinRequest,
    JoinRetry,
    Leave,
    Gossip,
    Phase1a,
    Phase1b,
    Phase2a,
    Phase2b,
    Decided,
    SyncRequest,
    ViewChain,
    ViewSnapshot,
)
"""The messages a member's protocol core takes through ``RapidNode.step``."""
