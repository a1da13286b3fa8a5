"""Messages shared by the actor tests and the peer node they start in another process."""

from __future__ import annotations

from actors import message


@message("test.seq")
class Seq:
    """One numbered tell from one sender; the sink checks per-sender order."""

    stream: str
    n: int


@message("test.report")
class Report:
    """Ask the sink what it has seen."""


@message("test.echo")
class Echo:
    payload: bytes


@message("test.nested")
class Nested:
    inner: Echo
    items: list[Echo]
    label: str | None


@message("test.stats")
class Stats:
    """Ask a peer node for its system and transport counters."""


@message("test.slow")
class Slow:
    seconds: float
