"""Linearizability checking: the Wing-Gong search with Lowe's memoisation, per key.

Theory of operation
-------------------
A history is linearizable if every operation can be given a single instant between its
invocation and its completion such that the operations, run one by one in the order of
those instants, are a legal run of the sequential model. Operations with an unknown outcome
have no completion: their instant may be anywhere after the invocation, including after
every other operation, which is how "never took effect" is expressed.

Keys are independent (P-compositionality: a history is linearizable iff each key's
sub-history is), so each key is searched on its own, which is what keeps real histories
tractable.

For one key, the search is Wing & Gong's, with the cache of Lowe, as in porcupine and
Knossos. A configuration is (set of operations linearized so far, model state). The known
(``ok``) operations sit in a doubly linked list of call and return entries sorted by history
position; the operations that may go next are the calls before the first return entry (the
*frontier*: that return's operation must be linearized before anything invoked after it).
Depth-first, the search picks a candidate, steps the model, lifts the operation's entries
out of the list and goes on; when nothing can go next it undoes the last choice and tries
the next candidate. An empty list means every known operation has a place: the path is a
witness. Backtracking past the root means there is no order. Configurations already seen
are not explored twice, which makes the search polynomial in the number of reachable
configurations rather than in the number of orders.

Operations with an unknown outcome are where naive searches explode: each may be placed
anywhere after its invocation, or nowhere. Here they live in a list of their own and are
never *required*: once the known operations are all placed the rest never took effect. And
they are only tried where they matter:

* the quick pass offers an unknown operation only right before a blocked known one that it
  unblocks (a read of the value it wrote), or, at a dead end, as the first of two that
  together unblock one (a write, then a compare-and-set that needed it);
* if the quick pass finds no order, the complete pass offers every unknown operation at
  every configuration, so a "not linearizable" verdict is always exhaustive.

The memo treats a configuration as seen when one with the same known set and state but
fewer unknown operations was seen: anything that completes the former completes the latter
(an unknown operation need never happen). The sets are Python ints used as bit sets.

A ``budget`` of search steps turns a hopeless key into an honest ``unknown`` verdict instead
of an endless run; a non-linearizable key reports the longest prefix it could linearize and
the operations among which none could come next, which is usually the anomaly itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from coterie.jepsen.history import Event, Operation, operations
from coterie.jepsen.models import Model


@dataclasses.dataclass
class KeyResult:
    """The verdict for one key. ``valid`` is None when the budget ran out."""

    key: Any
    valid: bool | None
    ops: int
    unknown_ops: int
    steps: int
    seconds: float
    witness: list[Operation] | None = None  # a legal order, when valid
    longest: list[Operation] | None = None  # the longest linearizable prefix, when invalid
    stuck: list[Operation] | None = None  # none of these could be linearized next
    stuck_state: Any = None  # the model state after ``longest``

    def explain(self) -> str:
        if self.valid:
            return f"key {self.key!r}: linearizable ({self.ops} ops, {self.steps} steps)"
        if self.valid is None:
            return (
                f"key {self.key!r}: unknown, search budget of {self.steps} steps spent "
                f"({self.ops} ops, {self.unknown_ops} with unknown outcome)"
            )
        lines = [
            f"key {self.key!r}: NOT linearizable ({self.ops} ops)",
            f"  linearized {len(self.longest or [])} ops, reaching state {self.stuck_state!r};",
            "  the last of them:",
        ]
        lines += [f"    {op.describe()}" for op in (self.longest or [])[-5:]]
        lines.append("  then none of these could take effect next:")
        lines += [f"    {op.describe()}" for op in self.stuck or []]
        return "\n".join(lines)


@dataclasses.dataclass
class CheckResult:
    """The verdict for a whole history: valid iff every key is; None if any is unknown."""

    valid: bool | None
    keys: dict[Any, KeyResult]
    ops: int
    seconds: float

    @property
    def anomalies(self) -> list[KeyResult]:
        return [k for k in self.keys.values() if k.valid is False]

    @property
    def unknown(self) -> list[KeyResult]:
        return [k for k in self.keys.values() if k.valid is None]

    @property
    def verdict(self) -> str:
        return {True: "linearizable", False: "NOT linearizable", None: "unknown"}[self.valid]

    def explain(self) -> str:
        bad = self.anomalies + self.unknown
        head = f"{self.verdict}: {self.ops} ops over {len(self.keys)} keys in {self.seconds:.2f}s"
        return "\n".join([head, *(k.explain() for k in bad)])


def check(
    history: Iterable[Event] | Sequence[Operation],
    model: Model,
    *,
    budget: int | None = 5_000_000,
    witness: bool = False,
) -> CheckResult:
    """Check a history (events, or operations from :func:`~coterie.jepsen.history.operations`)
    against ``model``, each key on its own. ``budget`` caps the search steps per key."""
    started = time.perf_counter()
    items = list(history)
    ops: list[Operation] = (
        operations(items) if items and isinstance(items[0], Event) else items  # type: ignore[assignment]
    )
    per_key: dict[Any, list[Operation]] = {}
    for op in ops:
        per_key.setdefault(op.key, []).append(op)
    results = {
        key: check_key(key, key_ops, model, budget=budget, witness=witness)
        for key, key_ops in per_key.items()
    }
    verdicts = [r.valid for r in results.values()]
    valid: bool | None
    if False in verdicts:
        valid = False
    elif None in verdicts:
        valid = None
    else:
        valid = True
    return CheckResult(valid, results, len(ops), time.perf_counter() - started)


def check_key(
    key: Any,
    ops: Sequence[Operation],
    model: Model,
    *,
    budget: int | None = None,
    witness: bool = False,
) -> KeyResult:
    """The search for one key's operations (all of which must share the key)."""
    started = time.perf_counter()
    # An unknown read changes nothing and tells nothing: it can always be left out.
    kept = [op for op in ops if op.known or not model.read_only(op)]
    search = _Search(kept, model)
    quick = search.run(complete=False, budget=budget)
    if quick.valid is False and search.has_unknown:
        # A witness is a witness, but "no order" from the quick pass is not yet a verdict.
        rest = None if budget is None else max(1, budget - quick.steps)
        full = search.run(complete=True, budget=rest)
        full.steps += quick.steps
        quick = full
    quick.key = key
    quick.seconds = time.perf_counter() - started
    if not witness:
        quick.witness = None
    return quick


