"""The user's replicated state machine and the actor that runs it.

A state machine is any object with ``apply(command, meta) -> result``, ``query(payload) ->
result``, ``snapshot() -> bytes`` and ``restore(data)``. Commands and queries are bytes (the
client's encoding); results go back to clients over the wire, so they must be msgpack-able.
``meta`` carries the entry's index, term and the leader's timestamp, which is the state
machine's only notion of time: it never goes backwards and is identical on every replica.

:class:`StateMachineActor` applies committed entries in order on its own thread, so a slow
command never stalls elections or replication, and reports ``Applied`` to the node supervisor.
A command that raises is a deterministic outcome (every replica runs the same code on the same
input), so it becomes the command's result, :class:`CommandFailed`, instead of crashing the node.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from actors import UNHANDLED, Actor, ActorRef
from consensus.messages import EntryKind
from consensus.shell.protocol import Applied, Apply, QueryResponse


@dataclasses.dataclass(frozen=True, slots=True)
class EntryMeta:
    index: int
    term: int
    timestamp: int  # the leader's clock in ms when it accepted the entry


class StateMachine(Protocol):
    def apply(self, command: bytes, meta: EntryMeta) -> Any: ...

    def query(self, payload: bytes) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


def command_failed(exc: BaseException) -> dict[str, str]:
    """The result recorded for a command whose ``apply`` raised."""
    return {"error": "command_failed", "type": type(exc).__name__, "detail": str(exc)}


@dataclasses.dataclass(slots=True)
class QueryJob:
    """A released read: answer ``reply`` with the state machine's answer to ``payload``."""

    request_id: str
    payload: bytes
    index: int
    reply: Any


class StateMachineActor(Actor):
    """Applies committed entries to the user's state machine, in order, exactly once each."""

    def __init__(self, machine: StateMachine, report_to: ActorRef, applied_index: int) -> None:
        self.machine = machine
        self.report_to = report_to
        self.applied_index = applied_index

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        match message:
            case Apply(entries):
                self._apply(entries)
                return None
            case QueryJob():
                self._query(message)
                return None
        return UNHANDLED

    def _apply(self, entries: list[Any]) -> None:
        results: dict[int, Any] = {}
        last = self.applied_index
        for entry in entries:
            if entry.index <= last:
                continue  # handed out twice across a role change: apply once
            if entry.index != last + 1:
                raise RuntimeError(
                    f"state machine would skip from {last} to {entry.index}: entries out of order"
                )
            if entry.kind == EntryKind.COMMAND:
                meta = EntryMeta(entry.index, entry.term, entry.timestamp)
                try:
                    results[entry.index] = self.machine.apply(entry.payload, meta)
                except Exception as exc:
                    self.ctx.log.warning("command failed", index=entry.index, error=repr(exc))
                    results[entry.index] = command_failed(exc)
            last = entry.index
        self.applied_index = last
        self.report_to.tell(Applied(last, results))

    def _query(self, job: QueryJob) -> None:
        try:
            result = self.machine.query(job.payload)
        except Exception as exc:
            job.reply.success(
                QueryResponse(job.request_id, False, self.applied_index, None, repr(exc), None)
            )
            return
        job.reply.success(
            QueryResponse(job.request_id, True, self.applied_index, result, None, None)
        )
