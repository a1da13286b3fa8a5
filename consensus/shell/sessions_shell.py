"""Where the node shell puts exactly-once client sessions: between the state machine actor
and the user's state machine.

The session logic itself is sans-IO and lives in :mod:`consensus.sessions`
(:class:`~consensus.sessions.SessionStateMachine`); this module only decides how the shell
uses it, so there is one source of truth for what a session envelope means:

* every node wraps the user's machine once, in the state machine actor, and so does every
  HTTP follower (``follow.follower``), so plain commands, session envelopes and the batches
  that carry them are applied alike on every replica and every follower;
* the wrapper's ``snapshot()``/``restore()`` are what the snapshot shell writes and installs,
  so the session table (each session's last sequence number and cached results) travels in
  the same snapshot file as the user's state, and a restart, an InstallSnapshot or a
  compaction can neither lose a session nor apply a retried command twice;
* queries go straight to the user's machine (they carry no session).
"""

from __future__ import annotations

from typing import Any

from consensus.sessions import SessionStateMachine


def with_sessions(machine: Any) -> SessionStateMachine:
    """The user's ``machine`` behind the session layer (as is if it already is one)."""
    if isinstance(machine, SessionStateMachine):
        return machine
    return SessionStateMachine(machine)


def user_machine(machine: Any) -> Any:
    """The user's own machine behind a possible session layer (for tests and tools)."""
    return machine.machine if isinstance(machine, SessionStateMachine) else machine
