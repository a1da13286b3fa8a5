"""Member states, their legal transitions, gossip merging and the events they publish. Sans-IO.

Theory of operation
-------------------
Each node keeps a table of members keyed by node (supervisor) path. A member's state is one of

    joining -> up <-> unreachable -> leaving -> down -> removed

``joining``, ``up``, ``leaving``, ``down`` and ``removed`` are cluster-wide facts and are
gossiped. ``unreachable`` is this node's own opinion (its failure detector's), so it is never
gossiped: an unreachable member gossips as ``up``. Every change goes through
:meth:`MemberTable.transition`, checked against :data:`ALLOWED`; an illegal change is a bug
and raises :class:`~membership.errors.IllegalTransition`.

Gossip is a join-semilattice, so any order of merges converges to the same table:

* a higher incarnation (a restarted node) supersedes a lower one: the old one is removed
  with reason ``restarted``;
* within one incarnation the further-along status wins (joining < up < leaving < down <
  removed): a member's status never moves backwards;
* two removals agree on the larger reason string, only so that merges are deterministic.

A member never heard of that arrives already leaving, down or removed is recorded in that
state without any event (nobody was told it was up), so a stale "up" arriving afterwards
cannot resurrect it. Removed members stay as tombstones until pruned.

Events, in order per member: ``MemberUp``, then any number of ``MemberUnreachable`` /
``MemberReachable`` pairs, then ``MemberRemoved``. A member that was never announced up is
never announced at all: subscribers hear of a removal only for a member they heard was up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from membership.errors import IllegalTransition, ProtocolViolation
from membership.messages import (
    MemberEvent,
    MemberInfo,
    MemberReachable,
    MemberRemoved,
    MemberUnreachable,
    MemberUp,
)


class MemberState(Enum):
    JOINING = "joining"
    UP = "up"
    UNREACHABLE = "unreachable"
    LEAVING = "leaving"
    DOWN = "down"
    REMOVED = "removed"


_S = MemberState

ALLOWED: dict[MemberState, frozenset[MemberState]] = {
    _S.JOINING: frozenset({_S.UP, _S.LEAVING, _S.DOWN, _S.REMOVED}),
    _S.UP: frozenset({_S.UNREACHABLE, _S.LEAVING, _S.DOWN, _S.REMOVED}),
    _S.UNREACHABLE: frozenset({_S.UP, _S.LEAVING, _S.DOWN, _S.REMOVED}),
    _S.LEAVING: frozenset({_S.DOWN, _S.REMOVED}),
    _S.DOWN: frozenset({_S.REMOVED}),
    _S.REMOVED: frozenset(),
}

# Position in the gossip order; unreachable is local and gossips as up.
_RANK = {
    _S.JOINING: 0,
    _S.UP: 1,
    _S.UNREACHABLE: 1,
    _S.LEAVING: 2,
    _S.DOWN: 3,
    _S.REMOVED: 4,
}
_GOSSIPED = ("joining", "up", "leaving", "down", "removed")

LIVE = frozenset({_S.JOINING, _S.UP, _S.UNREACHABLE})
"""States of members that are watched, pinged and gossiped to."""


def gossip_status(state: MemberState) -> str:
    return "up" if state is _S.UNREACHABLE else state.value


@dataclass
class Member:
    node: str
    incarnation: int
    state: MemberState
    since: float  # when the current state began
    reason: str = ""  # why it was removed (or downed)
    announced: bool = False  # MemberUp was published
    phi_when_unreachable: float = 0.0

    def info(self) -> MemberInfo:
        return MemberInfo(self.node, self.incarnation, gossip_status(self.state), self.reason)


@dataclass(frozen=True)
class Change:
    """One applied transition; `old` is None for a member just learned of."""

    node: str
    incarnation: int
    old: MemberState | None
    new: MemberState
    reason: str
    event: MemberEvent | None


class MemberTable:
    def __init__(self, self_node: str, incarnation: int, now: float) -> None:
        self.self_node = self_node
        self.members: dict[str, Member] = {
            self_node: Member(self_node, incarnation, _S.JOINING, now)
        }

    # ------------------------------------------------------------------ queries

    @property
    def me(self) -> Member:
        return self.members[self.self_node]

    def get(self, node: str) -> Member | None:
        return self.members.get(node)

    def peers_in(self, states: frozenset[MemberState]) -> list[str]:
        """Other members in `states`, sorted (so every iteration order is deterministic)."""
        return sorted(
            node
            for node, member in self.members.items()
            if node != self.self_node and member.state in states
        )

    def infos(self) -> list[MemberInfo]:
        return [self.members[node].info() for node in sorted(self.members)]

    def knows_more_than(self, infos: list[MemberInfo]) -> bool:
        """Whether gossip `infos` lacks something this table knows (call after merging it)."""
        theirs = {info.node: info for info in infos}
        for node, member in self.members.items():
            info = theirs.get(node)
            if info is None:
                if member.state in LIVE:
                    return True
                continue  # our tombstone: they would ignore it anyway
            if (member.incarnation, _RANK[member.state], member.reason) != (
                info.incarnation,
                _GOSSIPED.index(info.status) if info.status in _GOSSIPED else -1,
                info.reason,
            ):
                return True
        return False

    def replay_events(self) -> list[MemberEvent]:
        """The current state as events, for a new subscriber."""
        events: list[MemberEvent] = []
        for node in sorted(self.members):
            member = self.members[node]
            if not member.announced or member.state is _S.REMOVED:
                continue
            events.append(MemberUp(node, member.incarnation))
            if member.state is _S.UNREACHABLE:
                events.append(MemberUnreachable(node, member.phi_when_unreachable))
        return events

    # ------------------------------------------------------------------ changes

    def transition(
        self, node: str, new: MemberState, now: float, reason: str = "", phi: float = 0.0
    ) -> Change:
        member = self.members[node]
        old = member.state
        if new not in ALLOWED[old]:
            raise IllegalTransition(node, old.value, new.value)
        member.state = new
        member.since = now
        if new in (_S.DOWN, _S.REMOVED) and reason:
            member.reason = reason
        event: MemberEvent | None = None
        if new is _S.UP and old is _S.JOINING:
            member.announced = True
            event = MemberUp(node, member.incarnation)
        elif new is _S.UNREACHABLE and member.announced:
            member.phi_when_unreachable = phi
            event = MemberUnreachable(node, phi)
        elif new is _S.UP and old is _S.UNREACHABLE and member.announced:
            event = MemberReachable(node)
        elif new is _S.REMOVED and member.announced:
            event = MemberRemoved(node, member.reason, old.value)
        return Change(node, member.incarnation, old, new, member.reason, event)

    def add(self, node: str, incarnation: int, now: float, up: bool = False) -> list[Change]:
        """A member just learned of, joining (and, if `up`, straight on to up)."""
        if node in self.members:
            raise IllegalTransition(node, self.members[node].state.value, "joining")
        self.members[node] = Member(node, incarnation, _S.JOINING, now)
        changes = [Change(node, incarnation, None, _S.JOINING, "", None)]
        if up:
            changes.append(self.transition(node, _S.UP, now))
        return changes

    def replace_incarnation(self, node: str, incarnation: int, now: float) -> list[Change]:
        """A newer incarnation of `node` appeared: the old one is removed, the new one joins."""
        changes = []
        if self.members[node].state is not _S.REMOVED:
            changes.append(self.transition(node, _S.REMOVED, now, reason="restarted"))
        del self.members[node]
        changes.extend(self.add(node, incarnation, now))
        return changes

    def merge(self, infos: list[MemberInfo], now: float) -> list[Change]:
        """Merge gossip; returns the changes it caused. Raises ProtocolViolation on bad input
        before changing anything."""
        for info in infos:
            if info.status not in _GOSSIPED:
                raise ProtocolViolation(f"unknown member status {info.status!r} for {info.node}")
        changes: list[Change] = []
        for info in infos:
            changes.extend(self._merge_one(info, now))
        return changes

    def _merge_one(self, info: MemberInfo, now: float) -> list[Change]:
        status = MemberState(info.status)
        member = self.members.get(info.node)
        if member is None:
            if status in (_S.JOINING, _S.UP):
                return self.add(info.node, info.incarnation, now, up=status is _S.UP)
            # Never knew it and it is already on its way out: remember it in that state
            # (silently: it was never announced) so that stale gossip saying it is up, arriving
            # later, cannot bring it back. Ignoring it would make merges order-dependent.
            self.members[info.node] = Member(
                info.node, info.incarnation, status, now, reason=info.reason
            )
            return [Change(info.node, info.incarnation, None, status, info.reason, None)]
        if info.incarnation < member.incarnation:
            return []  # stale news of an older incarnation
        if info.incarnation > member.incarnation:
            if info.node == self.self_node:
                # A newer process claims our name: this incarnation is finished.
                if member.state is _S.REMOVED:
                    return []
                return [self.transition(info.node, _S.REMOVED, now, reason="restarted")]
            changes = self.replace_incarnation(info.node, info.incarnation, now)
            return changes + self._merge_one(info, now)
        if _RANK[status] > _RANK[member.state]:
            return [self.transition(info.node, status, now, reason=info.reason)]
        if (
            _RANK[status] == _RANK[member.state]
            and status in (_S.DOWN, _S.REMOVED)
            and info.reason > member.reason
        ):
            member.reason = info.reason
        return []

    def prune(self, now: float, ttl: float) -> list[str]:
        """Forget removed members older than `ttl`; returns their names."""
        gone = [
            node
            for node, member in self.members.items()
            if node != self.self_node and member.state is _S.REMOVED and now - member.since > ttl
        ]
        for node in gone:
            del self.members[node]
        return gone
