"""The user's replicated state machine and the actor that runs it.

A state machine is any object with ``apply(command, meta) -> result``, ``query(payload) ->
result``, ``snapshot() -> bytes`` and ``restore(data)``. Commands and queries are bytes (the
client's encoding); results go back to clients over the wire, so they must be msgpack-able.
``meta`` carries the entry's index, term and the leader's timestamp, which is the state
machine's only notion of time: it never goes backwards and is identical on every replica.

One log entry carries a batch of commands (``consensus.shell.batching``): the commands a
leader gathered at once. Each is applied on its own, in order, with ``meta.position`` its place
in the entry; commands of one entry share index, term and timestamp. ``meta.sequence``
(``index << 16 | position``) numbers every command uniquely, increasing in apply order and the
same on every replica (not dense: gaps between entries), for users who need one number per
command, e.g. a key-value store's version.

:class:`StateMachineActor` applies committed entries in order on its own thread, so a slow
command never stalls elections or replication, and reports ``Applied`` to the node supervisor.
A command that raises is a deterministic outcome (every replica runs the same code on the same
input), so it becomes the command's result, :class:`CommandFailed`, instead of crashing the node.

Client sessions (``consensus.sessions``, placed by ``consensus.shell.sessions_shell``): the
actor applies every command through the session layer, which passes plain commands to the
user's machine as they are and applies a session's command once however often it is retried
(answering a retry from the session's cached result); the session table is part of the
snapshot below.

Snapshots (``consensus.shell.snapshot_shell``): on ``TakeSnapshot`` the actor calls the
machine's ``snapshot()`` at its applied index and hands the bytes back (``SnapshotState``,
after the ``Applied`` that covers that index); on ``RestoreSnapshot``, and at start-up from
the latest snapshot, it reads the state machine's bytes from the snapshot file and calls
``restore(data)`` (``data`` may be a ``bytearray``: the snapshot is read into one buffer and
handed over as is, never copied), then applies only what follows the snapshot.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple, Protocol

from actors import UNHANDLED, Actor, ActorRef
from consensus.messages import EntryKind
from consensus.shell.batching import MalformedBatch, decode_commands
from consensus.shell.book import answer
from consensus.shell.metrics import NodeMetrics
from consensus.shell.protocol import Applied, Apply, QueryResponse
from consensus.shell.sessions_shell import with_sessions
from consensus.shell.snapshot_files import SnapshotFiles
from consensus.shell.snapshot_io import RestoreSnapshot, SnapshotState, TakeSnapshot
from consensus.snapshots import SnapshotInfo

# meta.sequence = index << SEQUENCE_SHIFT | position; an entry holds fewer commands than this.
SEQUENCE_SHIFT = 16
MAX_COMMANDS_PER_ENTRY = 1 << SEQUENCE_SHIFT


class EntryMeta(NamedTuple):
    """Where and when a command sits in the log. A named tuple, not a dataclass: one is made
    per applied command, and a tuple costs a third of a frozen dataclass to build."""

    index: int
    term: int
    timestamp: int  # the leader's clock in ms when it accepted the entry
    position: int = 0  # the command's place in its entry's batch

    @property
    def sequence(self) -> int:
        """A unique number per command, increasing in apply order, equal on all replicas."""
        return self.index << SEQUENCE_SHIFT | self.position


class StateMachine(Protocol):
    def apply(self, command: bytes, meta: EntryMeta) -> Any: ...

    def query(self, payload: bytes) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


def command_failed(exc: BaseException) -> dict[str, str]:
    """The result recorded for a command whose ``apply`` raised."""
    return {"error": "command_failed", "type": type(exc).__name__, "detail": str(exc)}


def apply_command_entry(machine: Any, entry: Any, log: Any) -> Any:
    """Apply one committed command entry to ``machine``: its batch decoded, each command applied
    in order with its ``EntryMeta``, a command that raises recorded as :func:`command_failed`.
    The results, one per command (one ``command_failed`` for a batch that does not decode).
    Voters (this module's actor) and HTTP followers (``follow.apply``) both apply through
    here, so the same log gives them the same state."""
    try:
        payloads = decode_commands(entry.payload)
    except MalformedBatch as exc:
        # Every replica decodes the same bytes the same way: a deterministic failure.
        log.warning("malformed command batch", index=entry.index, error=str(exc))
        return command_failed(exc)
    apply = machine.apply
    index, term, timestamp = entry.index, entry.term, entry.timestamp
    out = []
    for position, payload in enumerate(payloads):
        try:
            out.append(apply(payload, EntryMeta(index, term, timestamp, position)))
        except Exception as exc:
            log.warning("command failed", index=index, position=position, error=repr(exc))
            out.append(command_failed(exc))
    return out


@dataclasses.dataclass(slots=True)
class QueryJob:
    """A released read: answer ``reply`` with the state machine's answer to ``payload``."""

    request_id: str
    payload: bytes
    index: int
    reply: Any


class StateMachineActor(Actor):
    """Applies committed entries to the user's state machine, in order, exactly once each."""

    def __init__(
        self,
        machine: StateMachine,
        report_to: ActorRef,
        applied_index: int,
        metrics: NodeMetrics | None = None,
        snapshots: SnapshotFiles | None = None,
        restore_from: SnapshotInfo | None = None,
    ) -> None:
        # Every command goes through the session layer (plain ones pass straight on), and so
        # do snapshots: the session table is saved and restored with the user's state.
        self.machine = with_sessions(machine)
        self.report_to = report_to
        self.applied_index = applied_index
        self.metrics = metrics
        self.snapshots = snapshots
        self.restore_from = restore_from  # the snapshot to start from (restart)

    def pre_start(self) -> None:
        if self.restore_from is not None:
            self._restore(self.restore_from)

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        match message:
            case Apply(entries, waiters):
                self._apply(entries, waiters)
                return None
            case QueryJob():
                self._query(message)
                return None
            case TakeSnapshot():
                self._snapshot()
                return None
            case RestoreSnapshot(info):
                self._restore(info)
                return None
        return UNHANDLED

    def _snapshot(self) -> None:
        try:
            data = self.machine.snapshot()
        except Exception as exc:
            # The state is unharmed: report no snapshot (the log stays uncompacted and the
            # core asks again past the next threshold) rather than failing the actor.
            self.ctx.log.error("state machine snapshot failed", error=repr(exc))
            data = None
        self.report_to.tell(SnapshotState(self.applied_index, data))

    def _restore(self, info: SnapshotInfo) -> None:
        """Replace the state with snapshot ``info``: everything through its index is applied."""
        if self.snapshots is None:
            raise RuntimeError("a snapshot to restore, but no snapshot store was given")
        started = time.perf_counter()
        body = self.snapshots.read_body(info.index, info.term)
        self.machine.restore(body)  # type: ignore[arg-type]  # a bytes-like buffer
        self.applied_index = info.index
        self.ctx.log.info(
            "state machine restored from a snapshot",
            index=info.index,
            term=info.term,
            bytes=len(body),
            seconds=round(time.perf_counter() - started, 3),
        )

    def _apply(self, entries: list[Any], waiters: dict[int, list[Any]]) -> None:
        """Apply a batch of committed entries. The asks in ``waiters`` are answered as soon as
        their entry is applied; the results of every other command entry go back in
        ``Applied.results`` (index -> the list of its commands' results, in order)."""
        started = time.perf_counter()
        results: dict[int, Any] = {}
        last = self.applied_index
        commands = 0
        for entry in entries:
            if entry.index <= last:
                continue  # handed out twice across a role change: apply once
            if entry.index != last + 1:
                raise RuntimeError(
                    f"state machine would skip from {last} to {entry.index}: entries out of order"
                )
            if entry.kind == EntryKind.COMMAND:
                outcome = self._apply_entry(entry)
                group = waiters.get(entry.index)
                if group is None:
                    results[entry.index] = outcome
                else:
                    answer(group, True, entry.index, outcome, None, None)
                commands += len(outcome) if type(outcome) is list else 1
            last = entry.index
        self.applied_index = last
        self.report_to.tell(Applied(last, results))
        if self.metrics is not None:
            self.metrics.apply.observe(time.perf_counter() - started)
            self.metrics.applied_commands.inc(commands)

    def _apply_entry(self, entry: Any) -> Any:
        return apply_command_entry(self.machine, entry, self.ctx.log)

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
