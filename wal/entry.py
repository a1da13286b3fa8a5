"""What a log stores: :class:`Entry` and the well-known entry kinds.

The log knows nothing of Raft; it stores opaque payloads tagged with an index, a term, a one-byte
kind and the leader's wall-clock timestamp. Only one kind has a meaning to the log itself:
:attr:`EntryKind.CONFIGURATION` entries are made durable under every durability policy
(OpenDaylight's rule: losing a membership change is never acceptable).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable


class EntryKind(enum.IntEnum):
    """Well-known values of the entry `kind` byte. Any other value 0-255 is allowed too."""

    COMMAND = 0
    NOOP = 1
    CONFIGURATION = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One log entry.

    `timestamp` is the leader's wall-clock time in milliseconds when it accepted the entry;
    state machines, HTTP followers and age-based tombstone purging read it. `kind` is kept as
    a plain int so unknown kinds survive a round trip; compare it with :class:`EntryKind`.
    Field ranges (u64 index/term/timestamp, u8 kind) are checked when the entry is encoded.
    """

    index: int
    term: int
    kind: int
    timestamp: int
    payload: bytes


def contains_configuration(entries: Iterable[Entry]) -> bool:
    """Whether any entry is a configuration entry (which must be fsynced before it is acked)."""
    configuration = EntryKind.CONFIGURATION
    return any(entry.kind == configuration for entry in entries)
