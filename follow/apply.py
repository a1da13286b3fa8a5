"""Applying a committed entry to a state machine exactly as a Raft node's state machine actor
does (``consensus.shell.state_machine``): only command entries, each entry's batch decoded by
``consensus.shell.batching``, every command applied in order with its ``EntryMeta``, a command
that raises recorded as ``command_failed`` rather than stopping the follower.

The machine given is the one a node's actor applies to: the user's machine behind the session
layer (``consensus.shell.sessions_shell.with_sessions``), so a retried session command that
sits in the log twice takes effect once, as on the voters. A follower and a voter that apply
the same log therefore reach the same state."""

from __future__ import annotations

from typing import Any

import structlog

from consensus.shell.batching import MalformedBatch, decode_commands
from consensus.shell.state_machine import EntryMeta, StateMachine, command_failed
from wal.entry import Entry, EntryKind

log = structlog.get_logger(__name__)
COMMAND = int(EntryKind.COMMAND)


def apply_entry(machine: StateMachine, entry: Entry) -> list[Any] | None:
    """Apply one committed entry; the results of its commands (None for other kinds)."""
    if entry.kind != COMMAND:
        return None  # no-ops and configuration entries do not reach the state machine
    try:
        payloads = decode_commands(entry.payload)
    except MalformedBatch as exc:
        log.warning("follow.malformed_batch", index=entry.index, error=str(exc))
        return [command_failed(exc)]
    index, term, timestamp = entry.index, entry.term, entry.timestamp
    out = []
    for position, payload in enumerate(payloads):
        try:
            out.append(machine.apply(payload, EntryMeta(index, term, timestamp, position)))
        except Exception as exc:
            log.warning("follow.command_failed", index=index, position=position, error=repr(exc))
            out.append(command_failed(exc))
    return out
