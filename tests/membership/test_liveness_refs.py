"""Regression tests for the Sirius eviction bug, on the sans-IO liveness table with a fake clock.

Sirius' membership agent resolved and evicted refs by the *supervisor's* path but refreshed
them with pongs keyed by the *membership actor's* path, so no pong ever counted and every ref
was evicted and re-resolved every few seconds. Here pings go to the supervisor path and the
supervisor's pong (``make_pong``, the function the real supervisor uses) names that path.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from membership.config import MembershipConfig, membership_path
from membership.effects import EvictRef, ResolveRef, Send
from membership.liveness import Liveness, make_pong
from membership.messages import Ping, Pong
from membership.phi import DetectorConfig

CONFIG = MembershipConfig(
    heartbeat_interval=0.5,
    tick_interval=0.1,
    detector=DetectorConfig(acceptable_pause=1.5, first_heartbeat_estimate=0.5),
    ref_ttl=2.0,
)
PEERS = [f"coterie://peer{i}@127.0.0.1:{7200 + i}/user/node" for i in range(4)]


@dataclass
class Run:
    resolutions: dict[str, list[float]] = field(default_factory=dict)
    evictions: dict[str, list[float]] = field(default_factory=dict)
    liveness: Liveness | None = None


def run_observer(
    seconds: float,
    answers_as: Callable[[str], str] = lambda supervisor: supervisor,
    stopped_at: dict[str, float] | None = None,
    seed: int = 7,
) -> Run:
    """Drive one node's liveness table over `seconds` of simulated time.

    Each peer's supervisor answers every ping after 0.5-5 ms with ``make_pong``, naming the
    path `answers_as` gives for it, until its time in `stopped_at` (if any).
    """
    rng = random.Random(seed)
    stopped_at = stopped_at or {}
    run = Run({p: [] for p in PEERS}, {p: [] for p in PEERS})
    live = Liveness(CONFIG)
    run.liveness = live
    pongs: list[tuple[float, int, Pong]] = []
    order = 0

    def handle(effects: list, now: float) -> None:
        nonlocal order
        for effect in effects:
            if isinstance(effect, ResolveRef):
                run.resolutions[effect.node].append(now)
            elif isinstance(effect, EvictRef) and effect.reason == "stale":
                run.evictions[effect.node].append(now)
            elif isinstance(effect, Send) and isinstance(effect.message, Ping):
                peer = effect.to
                assert peer in PEERS, "pings go to supervisor paths"
                if now < stopped_at.get(peer, float("inf")):
                    pong = make_pong(effect.message, answers_as(peer), incarnation=1)
                    order += 1
                    heapq.heappush(pongs, (now + rng.uniform(0.0005, 0.005), order, pong))

    handle(live.sync(PEERS, 0.0), 0.0)
    tick = 0
    while True:
        next_tick = tick * CONFIG.tick_interval + 0.013  # ticks never land exactly on pongs
        if next_tick > seconds:
            break
        while pongs and pongs[0][0] <= next_tick:
            at, _, pong = heapq.heappop(pongs)
            handle(live.on_pong(pong, at).effects, at)
        handle(live.tick(next_tick).effects, next_tick)
        tick += 1
    return run


def healthy_violations(run: Run, seconds: float) -> list[str]:
    """Everything that must not happen to peers that answer every ping, as readable lines."""
    live = run.liveness
    assert live is not None
    found = []
    for peer in PEERS:
        entry = live.peers[peer]
        if run.evictions[peer]:
            found.append(f"{peer} evicted at {run.evictions[peer]}")
        if run.resolutions[peer] != [0.0]:
            found.append(f"{peer} re-resolved at {run.resolutions[peer][1:]}")
        if not entry.resolved:
            found.append(f"{peer} never resolved")
        if entry.detector.suspected or entry.suspected_since is not None:
            found.append(f"{peer} suspected")
        if entry.last_pong_at is None or seconds - entry.last_pong_at > CONFIG.heartbeat_interval:
            found.append(f"{peer} has no recent heartbeat")
    if live.counters["unknown_pongs"]:
        found.append(f"{live.counters['unknown_pongs']} pongs named a path nobody watches")
    # Every heartbeat counted: two pings a second per peer, each answered.
    if live.counters["pongs"] < len(PEERS) * seconds * 2 - len(PEERS) * 2:
        found.append(f"only {live.counters['pongs']} pongs counted")
    return found


@pytest.mark.parametrize(
    ("pong_names", "healthy"),
    [
        pytest.param(lambda supervisor: supervisor, True, id="supervisor-path"),
        # Negative control, the Sirius wiring: the pong names the membership child. The same
        # assertions must fail for it, or they would prove nothing. In Sirius the ref was
        # "resolved" by a lookup, so the symptom was silent churn (evict, re-resolve, every few
        # seconds); here a ref only counts as resolved once a pong naming its path arrives, so
        # the same mistake is loud instead: no ref is ever confirmed, every peer is suspected
        # and every pong is counted and logged as naming a path nobody watches.
        pytest.param(membership_path, False, id="sirius-membership-child-path"),
    ],
)
def test_healthy_peers_are_never_evicted_or_re_resolved_over_60s(
    pong_names: Callable[[str], str], healthy: bool
) -> None:
    run = run_observer(60.0, answers_as=pong_names)
    violations = healthy_violations(run, 60.0)
    if healthy:
        assert violations == []
        return
    assert violations, "the healthy-cluster check cannot tell the Sirius keying apart"
    for peer in PEERS:
        assert f"{peer} never resolved" in violations
        assert f"{peer} suspected" in violations
    assert run.liveness is not None
    assert run.liveness.counters["unknown_pongs"] >= len(PEERS) * 10


def test_a_stopped_supervisor_is_evicted_within_the_threshold() -> None:
    victim = PEERS[2]
    run = run_observer(60.0, stopped_at={victim: 30.0})
    assert run.evictions[victim], "the silent peer was never evicted"
    first = run.evictions[victim][0]
    # Its last pong answered a ping sent before 30 s; eviction comes at most one tick after
    # the ref TTL has run out from that pong.
    assert 30.0 + CONFIG.ref_ttl - CONFIG.heartbeat_interval < first
    assert first <= 30.0 + 0.005 + CONFIG.ref_ttl + CONFIG.tick_interval
    # Evicted once and re-resolved at once; then probed with back-off, not evicted again and
    # again (an unconfirmed ref is probed, not churned).
    assert run.resolutions[victim] == [0.0, first]
    assert run.evictions[victim] == [first]
    assert run.liveness is not None
    entry = run.liveness.peers[PEERS[2]]
    assert not entry.resolved
    assert entry.detector.suspected
    assert entry.probe_backoff == CONFIG.resolve_interval_max
    for peer in PEERS:
        if peer != victim:
            assert run.evictions[peer] == []
            assert run.resolutions[peer] == [0.0]
            assert not run.liveness.peers[peer].detector.suspected


def test_make_pong_names_the_supervisor_that_was_pinged() -> None:
    """The keying function itself: what the pong names is the pinger's table key."""
    for peer in PEERS:
        pong = make_pong(Ping(42), peer, incarnation=9)
        assert pong == Pong(peer, 9, 42)
        assert pong.supervisor in {p for p in PEERS}
        assert pong.supervisor != membership_path(peer)


