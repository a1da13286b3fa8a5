"""When to fsync: the durability policies as a sans-IO decision object.

Theory of operation
-------------------
:class:`GroupCommit` performs no IO and reads no clock. Its owner (the log-writer actor) tells
it about each append with the current time, asks whether an fsync is due now or when the next
one will be (to arm a timer), performs the fsync itself, and reports it back; the object then
says which index may be acknowledged as persisted.

* ``always``: every append is fsynced before it is acknowledged.
* ``group``: appends accumulate and one fsync covers them all, at most once every
  `interval_ms`; a sync is due as soon as `interval_ms` has passed since the previous one, so a
  lone append after a quiet spell is synced at once and a busy log syncs every interval.
  Acknowledgement waits for the fsync.
* ``never``: entries are acknowledged once they are in the page cache.

Under every policy a batch holding a configuration entry makes a sync due immediately and is
not acknowledged before it (a lost membership change could split the cluster).
"""

from __future__ import annotations

import enum


class Durability(enum.StrEnum):
    ALWAYS = "always"
    GROUP = "group"
    NEVER = "never"


class GroupCommit:
    """Decides when appended entries must be fsynced and which index may be acknowledged."""

    def __init__(
        self, policy: Durability | str, *, interval_ms: float = 2.0, durable_index: int = 0
    ) -> None:
        self.policy = Durability(policy)
        if interval_ms < 0:
            raise ValueError(f"interval_ms must be >= 0, got {interval_ms}")
        self.interval_ms = interval_ms
        self.last_appended = durable_index
        self.durable_index = durable_index
        self._last_sync_ms: float | None = None
        # (first, last) index of each unsynced batch holding a configuration entry, oldest first.
        self._configuration_batches: list[tuple[int, int]] = []

    @property
    def pending(self) -> bool:
        """Whether appended entries are waiting for an fsync."""
        return self.last_appended > self.durable_index

    @property
    def acknowledged_index(self) -> int:
        """The highest index that may be reported as persisted."""
        if self.policy is not Durability.NEVER:
            return self.durable_index
        if self._configuration_batches:
            return self._configuration_batches[0][0] - 1
        return self.last_appended

    def appended(
        self, first_index: int, last_index: int, now_ms: float, *, configuration: bool = False
    ) -> bool:
        """Record an append of entries first_index..last_index; returns whether a sync is due.

        Re-appending after a truncation is fine: indexes may go back, never skip.
        """
        if first_index > self.last_appended + 1:
            raise ValueError(
                f"appended({first_index}..): does not follow the last append {self.last_appended}"
            )
        if last_index < first_index:
            raise ValueError(f"appended({first_index}, {last_index}): empty range")
        if first_index <= self.durable_index:
            self.truncated(first_index - 1)
        self.last_appended = last_index
        if configuration:
            self._configuration_batches.append((first_index, last_index))
        return self.sync_due(now_ms)

    def sync_due(self, now_ms: float) -> bool:
        deadline = self.deadline_ms()
        return deadline is not None and now_ms >= deadline

    def deadline_ms(self) -> float | None:
        """When the next fsync should happen (None: none needed); may be in the past."""
        if not self.pending:
            return None
        if self._configuration_batches or self.policy is Durability.ALWAYS:
            return float("-inf")
        if self.policy is Durability.NEVER:
            return None
        if self._last_sync_ms is None:
            return float("-inf")
        return self._last_sync_ms + self.interval_ms

    def synced(self, durable_index: int, now_ms: float) -> int:
        """Record an fsync that made everything up to `durable_index` durable.

        Returns the index that may now be acknowledged.
        """
        if durable_index > self.last_appended:
            raise ValueError(
                f"synced({durable_index}): beyond the last append {self.last_appended}"
            )
        self.durable_index = max(self.durable_index, durable_index)
        self._last_sync_ms = now_ms
        self._configuration_batches = [
            batch for batch in self._configuration_batches if batch[1] > self.durable_index
        ]
        return self.acknowledged_index

    def truncated(self, last_index: int) -> None:
        """The log was cut back to `last_index` (a Raft conflict)."""
        self.last_appended = min(self.last_appended, last_index)
        self.durable_index = min(self.durable_index, last_index)
        self._configuration_batches = [
            (first, min(last, last_index))
            for first, last in self._configuration_batches
            if first <= last_index
        ]
