"""Liveness of peers: whom to ping, the ref table keyed by supervisor path, eviction and
re-resolution, and one failure detector per peer. Sans-IO.

Theory of operation
-------------------
Everything here is keyed by **one** string per peer: its node supervisor path
(``coterie://sys@host:port/user/node``). Pings are sent to that path, the supervisor's
:class:`~membership.messages.Pong` names that path (see :func:`make_pong`), and a pong is
matched to its table entry by the path it names, never by who happened to send it. Comcast's
Sirius matched pongs by the sender's path (its membership actor, ``/user/sirius/membership``)
while it resolved and evicted refs by the supervisor path (``/user/sirius``): no pong ever
refreshed an entry, so every ref was evicted and re-resolved every few seconds. A pong naming
a path we do not watch is counted (``unknown_pongs``) and logged, so such a mismatch shows up
at once instead of as churn.

A peer's entry is *resolved* (its ref is live, pinged every heartbeat) or *unresolved* (a
fresh ref is being probed, with exponential back-off up to ``resolve_interval_max``). The first
pong resolves it. A resolved ref that no pong has refreshed for ``ref_ttl`` is evicted and
re-resolved; a peer that keeps answering is never evicted.

Each pong is a heartbeat for the peer's phi accrual detector, but only a pong to a ping sent
*after the previous pong arrived* adds its inter-arrival time to the detector's history. Any
other pong restarts the detector's clock without adding a sample: the first pong after the
entry was created or re-resolved, the first pong after a suspicion (the interval measures an
outage), and a burst of replies to pings queued while the peer was stopped (near-zero
intervals that would teach the detector heartbeats come in bursts). On loopback or a LAN the
round trip is far below the heartbeat interval, so every regular pong qualifies; with a round
trip longer than the interval the history stays at its bootstrap and liveness still works.

If this node's own ticks arrive more than ``self_pause_tolerance`` apart, this node was paused
(a stop signal, a swap storm, a long GIL hold): it did not even ask for heartbeats, so the
silence is forgiven instead of every peer being accused at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from membership.config import MembershipConfig
from membership.effects import Effect, EvictRef, Log, ResolveRef, Send
from membership.messages import Ping, Pong
from membership.phi import PhiAccrualDetector, Verdict

# Pings remembered while unanswered: a few ref TTLs' worth at the fastest heartbeat.
_MAX_OUTSTANDING = 64


def make_pong(ping: Ping, supervisor: str, incarnation: int) -> Pong:
    """The answer of the node supervisor at path `supervisor` to `ping`.

    The pong names the supervisor itself, the path peers ping and key their tables by; a
    supervisor must never answer for (or forward pings to) a child.
    """
    return Pong(supervisor, incarnation, ping.seq)


@dataclass
class PeerLiveness:
    node: str
    detector: PhiAccrualDetector
    added_at: float
    refreshed_at: float  # last pong, or the start of the latest resolution
    next_ping_at: float
    probe_backoff: float
    resolved: bool = False
    seq: int = 0  # seq of the latest ping sent to this peer
    answered_seq: int = 0  # highest seq answered so far
    # Send times of pings not yet answered, by seq (bounded: oldest dropped first).
    sent_at: dict[int, float] = field(default_factory=dict)
    last_ping_at: float | None = None
    last_pong_at: float | None = None
    rtt: float | None = None
    incarnation: int | None = None
    suspected_since: float | None = None
    resolutions: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class Reachability:
    """A detector verdict about `node`, with phi when it was reached."""

    node: str
    verdict: Verdict
    phi: float


@dataclass
class Report:
    effects: list[Effect] = field(default_factory=list)
    changes: list[Reachability] = field(default_factory=list)
    known: bool = True


class Liveness:
    def __init__(self, config: MembershipConfig) -> None:
        self.config = config
        self.peers: dict[str, PeerLiveness] = {}
        self.counters: dict[str, int] = {
            "pings": 0,
            "pongs": 0,
            "late_pongs": 0,
            "unknown_pongs": 0,
            "resolutions": 0,
            "evictions": 0,
            "observer_pauses": 0,
        }
        self._seq = 0
        self._last_tick: float | None = None

    # ------------------------------------------------------------------ membership of the table

    def sync(self, nodes: Iterable[str], now: float) -> list[Effect]:
        """Watch exactly `nodes`: start watching new ones, forget the others."""
        wanted = set(nodes)
        effects: list[Effect] = []
        for node in sorted(set(self.peers) - wanted):
            del self.peers[node]
            effects.append(EvictRef(node, "no longer a watched member"))
        for node in sorted(wanted - set(self.peers)):
            detector = PhiAccrualDetector(self.config.detector)
            # The clock starts now, as if a heartbeat had just arrived: a peer that never
            # answers is suspected after about the time a real one would have been.
            detector.heartbeat(now, sample=False)
            self.peers[node] = PeerLiveness(
                node,
                detector,
                added_at=now,
                refreshed_at=now,
                next_ping_at=now,
                probe_backoff=self.config.heartbeat_interval,
            )
            self._resolve(self.peers[node], now, effects)
        return effects

    def forget(self, node: str) -> list[Effect]:
        if self.peers.pop(node, None) is None:
            return []
        return [EvictRef(node, "no longer a watched member")]

    # ------------------------------------------------------------------ inputs

    def on_pong(self, pong: Pong, now: float) -> Report:
        report = Report()
        peer = self.peers.get(pong.supervisor)
        if peer is None:
            self.counters["unknown_pongs"] += 1
            report.known = False
            return report
        self.counters["pongs"] += 1
        peer.incarnation = pong.incarnation
        sent = peer.sent_at.pop(pong.seq, None)
        if pong.seq > peer.answered_seq:
            for seq in [s for s in peer.sent_at if s < pong.seq]:
                del peer.sent_at[seq]  # older pings are answered or lost: forget them
            peer.answered_seq = pong.seq
        if sent is not None and pong.seq == peer.seq:
            peer.rtt = now - sent
        # A regular heartbeat answers a ping sent after the previous pong arrived; anything
        # else (a reply queued behind others, a duplicate) says the peer is alive, no more.
        late = sent is None or (peer.last_pong_at is not None and sent < peer.last_pong_at)
        if late:
            self.counters["late_pongs"] += 1
        regular = not late and peer.last_pong_at is not None
        sample = regular and peer.resolved and not peer.detector.suspected
        peer.detector.heartbeat(now, sample=sample)
        peer.last_pong_at = now
        peer.refreshed_at = now
        if not peer.resolved:
            peer.resolved = True
            peer.probe_backoff = self.config.heartbeat_interval
            peer.next_ping_at = now + self.config.heartbeat_interval
            report.effects.append(Log("ref resolved", "debug", {"node": peer.node}))
        self._check(peer, now, report)
        return report

    def tick(self, now: float) -> Report:
        report = Report()
        config = self.config
        last = self._last_tick
        if last is not None and now - last > config.self_pause_tolerance:
            paused = now - last - config.tick_interval
            self.counters["observer_pauses"] += 1
            for peer in self.peers.values():
                peer.detector.forgive(paused)
                peer.refreshed_at += paused
            report.effects.append(
                Log(
                    "this node was paused; forgiving its peers' silence",
                    "warning",
                    {"paused_s": round(paused, 3)},
                )
            )
        self._last_tick = now
        # Ticks are scheduled at a fixed rate but land a hair early or late; half a tick of
        # slack keeps pings on the intended beat instead of slipping a whole tick.
        slack = config.tick_interval / 2
        for node in sorted(self.peers):
            peer = self.peers[node]
            if peer.resolved and now - peer.refreshed_at > config.ref_ttl:
                self._evict(peer, now, report.effects)
            elif now + slack >= peer.next_ping_at:
                self._ping(peer, now, report.effects)
                if peer.resolved:
                    peer.next_ping_at += config.heartbeat_interval
                    if peer.next_ping_at <= now:
                        peer.next_ping_at = now + config.heartbeat_interval
                else:
                    peer.next_ping_at = now + peer.probe_backoff
                    peer.probe_backoff = min(peer.probe_backoff * 2, config.resolve_interval_max)
            self._check(peer, now, report)
        return report

    # ------------------------------------------------------------------ internals

    def _ping(self, peer: PeerLiveness, now: float, effects: list[Effect]) -> None:
        self._seq += 1
        peer.seq = self._seq
        peer.last_ping_at = now
        peer.sent_at[self._seq] = now
        if len(peer.sent_at) > _MAX_OUTSTANDING:
            del peer.sent_at[next(iter(peer.sent_at))]  # insertion order is seq order
        self.counters["pings"] += 1
        effects.append(Send(peer.node, Ping(self._seq)))

    def _resolve(self, peer: PeerLiveness, now: float, effects: list[Effect]) -> None:
        peer.resolved = False
        peer.resolutions += 1
        peer.refreshed_at = now
        peer.probe_backoff = self.config.heartbeat_interval
        peer.next_ping_at = now
        self.counters["resolutions"] += 1
        effects.append(ResolveRef(peer.node))

    def _evict(self, peer: PeerLiveness, now: float, effects: list[Effect]) -> None:
        silent = now - peer.refreshed_at
        peer.evictions += 1
        self.counters["evictions"] += 1
        effects.append(
            Log(
                "ref evicted: no pong within the ref TTL; re-resolving",
                "info",
                {"node": peer.node, "silent_s": round(silent, 3)},
            )
        )
        effects.append(EvictRef(peer.node, "stale"))
        self._resolve(peer, now, effects)
        self._ping(peer, now, effects)
        peer.next_ping_at = now + peer.probe_backoff

    def _check(self, peer: PeerLiveness, now: float, report: Report) -> None:
        verdict = peer.detector.check(now)
        if verdict is None:
            return
        if verdict is Verdict.SUSPECTED:
            peer.suspected_since = now
        else:
            peer.suspected_since = None
        report.changes.append(Reachability(peer.node, verdict, peer.detector.phi(now)))
