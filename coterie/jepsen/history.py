"""Histories of client operations: the recorder clients write to, and the pairing of its
events into operations for the checker.

Theory of operation
-------------------
A history is a list of events in real-time order. Each client *process* (a logical, single
threaded client; a thread may use several over its life) first records an ``invoke`` event,
then exactly one completion:

``ok``
    the operation took effect, and the event's value is its result (a read's value);
``fail``
    the operation certainly did not take effect (the node refused it before proposing it);
``info``
    the outcome is unknown (a timeout, a lost connection): it may have taken effect at any
    moment after its invocation, or never, even long after the client gave up.

After an ``info`` a process is considered crashed and must not invoke again: its operation
may still be in flight, and one process never has two operations open. A client thread that
goes on takes a fresh process id (:meth:`Recorder.crashed` hands one out).

The :class:`Recorder` appends events under a lock and stamps them with ``time.monotonic_ns``
taken under that lock, so the list order *is* the real-time order: an invocation recorded
before the request is sent and a completion recorded after the answer arrived bracket the
moment the operation took effect. Times are kept for reports; the checker uses positions.

Histories are saved as JSON lines (one event per line), so a failing run can be kept and
re-checked offline with :func:`load`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
EVENT_TYPES = (INVOKE, OK, FAIL, INFO)
COMPLETIONS = (OK, FAIL, INFO)


class HistoryError(ValueError):
    """A malformed history; the message names the event index and the process."""


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One line of a history."""

    index: int  # position in the history
    process: int
    type: str  # invoke | ok | fail | info
    f: str  # the operation's function: read, write, cas, add, ...
    key: Any  # what the operation touches; the checker checks each key on its own
    value: Any  # invoke: the argument; ok: the result; fail/info: as the client saw it
    time: int  # time.monotonic_ns() when recorded

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """An invocation paired with its completion, as the checker sees it.

    ``call`` and ``ret`` are history positions; an operation with an unknown outcome has
    ``ret = None`` (it stays open until the end of time) and ``known = False``.
    """

    id: int
    process: int
    f: str
    key: Any
    arg: Any  # the invocation's value
    result: Any  # the ok completion's value; None when unknown
    known: bool  # True for ok operations, False for info (and never-completed) ones
    call: int
    ret: int | None
    call_time: int
    ret_time: int | None

    def describe(self) -> str:
        outcome = f"-> {self.result!r}" if self.known else "-> ? (outcome unknown)"
        where = f"[{self.call}..{self.ret if self.ret is not None else 'inf'}]"
        return f"p{self.process} {self.f}({self.key!r}, {self.arg!r}) {outcome} {where}"


class Recorder:
    """Thread-safe, append-only recorder of a history.

    Clients call :meth:`invoke` before sending a request and :meth:`complete` with the
    invocation once they know the outcome. Process ids for crashed processes come from
    :meth:`crashed`, which never reuses an id.
    """

    def __init__(self, processes: int = 0) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._open: dict[int, Event] = {}
        self._next_process = itertools.count(processes)

    def invoke(self, process: int, f: str, key: Any, value: Any = None) -> Event:
        with self._lock:
            if process in self._open:
                raise HistoryError(
                    f"process {process} invokes {f} while {self._open[process].f} "
                    f"(event {self._open[process].index}) is still open"
                )
            event = Event(len(self._events), process, INVOKE, f, key, value, time.monotonic_ns())
            self._events.append(event)
            self._open[process] = event
            return event

    def complete(self, invocation: Event, type_: str, value: Any = None) -> Event:
        if type_ not in COMPLETIONS:
            raise ValueError(f"a completion is one of {COMPLETIONS}, not {type_!r}")
        with self._lock:
            if self._open.get(invocation.process) is not invocation:
                raise HistoryError(
                    f"process {invocation.process} completes event {invocation.index}, "
                    "which is not its open invocation"
                )
            del self._open[invocation.process]
            event = Event(
                len(self._events),
                invocation.process,
                type_,
                invocation.f,
                invocation.key,
                value,
                time.monotonic_ns(),
            )
            self._events.append(event)
            return event

    def crashed(self) -> int:
        """A fresh process id, for a client thread whose previous process ended in ``info``.

        Ids below the ``processes`` given at construction belong to the initial clients;
        fresh ones count up from there and are never handed out twice.
        """
        with self._lock:
            return next(self._next_process)

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)


