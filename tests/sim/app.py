"""What each simulated node runs above the core: the session layer over a small deterministic
state machine, and a snapshot store with the WAL store's semantics, all in memory.

* :class:`SimUserMachine` counts commands and keeps a hash chain of them; a command written by
  a session client (``b"s<session>:<seq>"``) must arrive exactly once and in sequence order
  per session, or the machine records a violation (raised by the cluster after the apply: the
  session layer turns exceptions into results, so raising here would hide it).
* :class:`SimApp` is the node's state machine as the shell would build it: the real
  :class:`~consensus.sessions.SessionStateMachine` over the user machine, applied per command
  of each entry (the shell's batch format), plus a chain over every entry's results so that
  any divergence between replicas, sessions included, shows at the index where it happens.
* :class:`SnapshotStore` keeps complete snapshots (newest two) and one partial transfer, all
  durable at once (a crash keeps them), like ``wal.SnapshotStore`` with a checkpoint per chunk.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, NamedTuple

import msgpack

from consensus.messages import Entry, EntryKind
from consensus.sessions import SessionStateMachine
from consensus.shell.batching import decode_commands
from consensus.snapshots import ChunkWrite, SnapshotInfo, decode_header, encode_header

COMMAND = int(EntryKind.COMMAND)
_CHAIN = struct.Struct("<I")


class Meta(NamedTuple):
    """The shell's EntryMeta, as the session layer and the user machine see it."""

    index: int
    term: int
    timestamp: int
    position: int = 0


class SimUserMachine:
    def __init__(self) -> None:
        self.count = 0
        self.digest = 0
        self.last_seq: dict[int, int] = {}  # session -> last sequence number applied
        self.violation: str | None = None
        # (session, expired, index, position) of every close seen since the last look
        self.closed: list[tuple[int, bool, int, int]] = []
        # (session, seq, index, position, result) of every session command applied
        self.session_applies: list[tuple[int, int, int, int, int]] = []

    def apply(self, command: bytes, meta: Any) -> Any:
        self.count += 1
        self.digest = zlib.crc32(command, self.digest ^ meta.index)
        if command.startswith(b"s"):
            session_text, _, seq_text = command[1:].partition(b":")
            session, seq = int(session_text), int(seq_text)
            last = self.last_seq.get(session, 0)
            if seq != last + 1 and self.violation is None:
                what = "again" if seq <= last else f"after {last} (out of order)"
                self.violation = (
                    f"exactly-once: session {session} command {seq} applied {what} at entry "
                    f"{meta.index}"
                )
            self.last_seq[session] = max(last, seq)
            self.session_applies.append((session, seq, meta.index, meta.position, self.count))
        return self.count

    def query(self, payload: bytes) -> Any:
        return self.count

    def session_closed(self, session: int, expired: bool, meta: Any) -> None:
        self.closed.append((session, expired, meta.index, meta.position))

    def snapshot(self) -> bytes:
        # Padded so that snapshots span many chunks of the simulator's small chunk sizes.
        state = [self.count, self.digest, list(self.last_seq.items())]
        return msgpack.packb(state, use_bin_type=True) + bytes(64 + 4 * self.count)

    def restore(self, data: bytes) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(data)
        count, digest, last_seq = next(unpacker)
        self.count, self.digest, self.last_seq = count, digest, dict(last_seq)


class SimApp:
    def __init__(self) -> None:
        self.user = SimUserMachine()
        self.sessions = SessionStateMachine(self.user)
        self.chain = 0

    def apply_entry(self, entry: Entry) -> list[Any] | None:
        """Apply one committed entry; the per-command results of a command entry."""
        results = None
        if entry.kind == COMMAND:
            apply = self.sessions.apply
            index, term, timestamp = entry.index, entry.term, entry.timestamp
            results = [
                apply(payload, Meta(index, term, timestamp, position))
                for position, payload in enumerate(decode_commands(entry.payload))
            ]
        self.chain = zlib.crc32(repr((entry.index, results)).encode(), self.chain)
        return results

    def snapshot(self) -> bytes:
        return _CHAIN.pack(self.chain) + self.sessions.snapshot()

    def restore(self, data: bytes) -> None:
        (self.chain,) = _CHAIN.unpack_from(data)
        self.sessions.restore(data[_CHAIN.size :])

    def session_table(self) -> bytes:
        """The session table alone (for comparing replicas)."""
        sessions = self.sessions
        return msgpack.packb(
            [
                (s.id, s.timeout, s.last_active, s.last_seq, sorted(s.results.items()))
                for s in sorted(sessions.sessions.values(), key=lambda s: s.id)
            ]
        )


class SnapshotStore:
    """A node's durable snapshots: complete ones by (index, term), newest ``keep`` kept, and at
    most one partial one being received."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.complete: dict[tuple[int, int], bytes] = {}
        self.partial: tuple[tuple[int, int], bytearray] | None = None

    def latest(self) -> tuple[SnapshotInfo, bytes] | None:
        """The newest complete snapshot: its info (from its header) and its content."""
        if not self.complete:
            return None
        key = max(self.complete)
        content = self.complete[key]
        info, _ = decode_header(content, len(content), zlib.crc32(content))
        return info, content

    def body(self, key: tuple[int, int]) -> bytes:
        """The state machine bytes of a complete snapshot (after its header)."""
        content = self.complete[key]
        _, start = decode_header(content)
        return content[start:]

    def write(self, info: SnapshotInfo, body: bytes) -> SnapshotInfo:
        """Take a local snapshot: header + body, complete at once."""
        content = encode_header(info.index, info.term, info.timestamp, info.membership) + body
        self._publish((info.index, info.term), content)
        return SnapshotInfo(
            info.index,
            info.term,
            info.membership,
            len(content),
            zlib.crc32(content),
            info.timestamp,
        )

    def read(self, key: tuple[int, int], offset: int, size: int) -> bytes | None:
        content = self.complete.get(key)
        return None if content is None else content[offset : offset + size]

    def receive(self, write: ChunkWrite) -> tuple[int, bool]:
        """Carry out a ChunkWrite: (bytes now held durably, complete)."""
        key = (write.index, write.term)
        if key in self.complete:
            return write.size, write.done or len(self.complete[key]) == write.size
        if self.partial is None or self.partial[0] != key:
            self.partial = (key, bytearray())  # any other partial snapshot is discarded
        buffer = self.partial[1]
        if write.offset == len(buffer):
            buffer += write.data
        if not write.done or len(buffer) != write.size:
            return len(buffer), False
        self.partial = None
        content = bytes(buffer)
        if zlib.crc32(content) != write.crc:
            return 0, False  # the leader starts over
        self._publish(key, content)
        return len(content), True

    def _publish(self, key: tuple[int, int], content: bytes) -> None:
        self.complete[key] = content
        for old in sorted(self.complete)[: -self.keep]:
            del self.complete[old]
