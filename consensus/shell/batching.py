"""The payload of a command entry: one client command, or a batch of commands in one entry.

The leader's role actor turns every client command queued in its mailbox since its last
``Flush`` into *one* Raft entry, so that every later hop (WAL write, AppendEntries to each
follower, their WAL writes, commit, the state machine's ``Apply``, the answer) costs per
batch, not per command. This module owns how such an entry's payload is laid out.

Format
------
* A batch of two or more commands: the byte ``0xC1`` followed by a msgpack array of the
  commands' payloads (each a ``bin``), in the order they are applied.
* A single command: its payload as is, so a log written when the cluster is idle holds the
  plain commands (readable by ``waltool range``, compactable by ``wal.kv_compaction``).
  A single command whose payload itself starts with ``0xC1`` is written as a batch of one,
  which keeps the format unambiguous for any bytes.

``0xC1`` is the one byte msgpack never uses, so no msgpack-encoded command (every example's
encoding) is ever mistaken for a batch. ``wal.kv_compaction.msgpack_kv_key`` reads the same
layout: a batch entry of the kv example's puts and deletes carries all their keys, and is
compacted away once every one of its commands is superseded.
"""

from __future__ import annotations

import msgpack

BATCH_MARK = 0xC1
_MARK = bytes((BATCH_MARK,))


class MalformedBatch(ValueError):
    """An entry payload that starts with the batch mark but is not a batch."""


def encode_commands(payloads: list[bytes]) -> bytes:
    """The entry payload carrying ``payloads`` (at least one), in order."""
    if len(payloads) == 1:
        only = payloads[0]
        if not only or only[0] != BATCH_MARK:
            return only
    return _MARK + msgpack.packb(payloads, use_bin_type=True)


def decode_commands(payload: bytes) -> list[bytes]:
    """The commands an entry payload carries, in order."""
    if not payload or payload[0] != BATCH_MARK:
        return [payload]
    try:
        commands = msgpack.unpackb(memoryview(payload)[1:], raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise MalformedBatch(f"batch does not decode: {exc}") from exc
    if type(commands) is not list or not all(type(c) is bytes for c in commands):
        raise MalformedBatch("a batch is an array of byte strings")
    return commands
