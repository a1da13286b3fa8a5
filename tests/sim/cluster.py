"""SimCluster: N Raft cores in one process over a simulated network, disk and clock, driven by
one seeded event queue, with the safety checker run at every step.

Theory of operation
-------------------
Time is an integer number of milliseconds and nothing happens between events. An event is a
message delivery, a node's timer (its last Ready's deadline), a disk write completing, or a
scripted action (a client request, a fault). Events at the same time run in the order they were
scheduled, and every random choice comes from one ``random.Random`` seeded by the run's seed
(each core gets its own, drawn from it), so a seed fixes the whole run.

Each node is a host that carries out every Ready as ``consensus.ready`` prescribes:

1. hard state: saved durably at once, before any message of the Ready leaves;
2. entries: queued on the node's disk, which completes writes in order after a simulated fsync
   latency and then reports ``persisted``; only completed writes are durable;
3. messages: handed to the network;
4. committed entries: applied to the node's state machine, then ``applied`` reported;
5. client results and reads: checked (acknowledged writes, linearizable reads).

Network faults: drop, duplicate, slow delivery, reordering (links are FIFO, as TCP is, unless
``NetConfig.fifo`` is off: then random latency reorders messages), and partitions as a set of
blocked directed links (a one-way partition blocks one direction), checked at delivery, so a
partition also catches messages already in flight.

Snapshots: a node's state machine (``tests.sim.app.SimApp``: the real session layer over a
small deterministic machine) is snapshotted when the core asks, into a durable in-memory
snapshot store; compaction, chunk reads (leader) and chunk writes (follower) and installs are
carried out as the Ready says, each reported back to the core at once.

Membership: ``spares`` extra nodes start outside the configuration (their configuration names
the initial voters, not themselves: they are joining); :meth:`SimCluster.change` asks the
leader for a membership change. Convergence and the final checks cover the members only.

Crash: the core and its state machine vanish, and so do disk writes that had not completed (a
random prefix of them may complete at the crash, and the first incomplete write may have done
its truncation but not its append, both legal for a real disk); snapshots, complete or partial,
are durable. Restart: a new core built from the latest snapshot, the durable log and the hard
state only; its state machine is restored from the snapshot and replays the rest.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import random
from collections.abc import Callable
from typing import Any

from consensus.config import RaftConfig
from consensus.log import MemoryLog
from consensus.messages import ClientResponse, Entry, EntryKind
from consensus.node import RaftNode
from consensus.ready import HardState, ReadState, Ready, Role
from consensus.snapshots import SnapshotInfo, reconcile_log

from .app import SimApp, SnapshotStore
from .checker import Checker, InvariantViolation
from .requests import ClientRequests

DELIVER, TICK, DISK, CALL = 0, 1, 2, 3
COMMAND = int(EntryKind.COMMAND)


@dataclasses.dataclass
class NetConfig:
    min_latency: int = 1
    max_latency: int = 6
    drop: float = 0.0  # chance a message is lost
    duplicate: float = 0.0  # chance a message is delivered twice
    slow: float = 0.0  # chance a message is delayed by up to max_slow more
    max_slow: int = 150
    # Each link delivers in send order, as TCP (ZeroMQ) does; False lets random latency
    # reorder messages, a fault of its own.
    fifo: bool = True


@dataclasses.dataclass
class DiskConfig:
    min_latency: int = 1
    max_latency: int = 5


class SimNode:
    """One node's host: its core (None while crashed), durable storage, disk queue and state
    machine. The state machine's value is the number of commands applied."""

    __slots__ = (
        "app",
        "applied",
        "commit_seen",
        "core",
        "crashes",
        "disk_free_at",
        "epoch",
        "hard_state",
        "id",
        "last_timestamp",
        "snapshots",
        "storage",
        "tick_at",
        "writes",
    )

    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.core: RaftNode | None = None
        self.storage = MemoryLog()  # exactly what the disk holds durably
        self.hard_state = HardState()
        # writes handed to the disk and not yet complete: (done at, truncate after, entries)
        self.writes: collections.deque[tuple[int, int | None, list[Entry]]] = collections.deque()
        self.disk_free_at = 0
        self.epoch = 0  # bumped at every crash: timers and disk events of the old life are void
        self.tick_at: int | None = None
        self.applied = 0
        self.last_timestamp = 0
        self.commit_seen = 0
        self.app = SimApp()
        self.snapshots = SnapshotStore()  # durable
        self.crashes = 0

    @property
    def up(self) -> bool:
        return self.core is not None

    @property
    def sm_value(self) -> int:
        """Commands the state machine applied (the user machine's count)."""
        return self.app.user.count

    def __repr__(self) -> str:
        return f"SimNode({self.id}, {self.core!r})"


