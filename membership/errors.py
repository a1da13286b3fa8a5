"""The two kinds of membership error (as in h11): our own bug, and a peer's bad input.

An :class:`IllegalTransition` is a bug in this node and raises; a :class:`ProtocolViolation`
is a peer sending something malformed, and only ever drops that message.
"""

from __future__ import annotations


class IllegalTransition(RuntimeError):
    """A member state change the transition table forbids: a bug, never a peer's fault."""

    def __init__(self, node: str, old: str, new: str) -> None:
        self.node = node
        self.old = old
        self.new = new
        super().__init__(f"illegal member transition {old} -> {new} for {node}")


class ProtocolViolation(ValueError):
    """A peer's message that does not make sense (bad path, unknown status): dropped."""
