"""Sequential specifications the checker compares histories against.

A model is a pure function from (state, operation) to "was that a legal step, and the next
state". States must be hashable: the checker memoises (set of linearized operations, state).

Operations whose outcome is unknown (``op.known`` is False: a timeout) carry no result, and a
model must accept them in *every* state, as whatever they would have done there: the checker
may place such an operation anywhere after its invocation, including after everything else,
which is how "it never took effect" is expressed. A compare-and-set with an unknown outcome,
for instance, is the write if the register held the expected value and a no-op otherwise.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from coterie.jepsen.history import Operation


class ModelError(ValueError):
    """An operation the model does not know; names the operation."""


class Model(Protocol):
    name: str

    def init(self) -> Hashable: ...

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]: ...

    def read_only(self, op: Operation) -> bool: ...


class Register:
    """A read/write/compare-and-set register; one per key makes a key-value store.

    ``write(v)``; ``read() -> v`` (``None`` before any write); ``cas((old, new)) -> bool``:
    ``True`` if the register held ``old`` and now holds ``new``, ``False`` if it held
    something else and was left alone.
    """

    name = "register"

    def __init__(self, initial: Hashable = None) -> None:
        self.initial = initial

    def init(self) -> Hashable:
        return self.initial

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        f = op.f
        if f == "read":
            return (not op.known or op.result == state), state
        if f == "write":
            return True, op.arg
        if f == "cas":
            old, new = _pair(op)
            if not op.known:
                return True, (new if state == old else state)
            if op.result is True:
                return state == old, new
            if op.result is False:
                return state != old, state
            raise ModelError(f"cas answered {op.result!r}, not a bool: {op.describe()}")
        raise ModelError(f"a register has no operation {f!r}: {op.describe()}")

    def read_only(self, op: Operation) -> bool:
        return op.f == "read"


class Counter:
    """An integer counter: ``add(d) -> new value`` (or ``None`` when the system does not
    answer it) and ``read() -> value``; it starts at ``initial``."""

    name = "counter"

    def __init__(self, initial: int = 0) -> None:
        self.initial = initial

    def init(self) -> Hashable:
        return self.initial

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        if op.f == "add":
            if type(op.arg) is not int:
                raise ModelError(f"add takes an int: {op.describe()}")
            value = state + op.arg
            return (not op.known or op.result is None or op.result == value), value
        if op.f == "read":
            return (not op.known or op.result == state), state
        raise ModelError(f"a counter has no operation {op.f!r}: {op.describe()}")

    def read_only(self, op: Operation) -> bool:
        return op.f == "read"


def _pair(op: Operation) -> tuple[Any, Any]:
    arg = op.arg
    if not isinstance(arg, (tuple, list)) or len(arg) != 2:
        raise ModelError(f"cas takes (old, new): {op.describe()}")
    return arg[0], arg[1]


MODELS: dict[str, type[Register] | type[Counter]] = {"register": Register, "counter": Counter}


def by_name(name: str) -> Model:
    try:
        return MODELS[name]()
    except KeyError:
        raise ModelError(f"no model {name!r} (known: {', '.join(sorted(MODELS))})") from None
