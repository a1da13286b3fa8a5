"""Errors raised to users of the actor runtime.

Two families, as in h11: :class:`ActorError` subclasses are what a caller sees (an ask that
failed, a misuse of the API); network input that violates the protocol is a
:class:`actors.wire.FrameError`, which the transport drops and counts and never raises to
user code.

Every ask failure names the target path and the message type, because "an ask timed out" with
no subject is what made Sirius' start-up timeouts so hard to diagnose.
"""

from __future__ import annotations


class ActorError(Exception):
    """Base of every error the actor runtime raises to its users."""


class AskError(ActorError):
    """An ask did not produce a reply. `target` is the path asked, `message_type` the tag or
    class name of the message."""

    kind = "ask_failed"

    def __init__(self, target: str, message_type: str, detail: str) -> None:
        self.target = target
        self.message_type = message_type
        self.detail = detail
        super().__init__(f"ask {message_type} -> {target}: {detail}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.target, self.message_type, self.detail))


class AskTimeout(AskError, TimeoutError):
    """No reply within the ask's timeout."""

    kind = "timeout"


class ActorNotFound(AskError):
    """No actor lives at the target path (answered at once, never by timeout)."""

    kind = "not_found"


class UnhandledMessage(AskError):
    """The target's current behaviour does not handle this message type."""

    kind = "unhandled"


class ActorFailed(AskError):
    """The target raised while handling the message; it is being supervised."""

    kind = "failed"


class ActorStopped(AskError):
    """The target stopped before it handled the message."""

    kind = "stopped"


class Undeliverable(AskError):
    """The transport could not send the message (peer queue full, unknown peer, bad frame)."""

    kind = "undeliverable"


FAILURE_KINDS: dict[str, type[AskError]] = {
    cls.kind: cls
    for cls in (
        AskTimeout,
        ActorNotFound,
        UnhandledMessage,
        ActorFailed,
        ActorStopped,
        Undeliverable,
    )
}


class ActorNameTaken(ActorError):
    """A sibling with this name already exists."""


class SystemShutDown(ActorError):
    """The actor system has been shut down."""
