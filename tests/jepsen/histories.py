"""Helpers for checker tests: a compact way to write histories by hand, a simulator that
produces histories which are linearizable by construction, and a brute-force checker to
compare the real one against on small histories."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

from coterie.jepsen.history import Event, Operation, operations
from coterie.jepsen.models import Counter, Model, Register

Line = tuple[int, str, str, Any, Any]  # (process, type, f, key, value)


def build(lines: Sequence[Line]) -> list[Event]:
    """Events from ``(process, type, f, key, value)`` lines, times 1 ms apart."""
    return [
        Event(n, process, type_, f, key, value, n * 1_000_000)
        for n, (process, type_, f, key, value) in enumerate(lines)
    ]


def simulate(
    rng: random.Random,
    model_name: str,
    *,
    ops: int,
    processes: int,
    keys: Sequence[Any] = ("x",),
    values: int = 5,
    crash_rate: float = 0.1,
    fail_rate: float = 0.05,
) -> list[Event]:
    """A history produced by running operations against a real sequential object.

    Each process invokes an operation, which later *takes effect* at one instant (the
    object is updated and the result fixed), and later still completes. Between these,
    other processes act, so operations overlap. Some operations crash (``info``): they
    may take effect or not, and their process is replaced. Some fail (``fail``) before
    taking effect. The history is linearizable by construction: the instants are a witness.
    """
    events: list[Event] = []
    state: dict[Any, Any] = {key: (0 if model_name == "counter" else None) for key in keys}
    idle = list(range(processes))
    next_process = itertools.count(processes)
    # process -> (invoke event, effect done?, result)
    pending: dict[int, list[Any]] = {}
    zombies: list[Event] = []  # crashed before taking effect; may still take effect later
    invoked = 0

    def emit(process: int, type_: str, f: str, key: Any, value: Any) -> Event:
        event = Event(len(events), process, type_, f, key, value, len(events))
        events.append(event)
        return event

    def take_effect(call: Event) -> Any:
        key = call.key
        if call.f == "read":
            return state[key]
        if call.f == "write":
            state[key] = call.value
            return call.value
        if call.f == "cas":
            old, new = call.value
            if state[key] == old:
                state[key] = new
                return True
            return False
        if call.f == "add":
            state[key] += call.value
            return state[key]
        raise AssertionError(call.f)

    while invoked < ops or pending:
        if zombies and rng.random() < 0.05:
            zombie = zombies.pop(rng.randrange(len(zombies)))
            if rng.random() < 0.5:
                take_effect(zombie)  # a request delivered long after its client gave up
            continue
        choice = rng.random()
        if idle and invoked < ops and (choice < 0.4 or not pending):
            process = idle.pop(rng.randrange(len(idle)))
            key = rng.choice(list(keys))
            if model_name == "counter":
                f = rng.choice(["add", "add", "read"])
                value = rng.randrange(1, values + 1) if f == "add" else None
            else:
                f = rng.choice(["read", "write", "cas"])
                value = {
                    "read": None,
                    "write": rng.randrange(values),
                    "cas": (rng.randrange(values), rng.randrange(values)),
                }[f]
            pending[process] = [emit(process, "invoke", f, key, value), False, None]
            invoked += 1
            continue
        process = rng.choice(list(pending))
        call, done, result = pending[process]
        if not done and rng.random() < 0.5:
            if rng.random() < fail_rate:
                emit(process, "fail", call.f, call.key, None)
                del pending[process]
                idle.append(process)
                continue
            pending[process] = [call, True, take_effect(call)]
            continue
        if rng.random() < crash_rate:
            if not done:
                zombies.append(call)
            emit(process, "info", call.f, call.key, None)
            del pending[process]
            idle.append(next(next_process))
            continue
        if done:
            emit(process, "ok", call.f, call.key, result)
            del pending[process]
            idle.append(process)
    return events


def brute_force(ops: Sequence[Operation], model: Model) -> bool:
    """Linearizable per key by trying every order (and every subset of unknown ops)."""
    by_key: dict[Any, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    return all(_brute_key(key_ops, model) for key_ops in by_key.values())


def _brute_key(ops: list[Operation], model: Model) -> bool:
    unknown = [op for op in ops if not op.known]
    known = [op for op in ops if op.known]
    for r in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, r):
            subset = known + list(chosen)
            for order in itertools.permutations(subset):
                if _respects_real_time(order) and _legal(order, model):
                    return True
    return False


def _respects_real_time(order: Sequence[Operation]) -> bool:
    for a, b in itertools.combinations(order, 2):
        # b is placed after a; illegal if b completed before a was invoked
        if b.ret is not None and b.ret < a.call:
            return False
    return True


def _legal(order: Sequence[Operation], model: Model) -> bool:
    state = model.init()
    for op in order:
        ok, state = model.step(state, op)
        if not ok:
            return False
    return True


def model_for(name: str) -> Model:
    return Counter() if name == "counter" else Register()


def all_ops(events: Sequence[Event]) -> list[Operation]:
    return operations(events)
