"""One member of a Rapid-style cluster, sans-IO: probes, alerts, cut detection, gossip,
agreement, view changes, joins and anti-entropy, driven by messages and time.

Theory of operation
-------------------
:class:`RapidNode` has four entry points, all taking ``now`` and returning effects
(:mod:`membership.rapid.effects`) for the host to carry out in order: :meth:`step` takes any
protocol message, :meth:`tick` runs whatever is due, :meth:`deadline` says when the next
tick is wanted (the simulator sleeps until then; the actor shell simply ticks on a timer),
and :meth:`bootstrap` / :meth:`start_in` / :meth:`join_cluster` / :meth:`leave` change its
life cycle. Chance comes from the ``random.Random`` handed in; nothing here reads a clock.

The life of one view change, as every member sees it:

1. **Detect.** Every heartbeat the member checks and probes its K subjects
   (:mod:`~membership.rapid.monitor`). A subject found failed becomes an *alert*: a report
   for the rings on which this member observes it. Gatekeepers raise the same kind of report
   for joiners (:mod:`~membership.rapid.join`).
2. **Batch.** Alerts wait ``batch_window`` after the latest one (at most
   ``batch_max_delay``) and then enter the member's cut detector together.
3. **Spread.** Reports that changed are pushed by gossip with the votes
   (:mod:`~membership.rapid.gossip`); what others push is merged into the same detector.
4. **Cut.** When the detector holds a clear cut (:mod:`~membership.rapid.cut_detector`),
   settled for ``settle``, the member votes for it in the fast round.
5. **Agree.** A fast quorum of identical votes decides; otherwise the classic fallback does
   (:mod:`~membership.rapid.consensus`).
6. **Install.** The next configuration is derived from the decided cut, and everything of the
   old one is dropped: detector, votes, gossip, batched alerts. Probing moves to the new
   subjects; gatekeepers answer their joiners; ``ViewChange`` is published.

Every message names its configuration; :meth:`_gate` lets through only those of ours and turns
the others into anti-entropy (:mod:`~membership.rapid.view`).

A member that learns it is not in the new configuration publishes ``RemovedFromCluster`` and
stops (or, with ``rejoin_when_removed``, joins again under incarnation + 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from actors.paths import InvalidActorPath
from membership.config import canonical_node
from membership.errors import ProtocolViolation
from membership.rapid.consensus import Consensus, make_proposal
from membership.rapid.cut_detector import CutDetector
from membership.rapid.effects import Effect, Log, Publish, Send
from membership.rapid.gossip import Gossiper, bytes_to_bits
from membership.rapid.join import JoinProcess
from membership.rapid.messages import (
    Decided,
    Gossip,
    JoinGateway,
    JoinRequest,
    JoinRetry,
    Leave,
    Phase1a,
    Phase1b,
    Phase2a,
    Phase2b,
    PreJoin,
    Probe,
    ProbeAck,
    Proposal,
    RapidStatus,
    RemovedFromCluster,
    SyncRequest,
    ViewChain,
    ViewChange,
    ViewSnapshot,
)
from membership.rapid.monitor import EdgeMonitor
from membership.rapid.topology import (
    Configuration,
    ConfigurationCache,
    InvalidCut,
    Member,
    cut_digest,
)
from membership.rapid.view import View

if TYPE_CHECKING:
    import random

    from membership.rapid.config import RapidConfig


class State(Enum):
    IDLE = "idle"
    JOINING = "joining"
    MEMBER = "member"
    REMOVED = "removed"
    LEFT = "left"


# Inputs that move no timer: they answer, feed a detector or trigger anti-entropy only.
_TIMERLESS = frozenset({Probe, ProbeAck, SyncRequest, PreJoin})

_COUNTERS = (
    "alerts",
    "reinforcements",
    "votes",
    "classic_rounds",
    "views_installed",
    "gossip_in",
    "catch_up_sent",
    "sync_requests",
    "config_mismatch",
    "join_requests",
    "joins_misrouted",
    "foreign_acks",
    "dropped_bad_messages",
)


class RapidNode:
    def __init__(
        self,
        node: str,
        incarnation: int,
        cfg: RapidConfig,
        rng: random.Random,
        *,
        cache: ConfigurationCache | None = None,
    ) -> None:
        self.node = canonical_node(node)
        self.incarnation = incarnation
        self.cfg = cfg
        self.rng = rng
        # Shared by every node of a simulation: configurations are pure values.
        self.cache = cache if cache is not None else ConfigurationCache()
        self.state = State.IDLE
        self.config: Configuration | None = None
        self.view: View | None = None
        self.detector: CutDetector
        self.consensus: Consensus
        self.gossiper = Gossiper(cfg)
        self.monitor = EdgeMonitor(cfg, phase=rng.uniform(0.0, cfg.heartbeat_interval))
        self.join: JoinProcess | None = None
        self.seeds: tuple[str, ...] = ()
        self._form_at: float | None = None  # joining: form a cluster then if no seed answered
        self._batch: dict[Member, int] = {}
        self._batch_first = 0.0
        self._batch_last = 0.0
        self._gatekeeping: dict[Member, str] = {}  # joiners we reported -> where to answer
        # Joiners that asked this seed during a view change, answered when it ends.
        self._held: dict[str, int] = {}
        self._ahead: list[Any] = []
        self._out: list[Effect] = []
        # deadline() is asked after every input; it is recomputed only after inputs that can
        # move a timer (everything except the probe traffic, see _TIMERLESS).
        self._dirty = True
        self._deadline: float | None = None
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._handlers: dict[type, Callable[[Any, float], None]] = {
            Probe: self._on_probe,
            ProbeAck: self._on_probe_ack,
            Gossip: self._on_gossip,
            PreJoin: self._on_pre_join,
            JoinGateway: self._on_join_gateway,
            JoinRequest: self._on_join_request,
            JoinRetry: self._on_join_retry,
            Leave: self._on_leave,
            Phase1a: self._on_phase1a,
            Phase1b: self._on_phase1b,
            Phase2a: self._on_phase2a,
            Phase2b: self._on_phase2b,
            Decided: self._on_decided,
            SyncRequest: self._on_sync_request,
            ViewChain: self._on_view_chain,
            ViewSnapshot: self._on_view_snapshot,
        }

    @property
    def member(self) -> Member:
        return (self.node, self.incarnation)

    # ------------------------------------------------------------------ life cycle

    def bootstrap(self, now: float) -> list[Effect]:
        """Form a new cluster with this node as its only member."""
        self._dirty = True
        self._install(self.cache.build(0, [self.member], self.cfg.k), None, "bootstrap", now)
        return self._drain()

    def start_in(self, config: Configuration, now: float) -> list[Effect]:
        """Start as a member of `config`, known in advance (a static cluster)."""
        self._dirty = True
        if not config.has(self.member):
            raise ValueError(f"{self.node} incarnation {self.incarnation} is not in {config}")
        self._install(config, None, "static", now)
        return self._drain()

    def join_cluster(
        self, seeds: Sequence[str], now: float, form_after: float | None = None
    ) -> list[Effect]:
        """Join through `seeds`. With `form_after`, form a new cluster if no seed has answered
        by then: give it to one node only (the first seed of a static list, as the gossip
        membership does), or two could form two clusters."""
        self._dirty = True
        self.seeds = tuple(canonical_node(s) for s in seeds if s != self.node)
        self._form_at = None if form_after is None else now + form_after
        self._start_joining(self.seeds, now)
        return self._drain()

    def leave(self, now: float) -> list[Effect]:
        """Leave gracefully: tell our observers, who report us at once."""
        self._dirty = True
        config = self.config
        if self.state is State.MEMBER and config is not None:
            message = Leave(self.node, config.epoch, config.id)
            for observer in dict.fromkeys(config.observers_of(self.node)):
                self._out.append(Send(observer, message))
            self._log("leaving the cluster", epoch=config.epoch)
        self.state = State.LEFT
        self._held.clear()
        self.monitor.clear()
        self.gossiper.reset()
        self.join = None
        return self._drain()

    # ------------------------------------------------------------------ entry points

    def step(self, message: Any, now: float) -> list[Effect]:
        kind = type(message)
        handler = self._handlers.get(kind)
        if handler is None:
            raise TypeError(f"not a Rapid protocol message: {kind.__name__}")
        if kind not in _TIMERLESS:
            self._dirty = True
        try:
            handler(message, now)
        except (ProtocolViolation, InvalidCut, InvalidActorPath) as exc:
            # A peer's bad input costs that message, never the node.
            self.counters["dropped_bad_messages"] += 1
            self._log(
                "dropped a bad Rapid message",
                "warning",
                message_type=type(message).__name__,
                error=str(exc),
            )
        return self._drain()

    def tick(self, now: float) -> list[Effect]:
        self._dirty = True
        if self.state is State.MEMBER:
            monitor = self.monitor
            if monitor.next_probe_at is not None and now >= monitor.next_probe_at:
                self._probe_round(now)
            if self._batch and now >= self._batch_due():
                self._flush(now)
            due = self.detector.linger_due(self.cfg.reinforce_after)
            if due is not None and now >= due:
                self._reinforce(now)
            self._maybe_vote(now)
            if self.state is State.MEMBER:
                gossip_at = self.gossiper.next_at
                if gossip_at is not None and now >= gossip_at:
                    self._gossip(now)
                classic_at = self.consensus.classic_at
                if classic_at is not None and now >= classic_at:
                    self._classic(now)
        elif self.state is State.JOINING and self.join is not None:
            form_at = self._form_at
            if form_at is not None and now >= form_at and self.join.gateway_epoch is None:
                self._form_at = None
                self.join = None
                self._log("no seed answered: forming a new cluster", seeds=len(self.seeds))
                self._install(self.cache.build(0, [self.member], self.cfg.k), None, "formed", now)
                # The other seeds are backing off between join attempts (up to
                # join_backoff_max): tell them there is a cluster to join now.
                assert self.config is not None
                epoch = self.config.epoch
                for seed in self.seeds:
                    self._out.append(Send(seed, JoinRetry(self.node, epoch, "cluster formed")))
            else:
                self._send_pairs(self.join.due(now))
        return self._drain()

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: only a message can wake us)."""
        if not self._dirty:
            return self._deadline
        self._dirty = False
        best: float | None = None
        if self.state is State.MEMBER:
            cfg = self.cfg
            consensus = self.consensus
            detector = self.detector
            best = self.monitor.next_probe_at
            for at in (
                self.gossiper.next_at,
                consensus.classic_at,
                self._batch_due() if self._batch else None,
                detector.proposal_due(cfg.settle) if consensus.my_vote is None else None,
                detector.linger_due(cfg.reinforce_after),
            ):
                if at is not None and (best is None or at < best):
                    best = at
        elif self.state is State.JOINING and self.join is not None:
            best = self.join.deadline
            if self._form_at is not None and (best is None or self._form_at < best):
                best = self._form_at
        self._deadline = best
        return best

    def status(self) -> RapidStatus:
        config = self.config
        return RapidStatus(
            self.node,
            self.incarnation,
            self.state.value,
            -1 if config is None else config.epoch,
            "" if config is None else config.id,
            0 if config is None else config.size,
            () if config is None else config.members,
            dict(self.counters),
        )

    # ------------------------------------------------------------------ detection and batching

    def _probe_round(self, now: float) -> None:
        config = self.config
        assert config is not None
        probes, failed = self.monitor.probe_round(config.epoch, now)
        for edge in failed:
            self.counters["alerts"] += 1
            self._alert((edge.node, edge.incarnation), edge.mask, now)
        me, epoch, config_id, out = self.node, config.epoch, config.id, self._out
        for node, seq in probes:
            out.append(Send(node, Probe(me, epoch, config_id, seq)))

    def _alert(self, subject: Member, mask: int, now: float) -> None:
        if not self._batch:
            self._batch_first = now
        self._batch[subject] = self._batch.get(subject, 0) | mask
        self._batch_last = now

    def _batch_due(self) -> float:
        return min(
            self._batch_last + self.cfg.batch_window, self._batch_first + self.cfg.batch_max_delay
        )

    def _flush(self, now: float) -> None:
        batch, self._batch = self._batch, {}
        detector = self.detector
        for subject, mask in batch.items():
            if detector.valid(subject) and detector.add(subject, mask, now):
                self.gossiper.touch_report(subject, now)
        self._maybe_vote(now)

    def _reinforce(self, now: float) -> None:
        """Report the subjects that stayed unstable too long on our rings (Rapid's
        reinforcement), and restart their clocks so this happens once per period."""
        detector = self.detector
        config = self.config
        assert config is not None
        for subject in detector.lingering(now, self.cfg.reinforce_after):
            detector.unstable.pop(subject)
            detector.unstable[subject] = now
            mask = config.observer_mask(self.node, subject[0]) & ~detector.known(subject)
            if mask:
                self.counters["reinforcements"] += 1
                self._alert(subject, mask, now)

    # ------------------------------------------------------------------ gossip and agreement

    def _gossip(self, now: float) -> None:
        config = self.config
        assert config is not None
        message, targets = self.gossiper.round(
            self.node, config, self.detector, self.consensus, self.rng, now
        )
        if message is not None:
            out = self._out
            for target in targets:
                out.append(Send(target, message))

    def _maybe_vote(self, now: float) -> None:
        consensus = self.consensus
        if (
            self.state is not State.MEMBER
            or consensus.my_vote is not None
            or consensus.decision is not None
            or consensus.index is None
        ):
            return
        cut = self.detector.proposal(now, self.cfg.settle)
        if cut is None:
            return
        proposal = make_proposal(cut)
        if consensus.vote(proposal, now):
            self.counters["votes"] += 1
            self.gossiper.touch_vote(proposal.pid, now)
            self._log("proposing a view change", "debug", size=len(cut), cut=proposal.pid)
            if consensus.decision is not None:
                self._decide(now)

    def _classic(self, now: float) -> None:
        consensus = self.consensus
        cut = self.detector.proposal(now, 0.0)
        fallback = make_proposal(cut) if cut is not None else None
        if fallback is None and consensus.my_vote is not None:
            fallback = consensus.proposals[consensus.my_vote]
        out = consensus.start_classic(now, fallback)
        if out:
            self.counters["classic_rounds"] += 1
            self._log(
                "fast round did not decide: coordinating a classic round",
                "info",
                rank=list(consensus.crnd),
                epoch=self.config.epoch,
            )  # type: ignore[union-attr]
        self._send_pairs(out)
        if consensus.decision is not None:
            self._decide(now)

    def _decide(self, now: float) -> None:
        consensus = self.consensus
        proposal = consensus.decision
        assert proposal is not None and self.config is not None
        nxt = self.cache.successor(self.config, proposal.changes, proposal.pid)
        self._install(nxt, proposal, consensus.decided_via, now)

    # ------------------------------------------------------------------ installing a view

    def _install(self, config: Configuration, cut: Proposal | None, via: str, now: float) -> None:
        old = self.config
        if old is None or self.view is None:
            self.view = View(config, self.cfg.history, self.cfg.sync_interval)
        else:
            self.view.advance(config, cut)
        self.config = config
        cfg = self.cfg
        self.detector = CutDetector(config, cfg.k, cfg.high, cfg.low, now)
        self.consensus = Consensus(config, self.node, cfg, self.rng)
        self.gossiper.reset()
        self._batch.clear()
        self.counters["views_installed"] += 1
        joined: tuple[Member, ...] = ()
        removed: tuple[Member, ...] = ()
        if old is not None and cut is not None:
            joined = tuple(m for m in cut.changes if not old.has(m))
            removed = tuple(m for m in cut.changes if old.has(m))
        elif old is not None:
            before, after = set(old.members), set(config.members)
            joined, removed = tuple(sorted(after - before)), tuple(sorted(before - after))
        self._out.append(
            Publish(ViewChange(config.epoch, config.id, config.size, joined, removed, via))
        )
        self._log(
            "view installed",
            "info",
            epoch=config.epoch,
            config_id=config.id,
            size=config.size,
            joined=len(joined),
            removed=len(removed),
            via=via,
        )
        self._answer_joiners(config)
        held, self._held = self._held, {}
        if config.has(self.member):
            self.state = State.MEMBER
            self.join = None
            subjects = {
                node: (config.incarnation_of(node), mask)  # type: ignore[misc]
                for node, mask in config.subject_masks(self.node).items()
            }
            self.monitor.watch(subjects, now)  # type: ignore[arg-type]
            # The view change is over: the door is open, the held joiners come in together.
            for node, incarnation in held.items():
                self._on_pre_join(PreJoin(node, incarnation), now)
        else:
            self._removed(config, now)
        if self._ahead:
            pending, self._ahead = self._ahead, []
            for message in pending:
                if self.state is State.MEMBER and message.epoch == self.config.epoch:
                    self.step_inner(message, now)

    def step_inner(self, message: Any, now: float) -> None:
        """Handle `message` without draining effects (replays inside another call)."""
        try:
            self._handlers[type(message)](message, now)
        except (ProtocolViolation, InvalidCut, InvalidActorPath):
            self.counters["dropped_bad_messages"] += 1

    def _answer_joiners(self, config: Configuration) -> None:
        if not self._gatekeeping:
            return
        snapshot: ViewSnapshot | None = None
        for member, node in self._gatekeeping.items():
            if config.has(member):
                if snapshot is None:
                    snapshot = ViewSnapshot(self.node, config.epoch, config.id, config.members)
                self._out.append(Send(node, snapshot))
            else:
                self._out.append(Send(node, JoinRetry(self.node, config.epoch, "view changed")))
        self._gatekeeping.clear()

    def _removed(self, config: Configuration, now: float) -> None:
        was_member = self.state is State.MEMBER
        self.state = State.REMOVED
        self.monitor.clear()
        self.gossiper.reset()
        if was_member:
            self._out.append(Publish(RemovedFromCluster(config.epoch, config.id)))
            self._log("this node was removed from the cluster", "error", epoch=config.epoch)
        if self.cfg.rejoin_when_removed:
            self.incarnation += 1
            seeds = self.seeds or tuple(
                self.rng.sample(config.nodes, min(3, config.size))  # any member can be a seed
            )
            self._start_joining(seeds, now)

    def _start_joining(self, seeds: tuple[str, ...], now: float) -> None:
        self.state = State.JOINING
        self.join = JoinProcess(self.node, self.incarnation, seeds, self.cfg, self.rng)
        self._log("joining", seeds=len(seeds), incarnation=self.incarnation)
        self._send_pairs(self.join.start(now))

    def _config_from_snapshot(self, m: ViewSnapshot) -> Configuration:
        known = self.cache.get(m.epoch, m.config_id)
        if known is not None:
            return known
        try:
            config = self.cache.build(m.epoch, m.members, self.cfg.k)
        except ValueError as exc:
            raise ProtocolViolation(f"snapshot of epoch {m.epoch}: {exc}") from exc
        if config.id != m.config_id:
            raise ProtocolViolation(f"snapshot of epoch {m.epoch} does not hash to its id")
        return config

    # ------------------------------------------------------------------ anti-entropy gate

    def _gate(self, sender: str, epoch: int, config_id: str, message: Any, now: float) -> bool:
        """True if the message belongs to our configuration; otherwise do anti-entropy."""
        config = self.config
        assert config is not None and self.view is not None
        if epoch == config.epoch:
            if config_id == config.id:
                return True
            self.counters["config_mismatch"] += 1
            return False
        if epoch < config.epoch:
            if self.view.may_answer(sender, now):
                self.counters["catch_up_sent"] += 1
                self._out.append(Send(sender, self.view.catch_up(self.node, epoch, config_id)))
            return False
        if (
            message is not None
            and epoch == config.epoch + 1
            and len(self._ahead) < self.cfg.ahead_buffer
        ):
            self._ahead.append(message)
        if self.view.may_ask(sender, now):
            self.counters["sync_requests"] += 1
            self._out.append(Send(sender, SyncRequest(self.node, config.epoch, config.id)))
        return False

    # ------------------------------------------------------------------ handlers

    def _on_probe(self, m: Probe, now: float) -> None:
        config = self.config
        if config is None:
            ack = ProbeAck(self.node, self.incarnation, -1, "", m.seq)
        else:
            ack = ProbeAck(self.node, self.incarnation, config.epoch, config.id, m.seq)
        self._out.append(Send(m.sender, ack))
        if self.state is State.MEMBER:
            self._gate(m.sender, m.epoch, m.config_id, None, now)

    def _on_probe_ack(self, m: ProbeAck, now: float) -> None:
        edge = self.monitor.edges.get(m.sender)
        if edge is not None and edge.incarnation != m.incarnation:
            # Another process answers at that address: the subject we watch is gone.
            self.counters["foreign_acks"] += 1
            return
        self.monitor.on_ack(m.sender, m.seq, now)
        if self.state is State.MEMBER and m.epoch >= 0:
            self._gate(m.sender, m.epoch, m.config_id, None, now)

    def _on_gossip(self, m: Gossip, now: float) -> None:
        if self.state is not State.MEMBER or not self._gate(m.sender, m.epoch, m.config_id, m, now):
            return
        self.counters["gossip_in"] += 1
        detector = self.detector
        full = detector.full_mask
        known = detector.reports
        touch = self.gossiper.touch_report
        for node, incarnation, mask in m.reports:
            if mask <= 0 or mask > full:
                raise ProtocolViolation(f"ring mask {mask} out of range for {node}")
            subject = (node, incarnation)
            old = known.get(subject)
            if old is not None and old | mask == old:
                continue  # the common case at scale: nothing we did not know
            if detector.valid(subject) and detector.add(subject, mask, now):
                touch(subject, now)
        consensus = self.consensus
        for vote_set in m.votes:
            proposal = consensus.learn(vote_set.proposal)
            if consensus.merge(proposal, bytes_to_bits(vote_set.voters), now):
                self.gossiper.touch_vote(proposal.pid, now)
        if consensus.decision is not None:
            self._decide(now)
        else:
            self._maybe_vote(now)

    def _on_pre_join(self, m: PreJoin, now: float) -> None:
        if self.state is not State.MEMBER:
            return
        config = self.config
        assert config is not None and self.view is not None
        node = canonical_node(m.node)
        current = config.incarnation_of(node)
        if current is not None and current == m.incarnation:
            self._out.append(Send(node, self.view.snapshot(self.node)))
            return
        if current is not None and current > m.incarnation:
            return  # a process older than the member at that address
        if self._view_change_in_progress():
            # Hold it rather than turn it away: told to retry, joiners hit the short gaps
            # between view changes only by chance and trickle in one small view change at a
            # time; held, all of them enter with the next one. (A joiner that gives up
            # waiting asks again, which only refreshes its place.)
            if node in self._held or len(self._held) < self.cfg.join_hold_max:
                self._held[node] = m.incarnation
                return
            self._out.append(Send(node, JoinRetry(self.node, config.epoch, "view change")))
            return
        gateway = JoinGateway(
            self.node, config.epoch, config.id, config.expected_observers_of(node)
        )
        self._out.append(Send(node, gateway))

    def _view_change_in_progress(self) -> bool:
        """A cut is ready or being voted on: joiners admitted now would miss it. (Joiners
        still gathering reports do not close the door: more may join their batch.)"""
        return bool(self.detector.stable or self.consensus.voters)

    def _on_join_request(self, m: JoinRequest, now: float) -> None:
        config = self.config
        ahead = self.state is State.JOINING or (
            self.state is State.MEMBER and config is not None and m.epoch > config.epoch
        )
        if ahead:
            # A gateway named us in a view we have not installed yet (we were admitted in it,
            # or we lag by a few messages): keep the request for when we get there.
            if len(self._ahead) < self.cfg.ahead_buffer:
                self._ahead.append(m)
            return
        if self.state is not State.MEMBER:
            return
        assert config is not None and self.view is not None
        node = canonical_node(m.node)
        joiner = (node, m.incarnation)
        if m.epoch != config.epoch or m.config_id != config.id:
            if config.has(joiner):
                self._out.append(Send(node, self.view.snapshot(self.node)))
            elif m.epoch < config.epoch:
                self._out.append(Send(node, JoinRetry(self.node, config.epoch, "view changed")))
            return
        kind = config.classify(joiner)
        if kind is True:
            self._out.append(Send(node, self.view.snapshot(self.node)))
            return
        mask = 0
        for ring in m.rings:
            if not 0 <= ring < self.cfg.k:
                raise ProtocolViolation(f"ring number {ring} out of range")
            mask |= 1 << ring
        mask &= config.observer_mask(self.node, node)
        if not mask:
            self.counters["joins_misrouted"] += 1
            return
        self.counters["join_requests"] += 1
        if kind is None:
            current = config.incarnation_of(node)
            assert current is not None
            if m.incarnation < current:
                return
            # A new process at a member's address: the member's process is gone. We are its
            # observer on these rings, so we report it; the joiner retries after the cut.
            self._alert((node, current), mask, now)
        else:
            self._alert(joiner, mask, now)
        self._gatekeeping[joiner] = node

    def _on_join_gateway(self, m: JoinGateway, now: float) -> None:
        self._form_at = None  # a cluster exists: never form another
        if self.state is State.JOINING and self.join is not None:
            self._send_pairs(self.join.on_gateway(m, now))

    def _on_join_retry(self, m: JoinRetry, now: float) -> None:
        self._form_at = None  # a cluster exists (busy with a view change)
        if self.state is State.JOINING and self.join is not None:
            self._send_pairs(self.join.on_retry(m.epoch, now))

    def _on_leave(self, m: Leave, now: float) -> None:
        if self.state is not State.MEMBER or not self._gate(
            m.sender, m.epoch, m.config_id, None, now
        ):
            return
        edge = self.monitor.edges.get(m.sender)
        if edge is not None:
            self.counters["alerts"] += 1
            self._alert((edge.node, edge.incarnation), edge.mask, now)

    def _on_phase1a(self, m: Phase1a, now: float) -> None:
        if self.state is State.MEMBER and self._gate(m.sender, m.epoch, m.config_id, m, now):
            self._send_pairs(self.consensus.on_phase1a(m, now))

    def _on_phase1b(self, m: Phase1b, now: float) -> None:
        if self.state is State.MEMBER and self._gate(m.sender, m.epoch, m.config_id, m, now):
            self._send_pairs(self.consensus.on_phase1b(m, now))
            if self.consensus.decision is not None:
                self._decide(now)

    def _on_phase2a(self, m: Phase2a, now: float) -> None:
        if self.state is State.MEMBER and self._gate(m.sender, m.epoch, m.config_id, m, now):
            self._send_pairs(self.consensus.on_phase2a(m, now))

    def _on_phase2b(self, m: Phase2b, now: float) -> None:
        if self.state is State.MEMBER and self._gate(m.sender, m.epoch, m.config_id, m, now):
            self._send_pairs(self.consensus.on_phase2b(m, now))
            if self.consensus.decision is not None:
                self._decide(now)

    def _on_decided(self, m: Decided, now: float) -> None:
        if self.state is State.MEMBER and self._gate(m.sender, m.epoch, m.config_id, m, now):
            self.consensus.on_decided(m)
            self._decide(now)

    def _on_sync_request(self, m: SyncRequest, now: float) -> None:
        if self.state is State.MEMBER:
            self._gate(m.sender, m.epoch, m.config_id, None, now)

    def _on_view_chain(self, m: ViewChain, now: float) -> None:
        config = self.config
        if self.state is not State.MEMBER or config is None:
            return
        if len(m.cuts) != len(m.config_ids):
            raise ProtocolViolation("a view chain with as many ids as cuts")
        first = config.epoch - m.from_epoch
        if first < 0 or first >= len(m.cuts):
            return  # nothing we lack, or a chain that starts after our view
        expected = m.from_config_id if first == 0 else m.config_ids[first - 1]
        if expected != config.id:
            self.counters["config_mismatch"] += 1
            return
        for cut, config_id in zip(m.cuts[first:], m.config_ids[first:], strict=True):
            if cut_digest(cut.changes) != cut.pid:
                raise ProtocolViolation(f"cut {cut.pid} does not match its changes")
            nxt = self.cache.successor(self.config, cut.changes, cut.pid)  # type: ignore[arg-type]
            if nxt.id != config_id:
                raise ProtocolViolation(f"cut {cut.pid} does not lead to view {config_id}")
            self._install(nxt, cut, "sync", now)
            if self.state is not State.MEMBER:
                return

    def _on_view_snapshot(self, m: ViewSnapshot, now: float) -> None:
        if self.state is State.JOINING:
            config = self._config_from_snapshot(m)
            if config.has(self.member):
                self._install(config, None, "join", now)
            return
        config = self.config
        if self.state is not State.MEMBER or config is None or m.epoch <= config.epoch:
            return
        self._install(self._config_from_snapshot(m), None, "sync", now)

    # ------------------------------------------------------------------ effects

    def _send_pairs(self, pairs: list[tuple[str, Any]]) -> None:
        out = self._out
        for to, message in pairs:
            out.append(Send(to, message))

    def _log(self, event: str, level: str = "info", **fields: Any) -> None:
        self._out.append(Log(event, level, {"node": self.node, **fields}))

    def _drain(self) -> list[Effect]:
        out, self._out = self._out, []
        return out
