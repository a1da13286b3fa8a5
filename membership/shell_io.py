"""The IO both membership actors (the gossip one and Rapid's) do the same way: turning a
``Subscribe`` into the subscriber's ref, and sending without letting a send error reach the
actor (a membership actor must keep ticking whatever one peer or subscriber does)."""

from __future__ import annotations

from typing import Any

from actors import ActorError, ActorRef


def subscriber_ref(ctx: Any, subscriber: str, sender: ActorRef | None) -> ActorRef | None:
    """Who a ``Subscribe(subscriber)`` subscribes: the path it names, else its sender; None
    (logged) when it gives neither."""
    if subscriber:
        return ctx.system.ref(subscriber)
    if sender is not None:
        return sender
    ctx.log.warning("subscribe without a subscriber path or a sender: ignored")
    return None


def tell_logged(ctx: Any, ref: ActorRef, message: Any) -> None:
    """``ref.tell(message)``; a send the runtime refuses is logged, never raised."""
    try:
        ref.tell(message)
    except ActorError as exc:  # e.g. a remote path on a system without a transport
        ctx.log.warning("cannot send", to=ref.path.text, error=str(exc))
