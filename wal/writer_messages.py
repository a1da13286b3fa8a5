"""The protocol of the log-writer actor (`wal.writer_actor`): its messages and their replies.

All tags start with ``wal.``. :class:`wal.entry.Entry` itself is registered as ``wal.entry``, so
the Raft roles hand the writer the very objects the log stores (no conversion per entry), and
the wire checks every field of an entry that comes from another process.

Requests and what answers them:

* :class:`AppendBatch` (tell or ask): answered by :class:`Persisted` once the entries are
  durable as the policy says, told to the writer's subscriber if it has one, else to the
  sender; an ask also gets it as its reply. ``Persisted(up_to_index, term)`` is cumulative:
  every entry up to that index, ending with one of that term, is persisted.
* :class:`SaveHardState`: answered by :class:`HardStateSaved` once the state is on disk.
* :class:`CompactThrough`: :class:`LogCompacted`; :class:`InstallSnapshotReset`: :class:`LogReset`.
* :class:`CompactKeys`: :class:`KeysCompacted` when the background kv compaction is installed.
* :class:`StatusRequest`: :class:`WriterStatus`.

Requests are handled in inbox order: a SaveHardState queued after an AppendBatch is saved after
that batch was written, and an AppendBatch after a SaveHardState is written after the state
is durable.
"""

from __future__ import annotations

from actors import message
from wal.entry import Entry

# Register the log's own entry type for the wire (frozen, slotted dataclass already).
message("wal.entry")(Entry)


@message("wal.append_batch")
class AppendBatch:
    """Append `entries` (contiguous, continuing the log), after removing every entry above
    `truncate_after` when it is not None (a Raft log conflict)."""

    entries: list[Entry]
    truncate_after: int | None


@message("wal.persisted")
class Persisted:
    """Everything up to `up_to_index` is durable (as the durability policy defines it)."""

    up_to_index: int
    term: int


@message("wal.save_hard_state")
class SaveHardState:
    term: int
    voted_for: str | None


@message("wal.hard_state_saved")
class HardStateSaved:
    term: int
    voted_for: str | None


@message("wal.compact_through")
class CompactThrough:
    """Forget entries up to `index`: a snapshot covers them."""

    index: int


@message("wal.log_compacted")
class LogCompacted:
    first_index: int


@message("wal.install_snapshot_reset")
class InstallSnapshotReset:
    """Discard the whole log; it continues after the installed snapshot's (index, term)."""

    index: int
    term: int


@message("wal.log_reset")
class LogReset:
    index: int
    term: int


@message("wal.compact_keys")
class CompactKeys:
    """Run key-value compaction (`wal.kv_compaction`) up to the committed `through_index`,
    purging DELETE tombstones older than `purge_deletes_older_than_ms` (None: keep them)
    relative to `now_ms`, the caller's wall clock. Appends go on while it runs."""

    through_index: int
    purge_deletes_older_than_ms: int | None
    now_ms: int


@message("wal.keys_compacted")
class KeysCompacted:
    segments_rewritten: int
    entries_removed: int
    tombstones_purged: int
    bytes_freed: int


@message("wal.status_request")
class StatusRequest:
    pass


@message("wal.writer_status")
class WriterStatus:
    policy: str
    first_index: int
    last_index: int
    last_term: int
    durable_index: int
    acknowledged_index: int
    segments: int
    bytes: int
    term: int  # the saved hard state, which a restarting node reads from here
    voted_for: str | None
