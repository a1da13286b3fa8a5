"""Settings of the Rapid-style membership protocol, checked on construction.

Every timing is in seconds of whatever clock the caller feeds in (the actor shell's monotonic
clock, or the simulator's). The defaults are sized for a LAN and clusters of 10 to 10,000
members; the comments say what each one trades.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from membership.phi import DetectorConfig

# Rapid's edge detector probes once a second. An acceptable pause of 4 s puts the phi threshold
# about 6 s after the last answered probe: five probe round trips in a row can be lost (2 %
# loss each way makes that a 1-in-10^7 event per edge and second) before an observer alerts.
# Rapid's watermarks absorb the rare single false alert; the pause keeps them rare.
RAPID_DETECTOR = DetectorConfig(
    threshold=8.0,
    max_sample_size=100,
    min_std_deviation=0.2,
    acceptable_pause=4.0,
    first_heartbeat_estimate=1.0,
)


@dataclass(frozen=True)
class RapidConfig:
    """How a Rapid member watches its subjects, batches alerts, gossips and agrees."""

    # --- topology and cut detection (Rapid's K, H, L)
    k: int = 10  # rings: every member has K observers and K subjects
    high: int = 9  # H: reports from this many rings make a subject's change stable
    low: int = 3  # L: a subject with L..H-1 reports blocks every proposal (unstable)

    # --- edge failure detection
    heartbeat_interval: float = 1.0  # each observer probes each subject this often
    detector: DetectorConfig = field(default_factory=lambda: RAPID_DETECTOR)
    # A probe round this late means this node itself stalled: its subjects' silence is forgiven.
    self_pause_tolerance: float = 1.5

    # --- alert batching (observer side) and the proposal delay (every member)
    batch_window: float = 0.2  # flush an observer's alerts after this long without a new one
    batch_max_delay: float = 1.0  # ... and never hold the oldest alert longer than this
    # Vote only once the stable set has not changed for this long (see cut_detector.py).
    settle: float = 0.5
    # A subject unstable this long makes its observers that have not reported it report it
    # (Rapid's reinforcement), so a half-reported subject cannot block proposals forever.
    reinforce_after: float = 10.0

    # --- dissemination: push gossip of aggregated reports and votes
    gossip_interval: float = 0.2
    gossip_fanout: int = 4
    gossip_rounds: int = 2  # an entry is pushed in this many rounds after it last changed

    # --- agreement
    # A member that voted (or saw votes) and has not decided after this long, plus a random
    # delay, starts a classic Paxos round as coordinator.
    fast_round_timeout: float = 3.0
    # Mean of that random delay is this times the cluster size: about one coordinator per
    # this many seconds across the whole cluster (Rapid's rate), so rounds rarely duel.
    classic_jitter_per_member: float = 0.5
    classic_retry: float = 2.0  # a coordinator whose round has not decided retries after this

    # --- anti-entropy and history
    sync_interval: float = 0.5  # answer (or ask) any one lagging peer at most this often
    history: int = 32  # decided view changes kept, to catch lagging peers up by deltas
    ahead_buffer: int = 256  # messages of the next configuration kept until we catch up

    # --- joining
    join_timeout: float = 4.0  # wait this long for a join answer before asking again
    join_phase2_attempts: int = 3  # resend the join to the observers this often, then restart
    join_backoff_max: float = 8.0
    # A seed asked during a view change holds up to this many joiners and lets them in when
    # it ends (beyond that it turns them away to retry later).
    join_hold_max: int = 4096
    # A member that learns it was removed joins again under a new incarnation.
    rejoin_when_removed: bool = False

    def __post_init__(self) -> None:
        if self.k < 3 or self.k > 62:
            raise ValueError(f"k must be between 3 and 62 (ring masks are 64-bit), got {self.k}")
        if not 1 <= self.low <= self.high <= self.k:
            raise ValueError(
                f"watermarks must satisfy 1 <= low <= high <= k, got low={self.low} "
                f"high={self.high} k={self.k}"
            )
        positive = (
            "heartbeat_interval",
            "self_pause_tolerance",
            "batch_window",
            "batch_max_delay",
            "reinforce_after",
            "gossip_interval",
            "fast_round_timeout",
            "classic_jitter_per_member",
            "classic_retry",
            "sync_interval",
            "join_timeout",
            "join_backoff_max",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.settle < 0:
            raise ValueError(f"settle must be >= 0, got {self.settle}")
        for name in ("gossip_fanout", "gossip_rounds", "history", "join_phase2_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("ahead_buffer", "join_hold_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_max_delay < self.batch_window:
            raise ValueError("batch_max_delay must not be shorter than batch_window")

    def replace(self, **changes: object) -> RapidConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
