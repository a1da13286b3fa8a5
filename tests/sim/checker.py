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
  the storage (log or snapshot) of a majority of the committing node's configuration
  (durable = written *and* surviving crashes, as the simulated disk keeps it).
* **Committed prefix agreement**: every node's committed prefix agrees with one global
  committed log, which only grows.
* **Leader completeness**: a node becoming leader holds every entry committed so far.
* **State-machine safety**: every node applies exactly the global committed entry at each
  index, in order, with timestamps that never go backwards, reaching the same state (a hash
  chain over every entry's results) at every index; a snapshot taken or installed anywhere
  is of a committed entry and holds exactly that state.
* **Exactly once**: each session command ``(session, seq)`` is applied at most once and in
  sequence order on every node (the state machine checks it), at the same log position with
  the same result everywhere; a client answered for it got that result.
* **Sessions alike**: every session is expired or closed at the same log position on every
  node that sees it happen.
* **Configuration safety**: no log ever holds more than one configuration entry beyond the
  committed prefix, and each configuration entry differs from the one before it in that log
  by at most one voter (single-server changes).
* **Durable hard state**: a node's durable term never decreases and its vote never changes
  within a term.
* **No acknowledged write lost**: an acknowledged command is the committed entry at its index
  (and, at the end of a run, applied on every node).
* **Linearizable reads**: a read served as linearizable reflects every write acknowledged
  before the read was asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from consensus.configuration import CONFIGURATION, Membership, voters_changed
from consensus.messages import Entry
from consensus.ready import HardState, ReadState
from consensus.snapshots import SnapshotInfo

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
        self.chains: dict[int, int] = {}  # index -> state chain after applying it
        # (session, seq) -> (index, position, result) of its one application
        self.session_applies: dict[tuple[int, int], tuple[int, int, Any]] = {}
        self.session_closes: dict[int, tuple[bool, int, int]] = {}
        self.session_acks = 0
        self.snapshots_checked = 0
        self.config_entries = 0

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
        if any(entry.kind == CONFIGURATION for entry in entries):
            self._check_configurations(node, core, entries)
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

    def _check_configurations(self, node: str, core: RaftNode, entries: Sequence[Entry]) -> None:
        # The node's own commit index counts too: a leader may commit one change and append the
        # next in one step, and the Ready reports the entries before the commit index (which
        # on_commit checks right after).
        committed = max(len(self.committed) - 1, core.commit_index)
        log = core.log
        pending = core.configs.uncommitted(committed)
        if pending > 1:
            self.fail(
                f"configuration safety: {node}'s log holds {pending} configuration entries "
                f"beyond the committed index {committed}"
            )
        for entry in entries:
            if entry.kind != CONFIGURATION:
                continue
            self.config_entries += 1
            if entry.index - 1 < log.first_index - 1:
                continue
            before, after = core.membership_at(entry.index - 1), core.membership_at(entry.index)
            if voters_changed(before, after) > 1:
                self.fail(
                    f"configuration safety: {node} appended ({entry.index}, term {entry.term}) "
                    f"changing more than one voter: {before} -> {after}"
                )

    def on_commit(
        self, node: str, core: RaftNode, old: int, new: int, before: Membership | None = None
    ) -> None:
        """``node``'s commit index moved from ``old`` to ``new``; ``before`` is its
        configuration before the entries of the same step (a leader may commit under one
        configuration and append the next in one step)."""
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
            configurations = {core.membership.voters, (before or core.membership).voters}
            for voters in configurations:
                holders = [v for v in voters if self._durable_term_at(v, last.index) == last.term]
                if len(holders) >= len(voters) // 2 + 1:
                    break
            else:
                self.fail(
                    f"{node} committed ({last.index}, term {last.term}) while only {holders} "
                    f"of {[list(v) for v in configurations]} hold it durably"
                )

    def on_leader(self, node: str, core: RaftNode, term: int) -> None:
        self.checks += 1
        other = self.leaders.get(term)
        if other is not None and other != node:
            self.fail(f"election safety: {node} and {other} both lead term {term}")
        self.leaders[term] = node
        log = core.log
        for entry in self.committed[log.first_index :]:
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

    def on_state(self, node: str, index: int, chain: int) -> None:
        """``node``'s state machine reached ``chain`` after applying entry ``index``."""
        known = self.chains.setdefault(index, chain)
        if known != chain:
            self.fail(
                f"state-machine safety: {node}'s state after entry {index} differs from "
                "another node's after the same entry"
            )

    def on_snapshot(self, node: str, info: SnapshotInfo, chain: int) -> None:
        """``node`` took or installed a snapshot; its state machine holds ``chain``."""
        self.snapshots_checked += 1
        committed = self.committed
        entry = committed[info.index] if info.index < len(committed) else None
        if entry is None or entry.term != info.term:
            self.fail(f"{node}: snapshot at ({info.index}, term {info.term}) of no committed entry")
        known = self.chains.get(info.index)
        if known is not None and known != chain:
            self.fail(f"{node}: snapshot at {info.index} holds another state than its entries")

    def on_session_apply(
        self, node: str, session: int, seq: int, index: int, position: int, result: Any
    ) -> None:
        seen = self.session_applies.setdefault((session, seq), (index, position, result))
        if seen != (index, position, result):
            self.fail(
                f"exactly-once: {node} applied session {session} command {seq} at "
                f"({index}, {position}) with result {result}; elsewhere {seen}"
            )

    def on_session_closed(
        self, node: str, session: int, expired: bool, index: int, position: int
    ) -> None:
        seen = self.session_closes.setdefault(session, (expired, index, position))
        if seen != (expired, index, position):
            self.fail(
                f"sessions: {node} closed session {session} (expired={expired}) at "
                f"({index}, {position}); elsewhere {seen}"
            )

    def on_session_ack(self, session: int, seq: int, result: Any) -> None:
        """A client was answered ``result`` for session command ``seq``."""
        self.session_acks += 1
        seen = self.session_applies.get((session, seq))
        if seen is None or seen[2] != result:
            self.fail(
                f"exactly-once: the client got {result} for session {session} command {seq}, "
                f"which was applied as {seen}"
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
        """Cheap checks over the live nodes an event may have changed, after every event.
        (Two leaders of one term are caught when the second becomes leader, by on_leader
        against every leader of the run; this repeats it among the nodes given.)"""
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
        """After a converged run: every log (from its first index on) is the committed log,
        all end alike, everything acknowledged is applied everywhere."""
        committed = self.committed
        ends = {
            name: entries[-1].index if entries else applied[name] for name, entries in logs.items()
        }
        if len(set(ends.values())) > 1:
            self.fail(f"logs end differently after convergence: {ends}")
        for name, entries in logs.items():
            for entry in entries:
                if entry.index >= len(committed) or committed[entry.index] != entry:
                    self.fail(f"{name} holds {entry} after convergence; it is not committed")
        reference = committed[1:]
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
