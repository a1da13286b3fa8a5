"""The installed view, its recent history, and anti-entropy between configurations. Sans-IO.

Theory of operation
-------------------
Every membership message carries the sender's ``(epoch, config_id)``. Consensus makes the
configurations one chain, so epochs order them. When a member receives a message from

* an **older** configuration, it answers the sender with what it is missing (rate-limited per
  peer, ``sync_interval``): a :class:`ViewChain` of the cuts decided since the sender's view
  when this member still remembers them (``history`` of them are kept), else a
  :class:`ViewSnapshot` of the whole member list. The lagging member applies the cuts one by
  one, checking each resulting configuration id, so it ends in exactly the same view;
* a **newer** configuration, it asks the sender with a :class:`SyncRequest` (also
  rate-limited) and keeps messages of the very next configuration aside to replay after it
  caught up (``ahead_buffer``), so the alerts and votes of a round that started without it
  are not lost.

Probes and their acks carry the configuration too and flow every heartbeat, so a member that
missed a view change (a lost message, a partition) learns of it within about one heartbeat
after it can talk to the cluster again, without any extra traffic while views agree. This is
the anti-entropy the 10,000-node Akka experiment added to Rapid after members that missed
the batched votes stayed behind in an old view.
"""

from __future__ import annotations

from collections import deque

from membership.rapid.messages import Proposal, ViewChain, ViewSnapshot
from membership.rapid.topology import Configuration

_RATE_TABLE_LIMIT = 4096


class View:
    def __init__(self, config: Configuration, history: int, sync_interval: float) -> None:
        self.config = config
        self.sync_interval = sync_interval
        # (from epoch, from id, cut, resulting id) of the latest decided view changes.
        self._steps: deque[tuple[int, str, Proposal, str]] = deque(maxlen=history)
        self._answered: dict[str, float] = {}
        self._asked: dict[str, float] = {}

    def advance(self, config: Configuration, cut: Proposal | None) -> None:
        """Install `config`; `cut` is the decided cut that led to it (None: a snapshot)."""
        old = self.config
        if cut is not None and config.epoch == old.epoch + 1:
            self._steps.append((old.epoch, old.id, cut, config.id))
        else:
            self._steps.clear()  # the chain from the remembered views has a hole now
        self.config = config

    def catch_up(self, me: str, epoch: int, config_id: str) -> ViewChain | ViewSnapshot:
        """What a member still at (epoch, config_id) needs to reach our view."""
        steps = list(self._steps)
        for i, (from_epoch, from_id, _, _) in enumerate(steps):
            if from_epoch == epoch and from_id == config_id:
                tail = steps[i:]
                return ViewChain(
                    me,
                    epoch,
                    config_id,
                    tuple(cut for _, _, cut, _ in tail),
                    tuple(to_id for _, _, _, to_id in tail),
                )
        return self.snapshot(me)

    def snapshot(self, me: str) -> ViewSnapshot:
        config = self.config
        return ViewSnapshot(me, config.epoch, config.id, config.members)

    # ------------------------------------------------------------------ rate limits

    def may_answer(self, peer: str, now: float) -> bool:
        return self._allow(self._answered, peer, now)

    def may_ask(self, peer: str, now: float) -> bool:
        return self._allow(self._asked, peer, now)

    def _allow(self, table: dict[str, float], peer: str, now: float) -> bool:
        last = table.get(peer)
        if last is not None and now - last < self.sync_interval:
            return False
        if len(table) >= _RATE_TABLE_LIMIT:
            cutoff = now - self.sync_interval
            for key in [k for k, t in table.items() if t < cutoff]:
                del table[key]
        table[peer] = now
        return True