def operations(events: Iterable[Event]) -> list[Operation]:
    """Pair invocations with completions.

    ``ok`` and ``info`` operations come out (in invocation order); ``fail`` operations are
    dropped, since they certainly had no effect. An invocation never completed is ``info``.
    A completion without an open invocation, a second invocation on an open process, or an
    event after a process crashed raises :class:`HistoryError` naming the event.
    """
    open_calls: dict[int, Event] = {}
    crashed: dict[int, int] = {}
    pairs: dict[int, tuple[Event, Event | None]] = {}
    for n, event in enumerate(events):
        if event.index != n:
            raise HistoryError(f"event {n} carries index {event.index}; histories are dense")
        if event.type not in EVENT_TYPES:
            raise HistoryError(f"event {n}: unknown type {event.type!r}")
        if event.process in crashed:
            raise HistoryError(
                f"event {n}: process {event.process} crashed at event "
                f"{crashed[event.process]} (info) and may not act again"
            )
        if event.type == INVOKE:
            if event.process in open_calls:
                raise HistoryError(
                    f"event {n}: process {event.process} invokes while event "
                    f"{open_calls[event.process].index} is open"
                )
            open_calls[event.process] = event
            continue
        call = open_calls.pop(event.process, None)
        if call is None:
            raise HistoryError(f"event {n}: {event.type} of process {event.process} without invoke")
        if (call.f, call.key) != (event.f, event.key):
            raise HistoryError(
                f"event {n}: completion {event.f}({event.key!r}) does not match its invocation "
                f"{call.f}({call.key!r}) at event {call.index}"
            )
        if event.type == INFO:
            crashed[event.process] = n
        pairs[call.index] = (call, event)
    for call in open_calls.values():
        pairs[call.index] = (call, None)
    ops: list[Operation] = []
    for call_index in sorted(pairs):
        call, done = pairs[call_index]
        if done is not None and done.type == FAIL:
            continue
        known = done is not None and done.type == OK
        ops.append(
            Operation(
                id=len(ops),
                process=call.process,
                f=call.f,
                key=call.key,
                arg=call.value,
                result=done.value if known and done is not None else None,
                known=known,
                call=call.index,
                ret=done.index if known and done is not None else None,
                call_time=call.time,
                ret_time=done.time if known and done is not None else None,
            )
        )
    return ops


def summary(events: Iterable[Event]) -> dict[str, int]:
    """How many operations completed ok / fail / info (an unfinished one counts as info)."""
    counts = {OK: 0, FAIL: 0, INFO: 0}
    open_calls: set[int] = set()
    for event in events:
        if event.type == INVOKE:
            open_calls.add(event.process)
        else:
            counts[event.type] += 1
            open_calls.discard(event.process)
    counts[INFO] += len(open_calls)
    return counts


def save(events: Iterable[Event], path: str | pathlib.Path) -> None:
    with pathlib.Path(path).open("w") as f:
        for event in events:
            f.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")


def load(path: str | pathlib.Path) -> list[Event]:
    """Read a history saved by :func:`save`; a bad line raises naming the file and line."""
    events = []
    with pathlib.Path(path).open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                events.append(Event(**{k: _freeze(v) for k, v in raw.items()}))
            except (ValueError, TypeError) as exc:
                raise HistoryError(f"{path}:{lineno}: not a history event: {exc}") from exc
    return events


def _freeze(value: Any) -> Any:
    """JSON arrays come back as lists; keys and values must be hashable for the checker."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def by_process(events: Iterable[Event]) -> Iterator[tuple[int, list[Event]]]:
    """Events grouped per process, each group in history order (for reports)."""
    groups: dict[int, list[Event]] = {}
    for event in events:
        groups.setdefault(event.process, []).append(event)
    yield from sorted(groups.items())
