"""The exceptions of the consensus core, split h11-style into local misuse and remote faults.

* :class:`LocalProtocolError`: the caller (or the core itself) broke a rule, e.g. an illegal
  role transition. It is a bug and raises to the caller.
* :class:`RemoteProtocolError`: a peer sent something no correct peer sends (an entry list
  with a gap, a message from a node that is not a voter). The core drops the message, reports
  the reason in ``Ready.dropped`` and keeps serving.
* :class:`SafetyViolation`: the core found its own state contradicting Raft's guarantees
  (e.g. asked to truncate a committed entry). Continuing could corrupt the replicated state,
  so it raises.
"""

from __future__ import annotations


class ConsensusError(Exception):
    """Base class of the core's errors."""


class LocalProtocolError(ConsensusError):
    """The caller or the core broke a rule of the API."""


class IllegalTransition(LocalProtocolError):
    """A role change the transitions table does not allow."""

    def __init__(self, node: str, old: str, new: str, reason: str) -> None:
        super().__init__(f"{node}: illegal role transition {old} -> {new} ({reason})")
        self.node = node
        self.old = old
        self.new = new


class RemoteProtocolError(ConsensusError):
    """A peer's message breaks the protocol; it is dropped, never the node."""


class SafetyViolation(ConsensusError):
    """The core's state contradicts a Raft safety property."""