class SimCluster(ClientRequests):
    def __init__(
        self,
        size: int = 3,
        *,
        spares: int = 0,
        seed: int = 0,
        net: NetConfig | None = None,
        disk: DiskConfig | None = None,
        node_factory: Callable[..., RaftNode] = RaftNode,
        trace: bool = False,
        **config: Any,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.ids = tuple(f"n{i + 1}" for i in range(size + spares))
        self.voters = self.ids[:size]  # the bootstrap configuration; spares are not in it
        self.configs = {i: RaftConfig(i, self.voters, **config) for i in self.ids}
        self.net = net or NetConfig()
        self.disk = disk or DiskConfig()
        self.node_factory = node_factory
        self.now = 0
        self.events = 0
        self._queue: list[tuple[Any, ...]] = []
        self._seq = 0
        self.blocked: set[tuple[str, str]] = set()
        self._link_clock: dict[tuple[str, str], int] = {}  # last delivery time per FIFO link
        self.nodes = {i: SimNode(i) for i in self.ids}
        self.checker = Checker(self.voters, self._durable_term_at)
        self.stats: collections.Counter[str] = collections.Counter()
        self.trace: list[str] | None = [] if trace else None
        self._requests = 0
        self.acked: dict[str, int] = {}
        self.refused: collections.Counter[str] = collections.Counter()
        self.reads: dict[str, tuple[str, int, bool]] = {}
        self.read_results: dict[str, ReadState] = {}
        # request id -> who wants the answer (session clients, membership changes)
        self.callbacks: dict[str, Callable[[ClientResponse], None]] = {}
        self.payloads: dict[str, bytes] = {}  # request id -> payload, for submitted commands
        self.change_results: dict[str, ClientResponse] = {}
        # every chunk read a leader asked for: (time, leader, peer, snapshot index, offset)
        self.chunk_reads: list[tuple[int, str, str, int, int]] = []
        self.installs: list[tuple[int, str, int]] = []  # (time, node, snapshot index)
        # every AppendEntries rejection, as (time, follower, leader)
        self.rejections: list[tuple[int, str, str]] = []
        # called with a node the moment it becomes leader (schedules use it to strike new
        # leaders in the fragile first moments of their term)
        self.on_leader: Callable[[SimNode], None] | None = None
        for node in self.nodes.values():
            self._boot(node)

    # ================================================================== event loop

    def _push(self, at: int, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, a, b, c))

    def schedule(self, at: int, action: Callable[[], Any]) -> None:
        """Run ``action`` at time ``at`` (a client request, a fault)."""
        self._push(max(at, self.now), CALL, action)

    def step(self) -> bool:
        """Run the next event; False when nothing is left to run."""
        if not self._queue:
            return False
        at, _, kind, a, b, c = heapq.heappop(self._queue)
        self.now = at
        self.events += 1
        try:
            # An event changes one node (a delivery, a timer, a disk write) or, if scripted,
            # any: the per-step checks look at what may have changed.
            node: SimNode | None
            if kind == DELIVER:
                node = self.nodes[a]
                self._deliver(a, b, c)
            elif kind == TICK:
                node = a
                if node.core is not None and node.epoch == b and node.tick_at == at:
                    node.tick_at = None
                    self._carry_out(node, node.core.tick(at))
            elif kind == DISK:
                node = a
                self._disk_done(a, b)
            else:
                node = None
                a()
            if node is None:
                self.checker.after_step(
                    [(n.id, n.core) for n in self.nodes.values() if n.core is not None]
                )
            elif node.core is not None:
                self.checker.after_step(((node.id, node.core),))
        except InvariantViolation as exc:
            raise self._with_context(exc) from None
        return True

    def _with_context(self, exc: InvariantViolation) -> InvariantViolation:
        return InvariantViolation(
            f"[seed {self.seed}, t={self.now} ms, event {self.events}] {exc}\n"
            f"  replay: python -m tests.sim.replay {self.seed} --trace"
        )

    def run_for(self, duration: int) -> None:
        end = self.now + duration
        queue = self._queue
        while queue and queue[0][0] <= end:
            self.step()
        self.now = max(self.now, end)

    def run_until(self, predicate: Callable[[], bool], timeout: int) -> bool:
        """Run events until ``predicate()`` holds (checked after each) or ``timeout`` ms pass."""
        end = self.now + timeout
        queue = self._queue
        while not predicate():
            if not queue or queue[0][0] > end:
                self.now = max(self.now, end)
                return predicate()
            self.step()
        return True

    def note(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now:>7} {text}")

    # ================================================================== nodes

    def _boot(self, node: SimNode) -> None:
        node.app = SimApp()
        node.applied = node.last_timestamp = 0
        latest = node.snapshots.latest()
        info = None
        if latest is not None:
            info, _ = latest
            reconcile_log(node.storage, info)
            node.app.restore(node.snapshots.body((info.index, info.term)))
            node.applied, node.last_timestamp = info.index, info.timestamp
        core = self.node_factory(
            self.configs[node.id],
            node.storage,
            node.hard_state,
            random.Random(self.rng.getrandbits(64)),
            self.now,
            snapshot=info,
        )
        node.core = core
        node.commit_seen = core.commit_index
        node.tick_at = None
        self._carry_out(node, core.tick(self.now))

    def crash(self, node_id: str, *, lose_all_pending: bool = False) -> None:
        """Kill a node. Writes not yet complete are lost, except that (unless
        ``lose_all_pending``) a random prefix of them may have reached the disk anyway."""
        node = self.nodes[node_id]
        if node.core is None:
            return
        self.note(f"CRASH {node_id} ({len(node.writes)} writes pending)")
        node.core = None
        node.epoch += 1
        node.crashes += 1
        node.tick_at = None
        writes = node.writes
        done = 0 if lose_all_pending else self.rng.randint(0, len(writes))
        for _ in range(done):
            _, truncate_after, entries = writes.popleft()
            self._write_storage(node, truncate_after, entries)
        if writes and writes[0][1] is not None and not lose_all_pending and self.rng.random() < 0.5:
            node.storage.truncate_after(writes[0][1])  # the cut reached the disk, the append not
        writes.clear()
        node.disk_free_at = self.now

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.core is not None:
            return
        self.note(f"RESTART {node_id} (log {node.storage!r}, {node.hard_state})")
        self._boot(node)

    def leader(self) -> SimNode | None:
        """The live node that believes it leads, in the highest term."""
        best: SimNode | None = None
        for node in self.nodes.values():
            core = node.core
            if core is not None and core.is_leader and (best is None or core.term > best.core.term):  # type: ignore[union-attr]
                best = node
        return best

    def up_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def _durable_term_at(self, node_id: str, index: int) -> int | None:
        node = self.nodes[node_id]
        term = node.storage.term_at(index)
        if term is None and node.snapshots.complete and index <= max(node.snapshots.complete)[0]:
            # Held through a snapshot (which only ever covers committed entries).
            committed = self.checker.committed
            entry = committed[index] if index < len(committed) else None
            return entry.term if entry is not None else None
        return term

    # ================================================================== network

    def isolate(self, node_id: str) -> None:
        for other in self.ids:
            if other != node_id:
                self.blocked.add((node_id, other))
                self.blocked.add((other, node_id))
        self.note(f"ISOLATE {node_id}")

    def partition(self, *groups: tuple[str, ...] | list[str]) -> None:
        """Block every link between nodes of different groups (nodes in no group: isolated)."""
        where = {n: g for g, members in enumerate(groups) for n in members}
        for n in self.ids:
            where.setdefault(n, len(where) + len(groups))  # alone in a group of its own
        for a in self.ids:
            for b in self.ids:
                if where[a] != where[b]:
                    self.blocked.add((a, b))
        self.note(f"PARTITION {[list(g) for g in groups]}")

    def block(self, source: str, destination: str) -> None:
        """A one-way partition: messages from ``source`` to ``destination`` are lost."""
        self.blocked.add((source, destination))
        self.note(f"BLOCK {source}->{destination}")

    def heal(self) -> None:
        self.blocked.clear()
        self.note("HEAL")

    def _send(self, source: str, destination: str, message: Any) -> None:
        net = self.net
        rng = self.rng
        self.stats[message.__class__.__name__] += 1
        if net.drop and rng.random() < net.drop:
            self.stats["dropped"] += 1
            return
        copies = 2 if net.duplicate and rng.random() < net.duplicate else 1
        for _ in range(copies):
            at = self.now + rng.randint(net.min_latency, net.max_latency)
            if net.slow and rng.random() < net.slow:
                at += rng.randint(0, net.max_slow)
            if net.fifo:
                link = (source, destination)
                at = max(at, self._link_clock.get(link, 0))
                self._link_clock[link] = at
            self._push(at, DELIVER, destination, source, message)

    def _deliver(self, destination: str, source: str, message: Any) -> None:
        if (source, destination) in self.blocked:
            self.stats["partitioned"] += 1
            return
        node = self.nodes[destination]
        core = node.core
        if core is None:
            return
        if self.trace is not None:
            self.note(f"{source}->{destination} {message}")
        if message.__class__.__name__ == "AppendEntriesResponse" and not message.success:
            self.rejections.append((self.now, source, destination))
        self._carry_out(node, core.step(message, self.now))

    # ================================================================== disk

    def _write(self, node: SimNode, truncate_after: int | None, entries: list[Entry]) -> None:
        disk = self.disk
        done_at = max(self.now, node.disk_free_at) + self.rng.randint(
            disk.min_latency, disk.max_latency
        )
        node.disk_free_at = done_at
        node.writes.append((done_at, truncate_after, entries))
        self._push(done_at, DISK, node, node.epoch)

    @staticmethod
    def _write_storage(node: SimNode, truncate_after: int | None, entries: list[Entry]) -> None:
        if truncate_after is not None:
            node.storage.truncate_after(truncate_after)
        node.storage.append(entries)

    def _disk_done(self, node: SimNode, epoch: int) -> None:
        if node.core is None or node.epoch != epoch:
            return
        writes = node.writes
        last: Entry | None = None
        while writes and writes[0][0] <= self.now:
            _, truncate_after, entries = writes.popleft()
            self._write_storage(node, truncate_after, entries)
            if entries:
                last = entries[-1]
        if last is not None:
            self._carry_out(node, node.core.persisted(last.index, last.term, self.now))

    # ================================================================== carrying out a Ready

    def _carry_out(self, node: SimNode, ready: Ready) -> None:
        """Carry out ``ready`` and every Ready the core returns while doing so."""
        core = node.core
        assert core is not None
        queue = collections.deque([ready])
        deadline: int | None = None
        while queue:
            ready = queue.popleft()
            self._carry_out_one(node, core, ready, queue)
            deadline = ready.deadline if deadline is None else min(deadline, ready.deadline)
        assert deadline is not None
        deadline = max(deadline, self.now)
        if node.tick_at is None or deadline < node.tick_at:
            node.tick_at = deadline
            self._push(deadline, TICK, node, node.epoch)

    def _carry_out_one(
        self, node: SimNode, core: RaftNode, ready: Ready, queue: collections.deque[Ready]
    ) -> None:
        checker = self.checker
        name = node.id
        now = self.now
        if ready.hard_state is not None:
            checker.on_hard_state(name, ready.hard_state)
            node.hard_state = ready.hard_state  # durable before any message leaves
        if ready.install_snapshot is not None:
            self._install(node, ready.install_snapshot.info, ready.install_snapshot.reset_log)
        before = core.membership
        if ready.entries or ready.truncate_after is not None:
            if ready.entries:
                before = core.membership_at(ready.entries[0].index - 1)
            checker.on_entries(name, core, ready.truncate_after, ready.entries)
            self._write(node, ready.truncate_after, ready.entries)
        if ready.compact_through is not None:
            node.storage.compact_through(ready.compact_through)
        if ready.commit_index > node.commit_seen:
            checker.on_commit(name, core, node.commit_seen, ready.commit_index, before)
            node.commit_seen = ready.commit_index
        for change in ready.role_changes:
            if self.trace is not None:
                self.note(str(change))
            if change.new is Role.LEADER:
                checker.on_leader(name, core, change.term)
                if self.on_leader is not None:
                    self.on_leader(node)
        if ready.membership is not None and self.trace is not None:
            self.note(f"{name} configuration: {ready.membership}")
        for destination, message in ready.messages:
            self._send(name, destination, message)
        for response in ready.results:
            self._on_result(response)
        for read in ready.reads:
            self._on_read(node, read)
        for chunk in ready.snapshot_reads:
            self.chunk_reads.append((now, name, chunk.peer, chunk.index, chunk.offset))
            data = node.snapshots.read((chunk.index, chunk.term), chunk.offset, chunk.max_bytes)
            queue.append(core.snapshot_chunk(chunk, data, now))
        for write in ready.snapshot_writes:
            offset, complete = node.snapshots.receive(write)
            queue.append(core.snapshot_written(write, offset, complete, now))
        if ready.committed:
            results: dict[int, Any] = {}
            app = node.app
            for entry in ready.committed:
                checker.on_apply(name, entry, node.applied, node.last_timestamp)
                outcome = app.apply_entry(entry)
                node.applied = entry.index
                node.last_timestamp = entry.timestamp
                if outcome is not None:
                    results[entry.index] = outcome
                self._check_app(node, entry.index)
            queue.append(core.applied(node.applied, results, now))
        if ready.snapshot_wanted:
            self._take_snapshot(node, core, queue)

    def _check_app(self, node: SimNode, index: int) -> None:
        user = node.app.user
        checker = self.checker
        if user.violation is not None:
            checker.fail(f"{node.id}: {user.violation}")
        for session, seq, entry_index, position, result in user.session_applies:
            checker.on_session_apply(node.id, session, seq, entry_index, position, result)
        user.session_applies.clear()
        for session, expired, entry_index, position in user.closed:
            checker.on_session_closed(node.id, session, expired, entry_index, position)
        user.closed.clear()
        checker.on_state(node.id, index, node.app.chain)

    # ================================================================== snapshots

    def _take_snapshot(
        self, node: SimNode, core: RaftNode, queue: collections.deque[Ready]
    ) -> None:
        point = core.snapshot_point(node.applied)
        info = node.snapshots.write(point, node.app.snapshot())
        self.checker.on_snapshot(node.id, info, node.app.chain)
        self.note(f"{node.id} SNAPSHOT at {info.index} ({info.size} bytes)")
        queue.append(core.snapshot_taken(info, self.now))

    def _install(self, node: SimNode, info: SnapshotInfo, reset_log: bool) -> None:
        """A received snapshot replaces the state machine and the log prefix."""
        node.app = SimApp()
        node.app.restore(node.snapshots.body((info.index, info.term)))
        self.checker.on_snapshot(node.id, info, node.app.chain)
        node.applied, node.last_timestamp = info.index, info.timestamp
        node.commit_seen = max(node.commit_seen, info.index)
        if reset_log:
            node.storage.reset(info.index, info.term)
            node.writes.clear()  # their reports must not reach the core: that log is gone
        self.installs.append((self.now, node.id, info.index))
        self.note(f"{node.id} INSTALL snapshot {info.index} (reset log: {reset_log})")

    # ================================================================== convergence

    def members(self) -> tuple[str, ...]:
        """The members (voters and learners) of the leader's configuration, or the bootstrap
        voters while there is no leader."""
        leader = self.leader()
        if leader is None or leader.core is None:
            return self.voters
        return leader.core.membership.members

    def converged(self) -> bool:
        """Every member is up, one leader has committed its whole log, and every member holds
        and has applied exactly that log."""
        leader = self.leader()
        if leader is None:
            return False
        core = leader.core
        assert core is not None
        last = core.log.last_index
        if core.commit_index != last:
            return False
        for node_id in core.membership.members:
            node = self.nodes[node_id]
            other = node.core
            if other is None or node.applied != last or other.log.last_index != last:
                return False
        return True

    def check_final(self) -> None:
        """The end-of-run checks, after :meth:`converged`: the members' logs are the committed
        log, their state machines and session tables identical, every acknowledged write
        applied everywhere."""
        logs = {}
        tables = {}
        for node_id in self.members():
            node = self.nodes[node_id]
            assert node.core is not None
            log = node.core.log
            first, last = log.first_index, log.last_index
            logs[node.id] = log.slice(first, last + 1, last - first + 1, 1 << 62)
            tables[node.id] = (node.app.chain, node.app.session_table())
        try:
            self.checker.final(logs, {n: self.nodes[n].applied for n in logs})
            if len(set(tables.values())) > 1:
                self.checker.fail(f"state machines or session tables differ: {sorted(tables)}")
        except InvariantViolation as exc:
            raise self._with_context(exc) from None