def test_pongs_are_matched_by_the_path_they_name_not_by_who_sends_them() -> None:
    live = Liveness(CONFIG)
    live.sync(PEERS[:1], 0.0)
    live.tick(0.0)
    report = live.on_pong(Pong(membership_path(PEERS[0]), 1, 1), 0.01)
    assert not report.known
    assert not live.peers[PEERS[0]].resolved
    report = live.on_pong(Pong(PEERS[0], 1, 1), 0.02)
    assert report.known
    assert live.peers[PEERS[0]].resolved


def test_late_pongs_restart_the_clock_without_polluting_the_history() -> None:
    """A peer stopped and continued answers a burst of queued pings at once; those near-zero
    intervals must not teach the detector that heartbeats come in bursts."""
    live = Liveness(CONFIG)
    peer = PEERS[0]
    live.sync([peer], 0.0)
    now = 0.0
    seqs = []
    for _ in range(40):  # steady: 20 s of heartbeats, each answered after 1 ms
        for effect in live.tick(now).effects:
            if isinstance(effect, Send):
                seqs.append(effect.message.seq)
                live.on_pong(make_pong(effect.message, peer, 1), now + 0.001)
        now += 0.5
    detector = live.peers[peer].detector
    samples, mean = detector.samples, detector.mean_interval
    # Stopped for 5 s: pings pile up unanswered, then all are answered in one burst.
    queued = []
    for _ in range(50):
        for effect in live.tick(now).effects:
            if isinstance(effect, Send):
                queued.append(effect.message)
        now += 0.1
    assert live.peers[peer].detector.suspected
    for ping in queued:
        live.on_pong(make_pong(ping, peer, 1), now)
    assert not detector.suspected, "the burst proves the peer is back"
    assert detector.samples <= samples + 1
    assert abs(detector.mean_interval - mean) < 0.05
    assert live.counters["late_pongs"] >= len(queued) - 2


def test_a_paused_observer_forgives_the_silence_it_caused() -> None:
    live = Liveness(CONFIG)
    live.sync(PEERS, 0.0)
    now = 0.0
    while now < 10.0:
        for effect in live.tick(now).effects:
            if isinstance(effect, Send):
                live.on_pong(make_pong(effect.message, effect.to, 1), now + 0.002)
        now = round(now + 0.1, 6)
    # This node is descheduled for 6 s: no ticks, so no pings and no pongs.
    now += 6.0
    report = live.tick(now)
    assert report.changes == [], "the peers were accused of this node's own pause"
    assert not any(isinstance(e, EvictRef) for e in report.effects)
    assert live.counters["observer_pauses"] == 1