Candidate = tuple[int, bool, Any]  # (op index, is unknown, model state after it)


class _Search:
    """The lists and caches of one key's search. Entry ``2i+1`` is operation ``i``'s call,
    ``2i+2`` its return; entry 0 heads both lists. ``position`` is an entry's place in the
    history (unique, so sorting by it is real-time order)."""

    def __init__(self, ops: list[Operation], model: Model) -> None:
        self.ops = ops
        self.model = model
        self.step = model.step
        size = 2 * len(ops) + 1
        self.nxt, self.prv = [-1] * size, [-1] * size
        self.u_nxt, self.u_prv = [-1] * size, [-1] * size
        self.position = [0] * size
        entries = []
        unknown = []
        for i, op in enumerate(ops):
            self.position[2 * i + 1] = op.call
            if op.known:
                assert op.ret is not None
                self.position[2 * i + 2] = op.ret
                entries += [(op.call, 2 * i + 1), (op.ret, 2 * i + 2)]
            else:
                unknown.append((op.call, 2 * i + 1))
        for nxt, prv, chain in (
            (self.nxt, self.prv, sorted(entries)),
            (self.u_nxt, self.u_prv, sorted(unknown)),
        ):
            last = 0
            for _position, entry in chain:
                nxt[last], prv[entry] = entry, last
                last = entry
        self.has_unknown = bool(unknown)
        self.unknown_ops = len(unknown)
        # Which unknown operations unblock a blocked one depends only on the state, the
        # blocked operation and which unknown ones are left; the same questions come back on
        # every backtrack, so the answers are kept. They are computed over the unknown
        # operations invoked before the blocked one returned (no later one can precede it)
        # and narrowed to those invoked before the frontier when used.
        self.singles: dict[tuple[Any, int, int], list[tuple[int, Any]]] = {}
        self.doubles: dict[tuple[Any, int, int], list[tuple[int, int, Any]]] = {}
        self.complete = False

    # ------------------------------------------------------------------ the lists

    @staticmethod
    def _unlink(entry: int, nxt: list[int], prv: list[int]) -> None:
        p, q = prv[entry], nxt[entry]
        nxt[p] = q
        if q != -1:
            prv[q] = p

    @staticmethod
    def _relink(entry: int, nxt: list[int], prv: list[int]) -> None:
        # Exact inverse of _unlink, as long as undos come in reverse order.
        nxt[prv[entry]] = entry
        if nxt[entry] != -1:
            prv[nxt[entry]] = entry

    def lift(self, i: int, unknown: bool) -> None:
        if unknown:
            self._unlink(2 * i + 1, self.u_nxt, self.u_prv)
        else:
            self._unlink(2 * i + 1, self.nxt, self.prv)
            self._unlink(2 * i + 2, self.nxt, self.prv)

    def unlift(self, i: int, unknown: bool) -> None:
        if unknown:
            self._relink(2 * i + 1, self.u_nxt, self.u_prv)
        else:
            self._relink(2 * i + 2, self.nxt, self.prv)
            self._relink(2 * i + 1, self.nxt, self.prv)

    def frontier(self) -> int:
        """The first return entry of the main list."""
        entry = self.nxt[0]
        while entry % 2 == 1:
            entry = self.nxt[entry]
        return entry

    def eligible(self, bound: int) -> Iterator[int]:
        """Call entries of the unknown operations left that were invoked before ``bound``."""
        u_nxt, position = self.u_nxt, self.position
        u = u_nxt[0]
        while u != -1 and position[u] < bound:
            yield u
            u = u_nxt[u]

    # ------------------------------------------------------------------ candidates

    def single(self, state: Any, i: int, done_unknown: int) -> list[tuple[int, Any]]:
        """Unknown operations after which the blocked operation ``i`` is legal."""
        memo = (state, i, done_unknown)
        found = self.singles.get(memo)
        if found is None:
            step, ops, op = self.step, self.ops, self.ops[i]
            found = []
            for u in self.eligible(self.position[2 * i + 2]):
                legal, via = step(state, ops[(u - 1) // 2])
                if legal and step(via, op)[0]:
                    found.append((u, via))
            self.singles[memo] = found
        return found

    def double(self, state: Any, i: int, done_unknown: int) -> list[tuple[int, int, Any]]:
        """Pairs of unknown operations, the first mattering to the second, after which the
        blocked operation ``i`` is legal: (first, second, state after the first)."""
        memo = (state, i, done_unknown)
        found = self.doubles.get(memo)
        if found is None:
            step, ops, op = self.step, self.ops, self.ops[i]
            found = []
            bound = self.position[2 * i + 2]
            for u in self.eligible(bound):
                via = step(state, ops[(u - 1) // 2])[1]
                for v in self.eligible(bound):
                    if v == u:
                        continue
                    second = ops[(v - 1) // 2]
                    then = step(via, second)[1]
                    if then != step(state, second)[1] and step(then, op)[0]:
                        found.append((u, v, via))
            self.doubles[memo] = found
        return found

    def candidates(self, state: Any, done_unknown: int) -> Iterator[Candidate]:
        """The operations that may go next, in the order most likely to lead to a witness:
        known ones in list order, each blocked one preceded by the unknown ones that unblock
        it. At a dead end the quick pass then tries the first of two unknown operations that
        together unblock one; the complete pass instead ends with every unknown one left."""
        step, ops, nxt, position = self.step, self.ops, self.nxt, self.position
        frontier = self.frontier()
        bound = position[frontier]  # unknown ops invoked after this cannot go yet
        has_unknown = self.u_nxt[0] != -1
        tried: set[int] = set()
        stuck: list[int] = []
        offered = False
        entry = nxt[0]
        while entry != frontier:
            i = (entry - 1) // 2
            legal, after = step(state, ops[i])
            if legal:
                offered = True
                yield i, False, after
            elif has_unknown:
                helped = False
                for u, via in self.single(state, i, done_unknown):
                    if position[u] < bound:
                        helped = True
                        if u not in tried:
                            tried.add(u)
                            offered = True
                            yield (u - 1) // 2, True, via
                if not helped:
                    stuck.append(i)
            entry = nxt[entry]
        if self.complete:
            for u in self.eligible(bound):
                if u not in tried:
                    legal, via = step(state, ops[(u - 1) // 2])
                    if legal:
                        yield (u - 1) // 2, True, via
        elif not offered:
            for i in stuck:
                for u, v, via in self.double(state, i, done_unknown):
                    if position[u] < bound and position[v] < bound and u not in tried:
                        tried.add(u)
                        yield (u - 1) // 2, True, via

    # ------------------------------------------------------------------ the search

    def run(self, *, complete: bool, budget: int | None) -> KeyResult:
        """Depth-first over configurations. A failed run leaves the lists as it found them;
        the witness is always filled in on success."""
        self.complete = complete
        n, ops = len(self.ops), self.ops
        state: Any = self.model.init()
        done_known, done_unknown = 0, 0  # bit sets of the linearized known / unknown ops
        # The path: each configuration's candidates, with what undoes the choice that led
        # to it (op, is unknown, state before, bit sets before).
        path: list[tuple[Iterator[Candidate], int, bool, Any, int, int]] = [
            (self.candidates(state, 0), -1, False, state, 0, 0)
        ]
        # (known set, state) -> unknown sets seen with it. A configuration is skipped when
        # one with the same known set and state but a subset of its unknown ones was seen:
        # every completion of it completes that one too (an unknown op need never happen).
        seen: dict[tuple[int, Any], list[int]] = {(0, state): [0]}
        steps = 0
        limit = budget if budget is not None else -1
        deepest: tuple[list[int], list[int], Any] | None = None  # prefix, stuck ops, state
        while self.nxt[0] != -1:
            steps += 1
            if steps == limit:
                return KeyResult(None, None, n, self.unknown_ops, steps, 0.0)
            choice = next(path[-1][0], None)
            if choice is None:
                # Nothing can go next here: undo the choice that led here.
                if deepest is None or len(path) > len(deepest[0]) + 1:
                    stuck = _candidates(self.nxt, self.frontier())
                    deepest = ([frame[1] for frame in path[1:]], stuck, state)
                _gen, i, unknown, state, done_known, done_unknown = path.pop()
                if not path:
                    prefix, stuck, at = deepest
                    return KeyResult(
                        None,
                        False,
                        n,
                        self.unknown_ops,
                        steps,
                        0.0,
                        longest=[ops[j] for j in prefix],
                        stuck=[ops[j] for j in stuck],
                        stuck_state=at,
                    )
                self.unlift(i, unknown)
                continue
            i, unknown, after = choice
            if unknown:
                new_known, new_unknown = done_known, done_unknown | (1 << i)
            else:
                new_known, new_unknown = done_known | (1 << i), done_unknown
            memo = (new_known, after)
            others = seen.get(memo)
            if others is None:
                seen[memo] = [new_unknown]
            elif any(other | new_unknown == new_unknown for other in others):
                continue
            else:
                others.append(new_unknown)
            frame = (self.candidates(after, new_unknown), i, unknown, state)
            path.append((*frame, done_known, done_unknown))
            state, done_known, done_unknown = after, new_known, new_unknown
            self.lift(i, unknown)
        order = [ops[frame[1]] for frame in path[1:]]
        # Put the lists back for a later run on the same search.
        for frame in reversed(path[1:]):
            self.unlift(frame[1], frame[2])
        return KeyResult(None, True, n, self.unknown_ops, steps, 0.0, order)


def _candidates(nxt: list[int], stop: int) -> list[int]:
    """The known operations that could have come next: every call before the return entry
    ``stop``, and the operation ``stop`` closes."""
    found = []
    entry = nxt[0]
    while entry not in (-1, stop):
        if entry % 2 == 1:
            found.append((entry - 1) // 2)
        entry = nxt[entry]
    found.append((stop - 1) // 2)
    return sorted(set(found))
