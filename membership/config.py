"""Membership settings and the naming convention of a node's actors.

Every node runs a *node supervisor* at ``/user/node`` with the membership actor as its child
at ``/user/node/membership``. A member is named by its supervisor path; liveness pings go to
that path and the membership protocol (join, gossip) to the ``membership`` child below it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from actors.paths import ActorPath, Address, InvalidActorPath
from membership.phi import AKKA_DEFAULTS, DetectorConfig

SUPERVISOR_NAME = "node"
MEMBERSHIP_NAME = "membership"


def supervisor_path(seed: str) -> str:
    """The canonical node supervisor path for a seed given as an address or a path.

    ``coterie://sys@h:1`` and ``coterie://sys@h:1/user/node`` both give the latter; any other
    path is refused, since pinging some other actor is exactly the Sirius mistake.
    """
    text = seed.strip()
    if "/" not in text.removeprefix("coterie://"):
        address = Address.parse(text)
        return ActorPath(address, ("user", SUPERVISOR_NAME)).text
    path = ActorPath.parse(text)
    if path.elements != ("user", SUPERVISOR_NAME):
        raise InvalidActorPath(
            text, f"path {path.key!r}", f"a seed names a node supervisor (/user/{SUPERVISOR_NAME})"
        )
    return path.text


def membership_path(node: str) -> str:
    """The membership actor of the node whose supervisor path is `node`."""
    return f"{node}/{MEMBERSHIP_NAME}"


def canonical_node(text: str) -> str:
    """Validate a node (supervisor) path received from a peer; raises InvalidActorPath."""
    path = ActorPath.parse(text)
    if len(path.elements) < 2:
        raise InvalidActorPath(text, f"path {path.key!r}", "a node path has a guardian and a name")
    return path.text


@dataclass(frozen=True)
class MembershipConfig:
    """How a node finds its cluster and watches its peers.

    The defaults (heartbeat 0.5 s, acceptable pause 1.5 s, min std-dev 0.1 s, threshold 8)
    detect a SIGKILLed peer in about 2.3 s (median; 99th percentile 2.6 s) and never suspect
    a peer for a stall shorter than 2.0 s. Akka's defaults take about 4.1 s (99th percentile
    4.9 s) and tolerate stalls up to 3.5 s. The trade is a law, not a tuning slip: a stall
    of length S beginning at a random moment is suspected with exactly the probability that a
    crash is detected within S, so faster detection means suspecting long stalls. Suspicion is
    cheap here (unreachable, then reachable; down only after ``down_after``); raise
    ``detector.acceptable_pause`` where multi-second stalls are normal.
    ``membership.detector_sim`` and ``bench/results/membership.json`` have the figures.
    """

    seeds: tuple[str, ...] = ()
    heartbeat_interval: float = 0.5
    tick_interval: float = 0.1
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    # A ref not refreshed by a pong (or a resolution) for this long is evicted and re-resolved.
    ref_ttl: float = 3.0
    # Resolution probes of an evicted ref back off from the heartbeat interval up to this.
    resolve_interval_max: float = 2.0
    # An unreachable member is marked down, then removed, after this long.
    down_after: float = 10.0
    join_backoff_initial: float = 0.25
    join_backoff_max: float = 5.0
    # The first seed forms a new cluster if no other seed answers within this.
    seed_timeout: float = 3.0
    gossip_interval: float = 1.0
    leave_timeout: float = 2.0
    # A tick this late means this node itself was paused: silences that long are forgiven.
    self_pause_tolerance: float = 0.5
    # Removed members are remembered this long so stale gossip cannot bring them back.
    tombstone_ttl: float = 3600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(supervisor_path(s) for s in self.seeds))
        positive = (
            "heartbeat_interval",
            "tick_interval",
            "ref_ttl",
            "resolve_interval_max",
            "down_after",
            "join_backoff_initial",
            "join_backoff_max",
            "seed_timeout",
            "gossip_interval",
            "leave_timeout",
            "self_pause_tolerance",
            "tombstone_ttl",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.ref_ttl <= self.heartbeat_interval:
            raise ValueError("ref_ttl must be longer than the heartbeat interval")
        if self.tick_interval > self.heartbeat_interval:
            raise ValueError("tick_interval must not be longer than the heartbeat interval")
        if self.self_pause_tolerance <= self.tick_interval:
            raise ValueError("self_pause_tolerance must be longer than the tick interval")

    def replace(self, **changes: object) -> MembershipConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def akka_like_config(**changes: object) -> MembershipConfig:
    """A configuration with Akka Cluster's failure-detection defaults, for comparisons."""
    base = MembershipConfig(
        heartbeat_interval=1.0,
        tick_interval=0.1,
        detector=AKKA_DEFAULTS,
        ref_ttl=6.0,
        resolve_interval_max=2.0,
    )
    return base.replace(**changes)
