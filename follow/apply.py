"""Applying a committed entry to a follower's state machine through the very function a Raft
node's state machine actor uses (``consensus.shell.state_machine.apply_command_entry``): only
command entries, each entry's batch decoded, every command applied in order with its
``EntryMeta``, a command that raises recorded as ``command_failed`` rather than stopping the
follower.

The machine given is the one a node's actor applies to: the user's machine behind the session
layer (``consensus.shell.sessions_shell.with_sessions``), so a retried session command that
sits in the log twice takes effect once, as on the voters. A follower and a voter that apply
the same log therefore reach the same state."""

from __future__ import annotations

from typing import Any

import structlog

from consensus.shell.state_machine import StateMachine, apply_command_entry
from wal.entry import Entry, EntryKind

log = structlog.get_logger(__name__)
COMMAND = int(EntryKind.COMMAND)


def apply_entry(machine: StateMachine, entry: Entry) -> Any:
    """Apply one committed entry; the results of its commands (None for other kinds)."""
    if entry.kind != COMMAND:
        return None  # no-ops and configuration entries do not reach the state machine
    return apply_command_entry(machine, entry, log)
