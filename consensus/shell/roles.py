"""The role actors: follower, candidate and leader, each a thin shell over the sans-IO core.

Theory of operation
-------------------
Exactly one role actor at a time owns the node's :class:`~consensus.shell.book.Book` (the
``RaftNode`` core plus who waits for what). The node supervisor forwards every input to it as
:class:`Forwarded`; the role actor feeds the core and carries out the ``Ready`` the core
returns, in the order ``consensus.ready`` prescribes:

1. a new hard state goes to the log writer, and every outgoing message is *held* until the
   writer confirms it durable (so no vote or append answer leaves before term and vote are on
   disk);
2. entries (and any suffix truncation) go to the log writer, whose ``Persisted`` comes back
   through the supervisor;
3. messages go to the peers' supervisors; 4. committed entries go to the state machine actor;
5. client answers and released reads go out.

When the core's role changes, the actor hands the book back to the supervisor (``Handoff``)
and retires: whatever still reaches it is bounced to the supervisor, which hands it to the next
role actor in order, so nothing is lost in a switch.

Membership (``consensus.shell.membership_changes``): a ``ChangeMembership`` ask goes to the
core and is answered when the change is applied; ``Ready.membership`` updates the address
book; once this node's own removal is committed and applied, the actor answers whatever still
waits, retires and tells the supervisor ``Removed``.

The three classes differ in what they do with client commands: a leader gathers every command
queued in its mailbox (``ClientBatch`` asks, and single ``ClientCommand`` asks) into one log
entry (a ``Flush`` message it sends itself closes the batch: adaptive batching with no timer,
so an idle leader proposes a lone command at once and a busy one proposes hundreds per entry);
a follower or candidate has the core refuse them at once with a hint of who leads.

Batches all the way
-------------------
Every hop carries batches: a client's ``ClientBatch`` is one actor message; one ``Flush``
makes one entry of everything queued (at most ``MAX_ENTRY_COMMANDS`` commands or about
``MAX_ENTRY_BYTES``; a client batch is never split); one ``AppendBatch`` per Ready goes to the
log writer, which coalesces those queued in its inbox into one write and fsync; one ``Apply``
per Ready goes to the state machine, answered by one ``Applied``; and each client ask gets one
answer carrying all its results. A client batch is answered when its entry is applied, so
answers to one client come in the order its batches were proposed.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from actors import UNHANDLED, Actor, ActorRef
from consensus.errors import LocalProtocolError
from consensus.messages import PEER_MESSAGES, ClientCommand, ClientResponse
from consensus.ready import Ready, Role
from consensus.shell import membership_changes as changes
from consensus.shell.batching import encode_commands
from consensus.shell.book import Book, Waiter, answer
from consensus.shell.protocol import (
    Applied,
    Apply,
    Bounced,
    Campaign,
    ChangeMembership,
    ClientBatch,
    ClientBatchResponse,
    ClientQuery,
    Flush,
    Forwarded,
    Handoff,
    NodeStatus,
    QueryResponse,
    Removed,
    Retire,
    Retired,
    StatusRequest,
    Tick,
    TransferLeadership,
)
from consensus.shell.snapshot_shell import SNAPSHOT_INPUTS, SnapshotShell
from consensus.shell.state_machine import QueryJob
from consensus.shell.wiring import Wiring
from consensus.wal_storage import to_wal
from wal.writer_messages import AppendBatch, HardStateSaved, Persisted, SaveHardState

# Caps on one entry built from queued client commands. A bigger entry only delays its
# followers' first byte; these keep an entry well under the default 1 MiB message limit.
MAX_ENTRY_COMMANDS = 4096
MAX_ENTRY_BYTES = 512 * 1024


class RoleActor(Actor):
    role: ClassVar[Role]

    def __init__(self, book: Book, wiring: Wiring, snapshots: SnapshotShell | None = None) -> None:
        self.book = book
        self.w = wiring
        # Carries out the snapshot fields of each Ready (consensus.shell.snapshot_shell).
        self.snapshots = snapshots
        self.retired = False
        self._timer_at: int | None = None
        self._warned_snapshot: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    def pre_start(self) -> None:
        self.book.generation += 1
        core = self.book.core
        if self.book.removal is None:  # the node's first role actor
            self.book.removal = changes.start(core, self.w, self.ctx.system)
        self.ctx.log.info(
            "role actor active", role=str(self.role), term=core.term, leader=core.leader_id
        )
        if self.book.proposals:
            self._flush()
        if not self.retired:
            self._carry_out(core.tick(self._now()))

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        match message:
            case Forwarded():
                if self.retired:
                    self.w.supervisor.tell(Bounced(message))
                else:
                    self._on_forwarded(message)
            case Tick():
                self._timer_at = None
                if not self.retired:
                    self._carry_out(self.book.core.tick(self._now()))
            case Flush():
                if not self.retired:
                    self._flush()
            case Retire():
                self.w.supervisor.tell(Retired())
            case _:
                return UNHANDLED
        return None

    # ------------------------------------------------------------------ inputs

    def _now(self) -> int:
        return self.w.clock.now_ms()

    def _on_forwarded(self, forwarded: Forwarded) -> None:
        message, reply = forwarded.message, forwarded.reply
        core, book = self.book.core, self.book
        now = self._now()
        ready: Ready | None
        if isinstance(message, PEER_MESSAGES):
            changes.learn_sender(self.w, message, forwarded.sender)
            ready = core.step(message, now)
        elif isinstance(message, Persisted):
            if self.snapshots is not None and self.snapshots.drop_persisted:
                return  # a write from before a log reset (SnapshotInstall's rule)
            self._observe_append(message.up_to_index)
            ready = core.persisted(message.up_to_index, message.term, now)
        elif isinstance(message, HardStateSaved):
            book.hard_state_writes -= 1
            if book.hard_state_writes == 0 and book.held:
                held, book.held = book.held, []
                self._send_all(held)
            ready = None
        elif isinstance(message, Applied):
            ready = core.applied(message.index, message.results, now)
        elif isinstance(message, ClientBatch):
            ready = self._on_batch(message, reply)
        elif isinstance(message, ClientCommand):
            ready = self._on_command(message, reply)
        elif isinstance(message, ClientQuery):
            if reply is None:
                return
            if message.request_id in book.reads:
                reply.success(
                    QueryResponse(message.request_id, False, 0, None, "duplicate_request", None)
                )
                return
            book.reads[message.request_id] = (reply, message.payload)
            ready = core.read(message.request_id, now, stale=message.stale)
        elif isinstance(message, StatusRequest):
            if reply is not None:
                reply.success(self._status())
            return
        elif isinstance(message, TransferLeadership):
            ready = self._on_transfer(message, reply, now)
        elif isinstance(message, ChangeMembership):
            ready = changes.request_change(book, self.w, message, reply, now)
        elif self.snapshots is not None and isinstance(message, SNAPSHOT_INPUTS):
            ready = self.snapshots.on_input(core, message, now, self.ctx.log)
        elif isinstance(message, Campaign):
            self.ctx.log.info("campaign requested", reason=message.reason)
            ready = core.campaign(now)
        else:
            self.ctx.log.warning("unexpected input dropped", type=type(message).__name__)
            if reply is not None:
                reply.failure(TypeError(f"a Raft node does not take {type(message).__name__}"))
            return
        if ready is not None:
            self._carry_out(ready)

    def _on_transfer(self, message: TransferLeadership, reply: Any, now: int) -> Ready | None:
        try:
            target = message.target or self._best_successor()
            ready = self.book.core.transfer_leadership(target, now)
        except LocalProtocolError as exc:
            if reply is not None:
                reply.failure(exc)
            return None
        if reply is not None:
            reply.success(self._status())
        return ready

    def _on_batch(self, batch: ClientBatch, reply: Any) -> Ready | None:
        if reply is None:
            return None  # a told batch has nobody to answer: refuse to guess
        if not batch.payloads:
            reply.success(ClientBatchResponse(True, 0, [], None, None))
            return None
        if len(batch.payloads) > MAX_ENTRY_COMMANDS:
            error = f"batch_too_large: {len(batch.payloads)} commands, at most {MAX_ENTRY_COMMANDS}"
            reply.success(ClientBatchResponse(False, 0, [], error, None))
            return None
        size = sum(map(len, batch.payloads))
        return self._on_client(Waiter(reply, batch.payloads, None, size))

    def _on_command(self, command: ClientCommand, reply: Any) -> Ready | None:
        book = self.book
        if reply is None:
            return None  # a told command has nobody to answer: refuse to guess
        if command.request_id in book.command_ids:
            reply.success(
                ClientResponse(command.request_id, False, 0, None, "duplicate_request", None)
            )
            return None
        book.command_ids.add(command.request_id)
        payload = command.payload
        return self._on_client(Waiter(reply, [payload], command.request_id, len(payload)))

    def _on_client(self, waiter: Waiter) -> Ready | None:
        book = self.book
        if self.role is Role.LEADER:
            if not book.proposals:
                self.ctx.self_ref.tell(Flush())
            book.proposals.append(waiter)
            return None
        return self._propose([waiter])  # the core refuses at once, with a leader hint

    def _flush(self) -> None:
        proposals, self.book.proposals = self.book.proposals, []
        if proposals:
            self._carry_out(self._propose(proposals))

    def _propose(self, waiters: list[Waiter]) -> Ready:
        """One core proposal: the waiters in entries of at most the caps, in order."""
        book = self.book
        commands: list[ClientCommand] = []
        group: list[Waiter] = []
        count = size = 0
        for waiter in waiters:
            n = len(waiter.payloads)
            if group and (count + n > MAX_ENTRY_COMMANDS or size + waiter.size > MAX_ENTRY_BYTES):
                commands.append(self._entry(group))
                group, count, size = [], 0, 0
            group.append(waiter)
            count += n
            size += waiter.size
        commands.append(self._entry(group))
        if self.role is Role.LEADER:
            metrics = self.w.metrics
            metrics.proposed_entries.inc(len(commands))
            metrics.proposed_commands.inc(sum(len(w.payloads) for w in waiters))
        return book.core.propose(commands, self._now())

    def _entry(self, group: list[Waiter]) -> ClientCommand:
        request_id = self.book.entry_id()
        self.book.waiting[request_id] = group
        if len(group) == 1:
            payloads = group[0].payloads
        else:
            payloads = [payload for waiter in group for payload in waiter.payloads]
        return ClientCommand(request_id, encode_commands(payloads))

    # ------------------------------------------------------------------ carrying out a Ready

    def _carry_out(self, ready: Ready) -> None:
        book, w = self.book, self.w
        if ready.hard_state is not None:
            book.hard_state_writes += 1
            w.writer.tell(
                SaveHardState(ready.hard_state.term, ready.hard_state.voted_for),
                sender=w.supervisor,
            )
        snapshots = self.snapshots
        if snapshots is not None:
            snapshots.before_writes(ready)  # an install goes before this Ready's writes
        if ready.entries or ready.truncate_after is not None:
            w.writer.tell(
                AppendBatch([to_wal(e) for e in ready.entries], ready.truncate_after),
                sender=w.supervisor,
            )
            appends = book.appends
            if ready.truncate_after is not None:
                while appends and appends[-1][0] > ready.truncate_after:
                    appends.pop()
            if ready.entries:
                appends.append((ready.entries[-1].index, time.perf_counter()))
        if ready.messages:
            if book.hard_state_writes:
                book.held.extend(ready.messages)
            else:
                self._send_all(ready.messages)
        if ready.committed:
            w.state_machine.tell(Apply(list(ready.committed), self._waiters_of(ready.committed)))
        if snapshots is not None:
            snapshots.after_apply(ready)  # compaction, chunk IO, then a snapshot if wanted
        for response in ready.results:
            self._answer(response)
        for read in ready.reads:
            waiting = book.reads.pop(read.request_id, None)
            if waiting is None:
                continue
            reply, payload = waiting
            if read.ok:
                w.state_machine.tell(QueryJob(read.request_id, payload, read.index, reply))
            else:
                reply.success(
                    QueryResponse(
                        read.request_id,
                        False,
                        read.index,
                        None,
                        read.error,
                        w.address_of(read.leader_hint),
                    )
                )
        metrics = w.metrics
        for change in ready.role_changes:
            metrics.role_changes.labels(str(change.new)).inc()
            if change.new is Role.CANDIDATE and not change.pre_vote:
                metrics.elections.inc()
            self.ctx.log.info(
                str(change),
                old=str(change.old),
                new=str(change.new),
                term=change.term,
                reason=change.reason,
            )
        for peer in ready.need_snapshot:
            if peer not in self._warned_snapshot:
                self._warned_snapshot.add(peer)
                self.ctx.log.warning(
                    "peer is behind the compacted log and needs a snapshot", peer=peer
                )
        for reason in ready.dropped:
            metrics.dropped_messages.inc()
            self.ctx.log.warning("peer message dropped", reason=reason)
        core = book.core
        metrics.state = (
            core.term,
            str(core.role_kind),
            core.commit_index,
            core.applied_index,
            core.log.last_index,
        )
        if self._membership_duties(ready):
            return
        if book.core.role_kind is not self.role:
            self._hand_off(ready)
            return
        self._schedule_tick(ready.deadline)

    def _membership_duties(self, ready: Ready) -> bool:
        """Follow a new configuration (addresses); True if our removal is now committed and
        this actor retired (the supervisor stops the Raft)."""
        book, membership = self.book, ready.membership
        assert book.removal is not None
        if membership is not None:
            book.removal.saw(membership)
            learned = changes.follow_membership(self.w, self.ctx.system, membership)
            self.ctx.log.info(
                "configuration in effect",
                voters=list(membership.voters),
                learners=list(membership.learners),
                new_addresses={node: self.w.addresses[node] for node in learned},
            )
        if not book.removal.removed(book.core):
            return False
        core = book.core
        self.retired = True
        self.ctx.log.warning(
            "removed from the cluster configuration; stopping Raft",
            term=core.term,
            commit_index=core.commit_index,
            asks_released=changes.release_waiters(book),
            voters=list(core.membership.voters),
        )
        self.w.supervisor.tell(Removed(changes.removed_status(self._status())))
        return True

    def _answer(self, response: ClientResponse) -> None:
        """The core's answer for one entry, for the asks it carried (unless the state machine
        answered them already)."""
        if changes.answer_change(self.book, self.w, response):
            return
        group = self._take_group(response.request_id)
        if group is None:
            return
        hint = None if response.ok else self.w.address_of(response.leader_hint)
        answer(group, response.ok, response.index, response.result, response.error, hint)

    def _take_group(self, request_id: str) -> list[Waiter] | None:
        book = self.book
        group = book.waiting.pop(request_id, None)
        if group is not None:
            for waiter in group:
                if waiter.request_id is not None:
                    book.command_ids.discard(waiter.request_id)
        return group

    def _waiters_of(self, committed: list[Any]) -> dict[int, list[Waiter]]:
        """The asks waiting on these committed entries, taken from the book so that the state
        machine answers them: an entry this node proposed (``core.pending``, read only) is
        ours if the committed entry at its index has the term we proposed it in; otherwise
        it was superseded, and the core says so later."""
        book = self.book
        if not book.waiting:
            return {}
        first, last = committed[0].index, committed[-1].index
        waiters: dict[int, list[Waiter]] = {}
        for index, term, request_id in book.core.pending:
            if index > last:
                break
            if index < first or committed[index - first].term != term:
                continue
            group = self._take_group(request_id)
            if group is not None:
                waiters[index] = group
        return waiters

    def _observe_append(self, up_to: int) -> None:
        appends = self.book.appends
        if not appends or appends[0][0] > up_to:
            return
        now = time.perf_counter()
        histogram = self.w.metrics.wal_append
        while appends and appends[0][0] <= up_to:
            histogram.observe(now - appends.popleft()[1])

    def _send_all(self, messages: list[tuple[str, Any]]) -> None:
        peers, supervisor = self.w.peers, self.w.supervisor
        for node_id, message in messages:
            ref = peers.get(node_id)
            if ref is None:
                self.ctx.log.warning("message for an unknown node dropped", node=node_id)
                continue
            ref.tell(message, sender=supervisor)

    def _schedule_tick(self, deadline: int) -> None:
        if deadline <= 0:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        self._timer_at = deadline
        delay = max(0, deadline - self._now()) / 1000.0
        self.ctx.schedule_once(delay, Tick())

    def _hand_off(self, ready: Ready) -> None:
        reason = ready.role_changes[-1].reason if ready.role_changes else "role changed"
        self.retired = True
        self.w.supervisor.tell(Handoff(self.book, reason))

    def _best_successor(self) -> str:
        """The follower with the longest matching log: the quickest to take over."""
        core = self.book.core
        if self.role is not Role.LEADER or not core.config.peers:
            raise LocalProtocolError(f"{core.id} is not a leader with peers")
        progress = core.role.progress  # type: ignore[union-attr]
        return max(core.config.peers, key=lambda peer: progress[peer].match)

    def _status(self) -> NodeStatus:
        core = self.book.core
        return NodeStatus(
            node_id=core.id,
            role=str(core.role_kind),
            role_actor=self.ctx.path,
            term=core.term,
            leader=self.w.address_of(core.leader_id),
            first_index=core.log.first_index,
            last_index=core.log.last_index,
            commit_index=core.commit_index,
            applied_index=core.applied_index,
            voters=core.membership.voters,
            learners=core.membership.learners,
            matches=tuple(
                (peer, progress.match)
                for peer, progress in getattr(core.role, "progress", {}).items()
            ),
        )


class FollowerActor(RoleActor):
    role = Role.FOLLOWER


class CandidateActor(RoleActor):
    role = Role.CANDIDATE


class LeaderActor(RoleActor):
    role = Role.LEADER


ROLE_ACTORS: dict[Role, type[RoleActor]] = {
    Role.FOLLOWER: FollowerActor,
    Role.CANDIDATE: CandidateActor,
    Role.LEADER: LeaderActor,
}
