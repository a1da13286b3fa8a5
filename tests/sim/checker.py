"""The safety checker of the simulator: Raft's guarantees, checked as the run goes.

Every hook is called by :class:`~tests.sim.cluster.SimCluster` while it carries out a Ready,
so each invariant is checked at the step that could break it, and :meth:`Checker.after_step`
runs the cheap whole-cluster checks after every event.

* **Election safety**: at most one leader per term, over the whole run (restarts included).
* **Log matching**: every (index, term) ever appended anywhere maps to one entry whose previous
  entry has one term. By induction this is exactly "two logs holding the same (index, term)
  agree on every entry up to it", checked incrementally instead of comparing logs pairwise.
* **Leader append-only**: a leader never truncates its log.
* **Commit by majority**: whenever an index is first seen committed, its entry is durable in
  the storage of a majority (durable = written *and* surviving crashes, as the simulated disk
  keeps it).
* **Committed prefix agreement**: every node's committed prefix agrees with one global
  committed log, which only grows.
* **Leader completeness**: a node becoming leader holds every entry committed so far.
* **State-machine safety**: every node applies exactly the global committed entry at each
  index, in order, with timestamps that never go backwards.
* **Durable hard state**: a node's durable term never decreases and its vote never changes
  within a term.
* **No acknowledged write lost**: an acknowledged command is the committed entry at its index
  (and, at the end of a run, applied on every node).
* **Linearizable reads**: a read served as linearizable reflects every write acknowledged
  before the read was asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from consensus.messages import Entry
from consensus.ready import HardState, ReadState

if TYPE_CHECKING:
    from consensus.node import RaftNode


class InvariantViolation(AssertionError):
    """A Raft safety property failed. The cluster adds the seed and time to the message."""


class Checker:
    def __init__(self, voters: Sequence[str], durable_term_at: Callable[[str, int], int | None]):
        self.voters = tuple(voters)
        self.quorum = len(self.voters) // 2 + 1
        self._durable_term_at = durable_term_at
        self.leaders: dict[int, str] = {}
        # (index, term) -> (kind, timestamp, payload, term of the previous entry)
        self.appended: dict[tuple[int, int], tuple[int, int, bytes, int | None]] = {}
        self.committed: list[Entry | None] = [None]  # 1-based
        self.hard: dict[str, HardState] = {}
        self.acked: dict[str, int] = {}  # request id -> index
        self.acked_payload: dict[str, bytes] = {}
        self.max_acked = 0
        self.reads_checked = 0
        self.checks = 0

    @staticmethod
    def fail(message: str) -> None:
        raise InvariantViolation(message)

    # ------------------------------------------------------------------ durable state

    def on_hard_state(self, node: str, state: HardState) -> None:
        old = self.hard.get(node)
        if old is not None:
            if state.term < old.term:
                self.fail(f"{node}: durable term went back from {old.term} to {state.term}")
            if (
                state.term == old.term
                and old.voted_for is not None
                and state.voted_for != old.voted_for
            ):
                self.fail(
                    f"{node}: changed its vote in term {state.term} from {old.voted_for} "
                    f"to {state.voted_for}"
                )
        self.hard[node] = state

    # ------------------------------------------------------------------ logs

    def on_entries(
        self, node: str, core: RaftNode, truncate_after: int | None, entries: Sequence[Entry]
    ) -> None:
        self.checks += 1
        if truncate_after is not None and core.is_leader:
            self.fail(
                f"{node}: leader of term {core.term} truncated its log after {truncate_after}"
            )
        if not entries:
            return
        prev_term = core.log.term_at(entries[0].index - 1)
        appended = self.appended
        for entry in entries:
            key = (entry.index, entry.term)
            value = (entry.kind, entry.timestamp, entry.payload, prev_term)
            seen = appended.get(key)
            if seen is None:
                appended[key] = value
            elif seen != value:
                self.fail(
                    f"log matching: {node} holds entry {key} = {value}, elsewhere it is {seen}"
                )
            prev_term = entry.term

    def on_commit(self, node: str, core: RaftNode, old: int, new: int) -> None:
        """``node``'s commit index moved from ``old`` to ``new``."""
        self.checks += 1
        entries = core.log.slice(old + 1, new + 1, new - old, 1 << 62)
        if len(entries) != new - old:
            self.fail(f"{node}: commit index {new} beyond its log ({core.log!r})")
        committed = self.committed
        known = len(committed)
        for entry in entries:
            index = entry.index
            if index < len(committed):
                if committed[index] != entry:
                    self.fail(
                        f"committed prefix: {node} committed {entry} at {index}, but "
                        f"{committed[index]} was committed there before"
                    )
            elif index == len(committed):
                committed.append(entry)
            else:
                self.fail(f"{node}: committed {index} but the global log ends at {len(committed)}")
        if len(committed) > known:
            # First sight of these entries committed: the last must be durable on a majority
            # (the earlier ones then are too, by log matching, checked separately).
            last = entries[-1]
            holders = [v for v in self.voters if self._durable_term_at(v, last.index) == last.term]
            if len(holders) < self.quorum:
                self.fail(
                    f"{node} committed ({last.index}, term {last.term}) while only {holders} "
                    f"hold it durably (quorum {self.quorum})"
                )

    def on_leader(self, node: str, core: RaftNode, term: int) -> None:
        self.checks += 1
        other = self.leaders.get(term)
        if other is not None and other != node:
            self.fail(f"election safety: {node} and {other} both lead term {term}")
        self.leaders[term] = node
        log = core.log
        for entry in self.committed[1:]:
            assert entry is not None
            if log.term_at(entry.index) != entry.term:
                self.fail(
                    f"leader completeness: {node} leads term {term} without committed "
                    f"entry ({entry.index}, term {entry.term}); it holds term "
                    f"{log.term_at(entry.index)} there"
                )

    # ------------------------------------------------------------------ state machines

    def on_apply(self, node: str, entry: Entry, applied: int, last_timestamp: int) -> None:
        if entry.index != applied + 1:
            self.fail(f"{node} applied {entry.index} after {applied}: out of order")
        committed = self.committed
        if entry.index >= len(committed) or committed[entry.index] != entry:
            known = committed[entry.index] if entry.index < len(committed) else None
            self.fail(
                f"state-machine safety: {node} applied {entry} at {entry.index}; the committed "
                f"entry there is {known}"
            )
        if entry.timestamp < last_timestamp:
            self.fail(
                f"{node}: state-machine time went back from {last_timestamp} to "
                f"{entry.timestamp} at entry {entry.index}"
            )

    def on_ack(self, request_id: str, index: int, payload: bytes) -> None:
        self.checks += 1
        committed = self.committed
        entry = committed[index] if index < len(committed) else None
        if entry is None or entry.payload != payload:
            self.fail(f"acknowledged {request_id} at {index}, but the committed entry is {entry}")
        self.acked[request_id] = index
        self.acked_payload[request_id] = payload
        self.max_acked = max(self.max_acked, index)

    def on_read(self, node: str, read: ReadState, required: int, applied: int) -> None:
        """A linearizable read was released at ``node`` whose state machine is at ``applied``;
        ``required`` is the highest index acknowledged to a client before the read was asked."""
        self.reads_checked += 1
        if applied < read.index:
            self.fail(
                f"{node} released read {read.request_id} at {read.index} with applied {applied}"
            )
        if applied < required:
            self.fail(
                f"linearizability: {node} served read {read.request_id} from applied index "
                f"{applied}, missing writes acknowledged up to {required} before it was asked"
            )

    # ------------------------------------------------------------------ whole cluster

    def after_step(self, cores: Sequence[tuple[str, RaftNode]]) -> None:
        """Cheap checks over every live node, after every event."""
        terms: dict[int, str] = {}
        for name, core in cores:
            if core.commit_index > core.log.last_index:
                self.fail(f"{name}: commit {core.commit_index} beyond last {core.log.last_index}")
            durable = self.hard.get(name)
            if durable is not None and core.term < durable.term:
                self.fail(f"{name}: term {core.term} below its durable term {durable.term}")
            if core.is_leader:
                other = terms.get(core.term)
                if other is not None:
                    self.fail(f"election safety: {name} and {other} both lead term {core.term}")
                terms[core.term] = name

    def final(self, logs: dict[str, list[Entry]], applied: dict[str, int]) -> None:
        """After a converged run: identical logs, everything acknowledged applied everywhere."""
        names = list(logs)
        reference = logs[names[0]]
        for name in names[1:]:
            if logs[name] != reference:
                self.fail(f"logs differ after convergence: {names[0]} vs {name}")
        for name, index in applied.items():
            if index < self.max_acked:
                self.fail(
                    f"{name} applied only up to {index}; writes were acknowledged up to "
                    f"{self.max_acked}"
                )
        for request_id, index in self.acked.items():
            entry = reference[index - 1] if index <= len(reference) else None
            if entry is None or entry.payload != self.acked_payload[request_id]:
                self.fail(f"acknowledged write {request_id} at {index} lost: the log holds {entry}")
