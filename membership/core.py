"""The membership protocol of one node, sans-IO: join, gossip, leave, down, and what to tell
subscribers. The membership actor is a thin shell around it.

Theory of operation
-------------------
One object, three entry points, all taking ``now`` and returning a list of effects
(:mod:`membership.effects`) for the shell to carry out in order:

* :meth:`Membership.step` takes any protocol message (``Pong``, ``Join``, ``Welcome``,
  ``Gossip``);
* :meth:`Membership.tick` is called every ``tick_interval``: join retries, pings, ref eviction,
  failure detection, downing, periodic gossip, the leave timeout;
* :meth:`Membership.leave` starts a graceful leave.

Every member state change goes through :class:`~membership.members.MemberTable` (which checks
it against the transition table) and then :meth:`_applied`, the single place where changes
become log lines, published events, follow-up decisions and a resynchronised liveness table.

Who decides what
----------------
* *Join*: any member that is up accepts a ``Join``, adds the joiner as joining, welcomes it
  with the member list and pushes the new list to every member.
* *Up*: any member that is up promotes a joining member once it answers a ping (proof that
  its supervisor is alive and reachable from the cluster), and pushes the change.
* *Unreachable/reachable*: this node's own failure detector; never gossiped.
* *Down*: a member this node has found unreachable for ``down_after`` is marked down and
  removed, and the removal pushed. A downed node that is in fact alive learns of it by gossip
  and stays removed: it must restart (new incarnation) to rejoin, as in Akka.
* *Leave*: the leaver marks itself leaving and pushes that to everyone; a member that learns
  a peer is leaving removes it at once (reason ``left``) without waiting for its detector, and
  answers with its own list, which is the leaver's acknowledgement.

Gossip is the whole member list (clusters here are tens of nodes, not thousands). It is pushed
to all members after a local decision, sent to one member per ``gossip_interval`` in
round-robin order, and answered with our list when the sender lacked something we know. Merges
are a semilattice (see :mod:`membership.members`), so the order of deliveries does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.paths import InvalidActorPath
from membership.config import MembershipConfig, canonical_node, membership_path
from membership.effects import Effect, LeaveDone, Log, Publish, Send
from membership.errors import ProtocolViolation
from membership.join import JoinProcess
from membership.liveness import Liveness, Reachability
from membership.members import LIVE, Change, MemberState, MemberTable
from membership.messages import (
    Gossip,
    Join,
    LeaveResult,
    MemberInfo,
    MemberRow,
    MembershipStatus,
    Pong,
    Welcome,
)
from membership.phi import Verdict

if TYPE_CHECKING:
    import random

_S = MemberState
_GOSSIP_TARGETS = frozenset({_S.JOINING, _S.UP})
_STORY = {
    _S.JOINING: "member joining",
    _S.UP: "member up",
    _S.UNREACHABLE: "member unreachable",
    _S.LEAVING: "member leaving",
    _S.DOWN: "member down",
    _S.REMOVED: "member removed",
}
_SELF_STORY = {
    _S.UP: "this node is up",
    _S.LEAVING: "this node is leaving the cluster",
    _S.DOWN: "this node was marked down by the cluster",
    _S.REMOVED: "this node was removed from the cluster",
}


@dataclass
class _Leave:
    awaiting: set[str]
    deadline: float
    acknowledged: list[str] = field(default_factory=list)


class Membership:
    def __init__(
        self,
        node: str,
        incarnation: int,
        config: MembershipConfig,
        rng: random.Random,
        now: float,
    ) -> None:
        self.node = canonical_node(node)
        self.incarnation = incarnation
        self.config = config
        self.rng = rng
        self.table = MemberTable(self.node, incarnation, now)
        self.liveness = Liveness(config)
        self.joining: JoinProcess | None = None
        self.counters: dict[str, int] = {
            "dropped_bad_messages": 0,
            "joins_accepted": 0,
            "joins_ignored": 0,
            "gossip_in": 0,
            "gossip_ignored": 0,
            "gossip_out": 0,
            "foreign_incarnation_pongs": 0,
        }
        self._leave: _Leave | None = None
        self._left: LeaveResult | None = None
        self._next_gossip_at = now
        self._gossip_cursor = 0
        self._unknown_pong_paths: set[str] = set()
        self._out: list[Effect] = []

    # ------------------------------------------------------------------ entry points

    def start(self, now: float) -> list[Effect]:
        self._log(
            "membership starting", seeds=list(self.config.seeds), incarnation=self.incarnation
        )
        self.joining = JoinProcess(self.node, self.incarnation, self.config, self.rng, now)
        self._advance_join(now)
        return self._drain()

    def step(self, message: Any, now: float) -> list[Effect]:
        try:
            match message:
                case Pong():
                    self._on_pong(message, now)
                case Join():
                    self._on_join(message, now)
                case Welcome():
                    self._on_welcome(message, now)
                case Gossip():
                    self._on_gossip(message, now)
                case _:
                    raise TypeError(f"not a membership protocol message: {type(message).__name__}")
        except (ProtocolViolation, InvalidActorPath) as exc:
            # A peer's bad input costs that message, never the node.
            self.counters["dropped_bad_messages"] += 1
            self._log(
                "dropped a bad membership message",
                "warning",
                message_type=type(message).__name__,
                error=str(exc),
            )
        return self._drain()

    def tick(self, now: float) -> list[Effect]:
        self._advance_join(now)
        report = self.liveness.tick(now)
        self._out.extend(report.effects)
        self._reachability(report.changes, now)
        self._down_the_silent(now)
        self._periodic_gossip(now)
        if self._leave is not None and now >= self._leave.deadline:
            self._finish_leave(now)
        return self._drain()

    def leave(self, now: float) -> list[Effect]:
        """Leave the cluster gracefully; a LeaveDone effect follows (now or later)."""
        me = self.table.me
        if self._leave is not None:
            return self._drain()  # already leaving: the pending LeaveDone answers this too
        if self._left is not None or me.state not in LIVE:
            self._out.append(LeaveDone(self._left or LeaveResult([], [])))
            return self._drain()
        peers = self.table.peers_in(LIVE)
        awaiting = set(self.table.peers_in(_GOSSIP_TARGETS))
        self.joining = None
        self._leave = _Leave(awaiting, now + self.config.leave_timeout)
        self._applied([self.table.transition(self.node, _S.LEAVING, now)], now)
        self._broadcast(peers)
        if not awaiting:
            self._finish_leave(now)
        return self._drain()

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> MemberState:
        return self.table.me.state

    def replay_events(self) -> list[Any]:
        return self.table.replay_events()

    def status(self, now: float) -> MembershipStatus:
        rows = []
        for node in sorted(self.table.members):
            member = self.table.members[node]
            peer = self.liveness.peers.get(node)
            rows.append(
                MemberRow(
                    node=node,
                    incarnation=member.incarnation,
                    state=member.state.value,
                    reason=member.reason,
                    phi=None if peer is None else round(peer.detector.phi(now), 3),
                    heartbeat_age=(
                        None
                        if peer is None or peer.last_pong_at is None
                        else round(now - peer.last_pong_at, 3)
                    ),
                    rtt=None if peer is None or peer.rtt is None else round(peer.rtt, 6),
                    ref_resolved=peer is not None and peer.resolved,
                    evictions=0 if peer is None else peer.evictions,
                )
            )
        counters = {**self.counters, **self.liveness.counters}
        return MembershipStatus(self.node, self.incarnation, self.state.value, rows, counters)

    # ------------------------------------------------------------------ handlers

    def _on_pong(self, pong: Pong, now: float) -> None:
        member = self.table.get(pong.supervisor)
        if member is not None and pong.incarnation != member.incarnation:
            # Another process answers at that address: the member we watch is gone, and the
            # newcomer will join under its own incarnation.
            self.counters["foreign_incarnation_pongs"] += 1
            return
        report = self.liveness.on_pong(pong, now)
        self._out.extend(report.effects)
        if not report.known:
            seen = self._unknown_pong_paths
            if pong.supervisor not in seen and len(seen) < 100:
                self._unknown_pong_paths.add(pong.supervisor)
                self._log(
                    "pong names a supervisor path we do not watch",
                    "warning",
                    supervisor=pong.supervisor,
                    hint="a pong must name the node supervisor path that was pinged",
                )
            return
        self._reachability(report.changes, now)
        if member is not None and member.state is _S.JOINING and self.state is _S.UP:
            self._applied([self.table.transition(member.node, _S.UP, now)], now)
            self._broadcast(self.table.peers_in(LIVE))

    def _on_join(self, join: Join, now: float) -> None:
        node = canonical_node(join.node)
        if self.state is not _S.UP or node == self.node:
            self.counters["joins_ignored"] += 1
            return
        member = self.table.get(node)
        changes: list[Change] = []
        if member is None:
            changes = self.table.add(node, join.incarnation, now)
        elif join.incarnation > member.incarnation:
            self.liveness.forget(node)  # the new process gets a fresh ref and detector
            changes = self.table.replace_incarnation(node, join.incarnation, now)
        elif join.incarnation < member.incarnation:
            self.counters["joins_ignored"] += 1
            return  # a stale retry from a process that has since restarted
        elif member.state not in LIVE:
            # Same incarnation, already leaving, down or removed: the welcome tells it so,
            # and it stops retrying. Rejoining takes a restart (a new incarnation).
            self.counters["joins_ignored"] += 1
            self._send(membership_path(node), Welcome(self.node, self.table.infos()))
            return
        self.counters["joins_accepted"] += 1
        self._applied(changes, now)
        self._send(membership_path(node), Welcome(self.node, self.table.infos()))
        if changes:
            self._broadcast([p for p in self.table.peers_in(LIVE) if p != node])

    def _on_welcome(self, welcome: Welcome, now: float) -> None:
        sender = canonical_node(welcome.sender)
        self._validate(welcome.members)
        if self.state not in LIVE:
            return
        changes = self.table.merge(welcome.members, now)
        if self.joining is not None and self.joining.welcomed_by is None:
            self._log("welcomed into the cluster", via=sender, members=len(welcome.members))
        if self.joining is not None:
            self.joining.welcomed(sender, self.table.peers_in(LIVE))
        self._applied(changes, now)

    def _on_gossip(self, gossip: Gossip, now: float) -> None:
        sender = canonical_node(gossip.sender)
        self._validate(gossip.members)
        member = self.table.get(sender)
        if member is None or sender == self.node or member.state not in (*LIVE, _S.LEAVING):
            # Only members speak for the cluster: a removed node's view is stale by definition.
            self.counters["gossip_ignored"] += 1
            return
        self.counters["gossip_in"] += 1
        leave = self._leave
        if leave is not None and sender in leave.awaiting and self._acknowledges_leave(gossip):
            leave.awaiting.discard(sender)
            leave.acknowledged.append(sender)
        changes = self.table.merge(gossip.members, now)
        self._applied(changes, now)
        if self.table.knows_more_than(gossip.members):
            self._send_gossip(sender)
        if leave is not None and not leave.awaiting:
            self._finish_leave(now)

    # ------------------------------------------------------------------ the one place changes land

    def _applied(self, changes: list[Change], now: float) -> None:
        """Log, publish and follow up on applied changes, then resync the liveness table."""
        follow_ups: list[Change] = []
        for change in changes:
            self._tell_story(change)
            if change.event is not None:
                self._out.append(Publish(change.event))
            if change.node == self.node:
                continue
            member = self.table.get(change.node)
            if member is None or member.incarnation != change.incarnation:
                continue
            # A leave was announced: remove at once, no waiting for the detector.
            if change.new is _S.LEAVING:
                follow_ups.append(self.table.transition(change.node, _S.REMOVED, now, "left"))
            elif change.new is _S.DOWN:
                reason = member.reason or "down"
                follow_ups.append(self.table.transition(change.node, _S.REMOVED, now, reason))
        if follow_ups:
            self._applied(follow_ups, now)
            return
        self._sync_liveness(now)

    def _tell_story(self, change: Change) -> None:
        fields: dict[str, Any] = {"node": change.node}
        if change.old is not None:
            fields["from"] = change.old.value
        if change.reason and change.new in (_S.DOWN, _S.REMOVED):
            fields["reason"] = change.reason
        if change.new is _S.UNREACHABLE and change.event is not None:
            fields["phi"] = round(getattr(change.event, "phi", 0.0), 2)
        if change.node == self.node:
            text = _SELF_STORY.get(change.new)
            if text is None:
                return
            expelled = change.new in (_S.DOWN, _S.REMOVED) and change.reason != "left"
            level = "error" if expelled else "info"
            self._log(text, level, **fields)
            return
        level = "warning" if change.new in (_S.UNREACHABLE, _S.DOWN) else "info"
        if change.old is None and change.new not in (_S.JOINING, _S.UP):
            level = "debug"  # a stranger's tombstone, learned from gossip: nothing happened
        self._log(_STORY[change.new], level, **fields)

    def _sync_liveness(self, now: float) -> None:
        watching = self.state in LIVE and (
            self.joining is None or self.joining.welcomed_by is not None
        )
        nodes = self.table.peers_in(LIVE) if watching else []
        self._out.extend(self.liveness.sync(nodes, now))

    # ------------------------------------------------------------------ decisions on a tick

    def _advance_join(self, now: float) -> None:
        joining = self.joining
        if joining is None:
            return
        if self.state is not _S.JOINING:
            self.joining = None
            return
        if joining.should_form(now):
            self.joining = None
            self._log("no seed answered: forming a new cluster", seeds=list(self.config.seeds))
            self._applied([self.table.transition(self.node, _S.UP, now)], now)
            return
        self._out.extend(joining.due(now))

    def _reachability(self, changes: list[Reachability], now: float) -> None:
        for change in changes:
            member = self.table.get(change.node)
            if member is None:
                continue
            if change.verdict is Verdict.SUSPECTED and member.state is _S.UP:
                self._applied(
                    [self.table.transition(member.node, _S.UNREACHABLE, now, phi=change.phi)], now
                )
            elif change.verdict is Verdict.RECOVERED and member.state is _S.UNREACHABLE:
                self._applied([self.table.transition(member.node, _S.UP, now)], now)

    def _down_the_silent(self, now: float) -> None:
        if self.state is not _S.UP:
            return  # only a member in good standing may decide others are gone
        downed = []
        for node in self.table.peers_in(frozenset({_S.UNREACHABLE, _S.JOINING})):
            peer = self.liveness.peers.get(node)
            if peer is None or peer.suspected_since is None:
                continue
            if now - peer.suspected_since >= self.config.down_after:
                downed.append(self.table.transition(node, _S.DOWN, now, reason="down"))
        if downed:
            self._applied(downed, now)
            self._broadcast(self.table.peers_in(LIVE))

    def _periodic_gossip(self, now: float) -> None:
        if now < self._next_gossip_at:
            return
        self._next_gossip_at = now + self.config.gossip_interval
        if self.state not in (_S.UP, _S.JOINING) or self._leave is not None:
            return
        if self.state is _S.JOINING and (self.joining is None or not self.joining.welcomed_by):
            return
        targets = [
            node
            for node in self.table.peers_in(_GOSSIP_TARGETS)
            if not self.liveness.peers.get(node) or not self.liveness.peers[node].detector.suspected
        ]
        if targets:
            self._send_gossip(targets[self._gossip_cursor % len(targets)])
            self._gossip_cursor += 1
        self.table.prune(now, self.config.tombstone_ttl)

    # ------------------------------------------------------------------ leave

    def _acknowledges_leave(self, gossip: Gossip) -> bool:
        for info in gossip.members:
            if info.node == self.node and info.incarnation == self.incarnation:
                return info.status in ("leaving", "down", "removed")
        return False

    def _finish_leave(self, now: float) -> None:
        leave = self._leave
        if leave is None:
            return
        self._leave = None
        if self.state is not _S.REMOVED:
            self._applied([self.table.transition(self.node, _S.REMOVED, now, "left")], now)
        result = LeaveResult(sorted(leave.acknowledged), sorted(leave.awaiting))
        self._left = result
        self._log(
            "left the cluster",
            "info" if not leave.awaiting else "warning",
            acknowledged=len(result.acknowledged_by),
            missing=result.missing,
        )
        self._out.append(LeaveDone(result))

    # ------------------------------------------------------------------ sending

    def _broadcast(self, nodes: list[str]) -> None:
        for node in nodes:
            self._send_gossip(node)

    def _send_gossip(self, node: str) -> None:
        self.counters["gossip_out"] += 1
        self._send(membership_path(node), Gossip(self.node, self.table.infos()))

    def _send(self, to: str, message: Any) -> None:
        self._out.append(Send(to, message))

    def _log(self, event: str, level: str = "info", **fields: Any) -> None:
        self._out.append(Log(event, level, fields))

    def _validate(self, infos: list[MemberInfo]) -> None:
        for info in infos:
            if canonical_node(info.node) != info.node:
                raise ProtocolViolation(f"member path {info.node!r} is not in canonical form")

    def _drain(self) -> list[Effect]:
        out, self._out = self._out, []
        return out
