"""The membership protocol's wire messages, events and status replies.

Who sends what
--------------
* ``Ping`` membership actor -> a peer's *node supervisor* (``.../user/node``), every heartbeat.
* ``Pong`` node supervisor -> the pinging membership actor. It names the supervisor path it
  answers for; the pinger's liveness table is keyed by exactly that path.
* ``Join`` joining membership actor -> a seed's membership actor (``.../user/node/membership``).
* ``Welcome`` the member that accepted a join -> the joiner's membership actor: the member list.
* ``Gossip`` membership actor <-> membership actor: the full member list, pushed to everyone on
  a local decision, to one peer per gossip interval, and sent back when the receiver knows more.
* ``Subscribe``/``Unsubscribe`` any actor -> a membership actor; events then go to the subscriber:
  ``MemberUp``, ``MemberUnreachable``, ``MemberReachable``, ``MemberRemoved``.
* ``GetMembershipStatus`` anyone -> a membership actor (ask): answered with ``MembershipStatus``.
* ``LeaveCluster`` anyone -> a membership actor (ask): answered with ``LeaveResult`` once the
  other members acknowledged the leave (or the leave timeout passed).

Member names are node supervisor paths, ``coterie://<system>@<host>:<port>/user/node``.
"""

from __future__ import annotations

from actors import message

# ------------------------------------------------------------------ liveness


@message("membership.ping")
class Ping:
    seq: int


@message("membership.pong")
class Pong:
    supervisor: str  # the path of the supervisor that answers: the pinger's table key
    incarnation: int
    seq: int


# ------------------------------------------------------------------ join, gossip, leave


@message("membership.member_info")
class MemberInfo:
    """One member as gossiped: status is one of joining, up, leaving, down, removed."""

    node: str
    incarnation: int
    status: str
    reason: str


@message("membership.join")
class Join:
    node: str
    incarnation: int


@message("membership.welcome")
class Welcome:
    sender: str
    members: list[MemberInfo]


@message("membership.gossip")
class Gossip:
    sender: str
    members: list[MemberInfo]


@message("membership.leave_cluster")
class LeaveCluster:
    """Ask a node's membership actor to leave the cluster gracefully."""


@message("membership.leave_result")
class LeaveResult:
    acknowledged_by: list[str]
    missing: list[str]


# ------------------------------------------------------------------ events


@message("membership.subscribe")
class Subscribe:
    """Receive membership events at `subscriber` (a path), or at the sender when it is ""."""

    subscriber: str = ""


@message("membership.unsubscribe")
class Unsubscribe:
    subscriber: str = ""


@message("membership.member_up")
class MemberUp:
    node: str
    incarnation: int


@message("membership.member_unreachable")
class MemberUnreachable:
    node: str
    phi: float


@message("membership.member_reachable")
class MemberReachable:
    node: str


@message("membership.member_removed")
class MemberRemoved:
    node: str
    reason: str  # "left", "down" or "restarted" (a newer incarnation joined)
    previous: str  # the member's state before removal


MemberEvent = MemberUp | MemberUnreachable | MemberReachable | MemberRemoved


# ------------------------------------------------------------------ status for operators


@message("membership.get_status")
class GetMembershipStatus:
    pass


@message("membership.member_row")
class MemberRow:
    node: str
    incarnation: int
    state: str
    reason: str
    phi: float | None  # None for this node and for members no longer monitored
    heartbeat_age: float | None  # seconds since the last pong; None if none yet
    rtt: float | None  # round trip of the latest answered ping
    ref_resolved: bool
    evictions: int


@message("membership.status")
class MembershipStatus:
    node: str
    incarnation: int
    state: str
    members: list[MemberRow]
    counters: dict[str, int]
