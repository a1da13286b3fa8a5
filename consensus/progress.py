"""Progress: what a leader knows about one follower's log, and the flow control of sending to it.

Theory of operation
-------------------
A follower is in one of three states:

* ``PROBE``: the leader does not know where the follower's log matches its own (just elected,
  or after a rejection). It sends one AppendEntries at ``next - 1`` and waits for the answer
  (or the next heartbeat answer) before sending another, so a follower far behind is not
  flooded with batches it must reject.
* ``REPLICATE``: the follower matched. The leader streams batches optimistically, advancing
  ``next`` as it sends, with at most ``max_inflight`` batches unacknowledged (the *inflight
  window*). An acknowledgement up to index ``i`` frees every batch ending at or before ``i``.
* ``SNAPSHOT``: ``next`` fell below the leader's first log index (compacted); only a snapshot
  can catch the follower up. ``snapshot`` is the one being sent, ``snapshot_offset`` the
  byte offset the follower last said it holds (the next chunk starts there), and
  ``chunk_in_flight`` the offset of the chunk (or probe) awaiting an answer, if any.

A rejection names the ``prev_log_index`` it rejected; one that is no longer the question the
leader is asking (an older probe, or a batch below the known match) is stale and ignored, so
reordered or duplicated replies never push ``next`` backwards past ``match``.
"""

from __future__ import annotations

import collections
import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consensus.snapshots import SnapshotInfo


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "acked_round",
        "chunk_in_flight",
        "commit_sent",
        "inflight",
        "last_heard",
        "match",
        "max_inflight",
        "next",
        "probe_sent",
        "reading",
        "snapshot",
        "snapshot_offset",
        "snapshot_sent_at",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, now: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.max_inflight = max_inflight
        # last index of each batch sent in REPLICATE and not yet acknowledged, oldest first
        self.inflight: collections.deque[int] = collections.deque()
        # A new leader counts its term start as contact, so check-quorum gives it a full
        # window before it can step down (Copycat stepped fresh leaders down at once).
        self.last_heard = now
        self.acked_round = 0
        self.commit_sent = 0  # the highest commit index this follower was sent
        self.snapshot: SnapshotInfo | None = None
        self.snapshot_offset = 0
        self.snapshot_sent_at = 0
        self.chunk_in_flight: int | None = None
        self.reading = False  # a chunk read was asked of the caller and not yet answered

    # ---------------------------------------------------------------- state changes

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.next = max(self.next, self.match + 1)

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.inflight.clear()
        self.next = self.match + 1

    def become_snapshot(self, snapshot: SnapshotInfo) -> None:
        self.state = ProgressState.SNAPSHOT
        self.inflight.clear()
        self.snapshot = snapshot
        self.snapshot_offset = 0
        self.chunk_in_flight = None
        self.reading = False

    def snapshot_done(self, index: int) -> None:
        """The follower holds everything through ``index`` (it installed the snapshot)."""
        self.snapshot = None
        self.chunk_in_flight = None
        self.reading = False
        self.match = max(self.match, index)
        self.next = self.match + 1
        self.become_probe()

    # ---------------------------------------------------------------- flow control

    @property
    def can_send(self) -> bool:
        if self.state is ProgressState.PROBE:
            return not self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) < self.max_inflight
        return False

    @property
    def inflight_full(self) -> bool:
        return len(self.inflight) >= self.max_inflight

    def sent(self, last_index: int, carried_entries: bool) -> None:
        """An AppendEntries ending at ``last_index`` went out."""
        if self.state is ProgressState.REPLICATE:
            if carried_entries:
                self.inflight.append(last_index)
                self.next = last_index + 1
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def free_oldest(self) -> None:
        """Give up waiting for the oldest batch (a heartbeat answered, the batch did not):
        makes room to send again, which either succeeds or draws a rejection that resyncs."""
        if self.inflight:
            self.inflight.popleft()

    # ---------------------------------------------------------------- responses

    def acknowledged(self, match_index: int) -> bool:
        """The follower holds (durably) everything up to ``match_index``. True if that is news."""
        advanced = match_index > self.match
        if advanced:
            self.match = match_index
            if self.next <= match_index:
                self.next = match_index + 1
        while self.inflight and self.inflight[0] <= match_index:
            self.inflight.popleft()
        if self.state is ProgressState.PROBE:
            # The probe got its answer: the follower matches at match_index, so stream.
            self.become_replicate()
        return advanced

    def rejected(self, reject_index: int, hint_next: int) -> bool:
        """The follower rejected AppendEntries at prev ``reject_index``; ``hint_next`` is where
        the leader's search says to try next. False (and no change) if the reply is stale."""
        if self.state is ProgressState.SNAPSHOT:
            return False  # a late answer to an append sent before the transfer began
        if self.state is ProgressState.REPLICATE:
            if reject_index <= self.match:
                return False
        elif reject_index != self.next - 1:
            return False
        self.next = max(self.match + 1, min(hint_next, reject_index))
        self.become_probe()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value}, match={self.match}, next={self.next}, "
            f"inflight={len(self.inflight)})"
        )
