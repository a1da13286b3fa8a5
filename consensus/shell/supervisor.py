"""RaftSupervisor: the node's supervisor actor at ``/user/node``, and the election FSM.

It owns the node's durable pieces and children: the log writer (``wal``), the state machine
actor (``state-machine``), the membership actor (``membership``, when configured) and exactly
one role actor (``follower-N``, ``candidate-N`` or ``leader-N``) that owns the Raft core.

The FSM is the supervisor's behaviour, switched with ``become``:

* ``following`` / ``campaigning`` / ``leading``: every input (peer messages, client asks, the
  writer's and the state machine's reports) is forwarded to the active role actor, with the
  ask's reply handle so the role actor can answer later.
* ``switching``: the active role actor handed the core back (``Handoff``) because the core
  changed role. Everything arriving now is stashed. The old actor is told ``Retire``; whatever
  it received after its handoff comes back ``Bounced``; once it answers ``Retired`` (after
  every earlier forward, since one sender's messages stay in order) it is stopped, the role
  actor for the new role is started with the core, and the bounced messages followed by the
  stashed ones are handed to it, oldest first. Nothing is dropped and per-sender order holds.
* ``removed``: the role actor reported that this node's removal from the configuration is
  committed and applied (``Removed``); the role actor is stopped and the Raft with it. Status
  requests are answered with role ``removed``, clients are sent on to other nodes
  (``consensus.shell.membership_changes``).

Peers and membership ping this path, and it answers pings itself (the pong names this path):
liveness is keyed on the supervisor, never on a child that comes and goes with roles.
"""

from __future__ import annotations

import random
from typing import Any

from actors import ActorRef, OneForOne, Props
from consensus.node import RaftNode
from consensus.ready import Role
from consensus.shell.book import Book
from consensus.shell.membership_changes import answer_removed
from consensus.shell.metrics import NodeMetrics
from consensus.shell.node_storage import NodeStorage
from consensus.shell.protocol import Bounced, Forwarded, Handoff, Removed, Retire, Retired
from consensus.shell.roles import ROLE_ACTORS
from consensus.shell.settings import NodeSettings
from consensus.shell.snapshot_files import SNAPSHOT_DIR, SnapshotFiles
from consensus.shell.snapshot_io import SnapshotIO
from consensus.shell.snapshot_shell import SnapshotShell, prepare_restart
from consensus.shell.state_machine import StateMachine, StateMachineActor
from consensus.shell.wiring import SteadyClock, Wiring
from membership.supervisor import PingResponder, new_incarnation
from wal.writer_actor import escalate_io_failures

BEHAVIOUR_OF_ROLE = {
    Role.FOLLOWER: "following",
    Role.CANDIDATE: "campaigning",
    Role.LEADER: "leading",
}


class RaftSupervisor(PingResponder):
    def __init__(
        self,
        settings: NodeSettings,
        machine: StateMachine,
        rng: random.Random | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.machine = machine
        self.rng = rng or random.Random()
        self.metrics = metrics
        self.incarnation = new_incarnation()
        self.storage: NodeStorage | None = None
        self.active: ActorRef | None = None
        self.book: Book | None = None
        self.bounced: list[Forwarded] = []
        self.snapshots: SnapshotShell | None = None

    def supervisor_strategy(self) -> OneForOne:
        # A failed write or fsync must stop the node, never restart the writer over a page
        # cache that may have dropped the data (fsyncgate); other failures restart the child.
        return OneForOne(max_restarts=3, within_seconds=10.0, decider=escalate_io_failures)

    # ------------------------------------------------------------------ lifecycle

    def pre_start(self) -> None:
        ctx, settings = self.ctx, self.settings
        if self.metrics is None:
            self.metrics = NodeMetrics(settings.node_id, ctx.system.stats)
        metrics = self.metrics
        self.storage = NodeStorage.open(settings, metrics.wal_fsync.observe)
        hard_state = self.storage.hard_state
        self_ref = ctx.self_ref
        # The latest snapshot first (the log reconciled with it), before the writer opens it.
        files = SnapshotFiles(settings.data_dir / SNAPSHOT_DIR)
        snapshot = prepare_restart(files, self.storage.shared)
        writer = ctx.spawn(self.storage.writer_props(report_to=self_ref), "wal")
        machine = ctx.spawn(
            Props(
                StateMachineActor,
                self.machine,
                self_ref,
                snapshot.index if snapshot else self.storage.log.first_index - 1,
                metrics,
                files,
                snapshot,
            ),
            "state-machine",
        )
        io = ctx.spawn(Props(SnapshotIO, files, self_ref), "snapshots")
        self.snapshots = SnapshotShell(io, machine, writer, self_ref, metrics)
        if settings.membership is not None:
            # The gossip membership or Rapid, whichever the settings carry.
            from membership.supervisor import membership_props  # noqa: PLC0415

            ctx.spawn(membership_props(settings.membership, self.incarnation), "membership")
        clock = SteadyClock()
        system = ctx.system
        peers = {
            node_id: system.ref(settings.supervisor_path(node_id))
            for node_id in settings.addresses
            if node_id != settings.node_id
        }
        self.wiring = Wiring(
            node_id=settings.raft.node_id,
            supervisor=self_ref,
            writer=writer,
            state_machine=machine,
            peers=peers,
            addresses=dict(settings.addresses),
            clock=clock,
            metrics=metrics,
        )
        core = RaftNode(
            settings.raft, self.storage.log, hard_state, self.rng, clock.now_ms(), snapshot
        )
        ctx.log.info(
            "node starting",
            node=settings.raft.node_id,
            term=hard_state.term,
            voted_for=hard_state.voted_for,
            first_index=self.storage.log.first_index,
            last_index=self.storage.log.last_index,
            voters=list(settings.raft.voters),
            snapshot=snapshot.index if snapshot else None,
        )
        self._activate(Book(core))

    def post_stop(self) -> None:
        # Children (the writer among them) are stopped before this runs.
        if self.storage is not None:
            self.storage.close()

    # ------------------------------------------------------------------ the FSM

    def following(self, message: Any, sender: ActorRef | None) -> Any:
        return self._steady(message, sender)

    def campaigning(self, message: Any, sender: ActorRef | None) -> Any:
        return self._steady(message, sender)

    def leading(self, message: Any, sender: ActorRef | None) -> Any:
        return self._steady(message, sender)

    def _steady(self, message: Any, sender: ActorRef | None) -> Any:
        if self.answer_ping(message, sender):
            return None
        if isinstance(message, Handoff):
            self._begin_switch(message)
            return None
        if isinstance(message, Bounced | Retired):
            return None  # a late word from a role actor already replaced: nothing to do
        if isinstance(message, Removed):
            self._stop_raft(message)
            return None
        reply = self.ctx.deferred_reply() if self.ctx.asked else None
        assert self.active is not None
        self.active.tell(Forwarded(message, sender, reply))
        return None

    def removed(self, message: Any, sender: ActorRef | None) -> Any:
        """Our removal committed and the Raft stopped: answer status, send clients on."""
        if self.answer_ping(message, sender):
            return None
        return answer_removed(message, self.removed_status)

    def _stop_raft(self, removed: Removed) -> None:
        assert self.active is not None
        self.ctx.stop(self.active)
        self.active = None
        self.removed_status = removed.status
        self.ctx.log.warning(
            "raft stopped: this node was removed from the cluster",
            term=removed.status.term,
            voters=list(removed.status.voters),
        )
        self.ctx.become(self.removed)

    def switching(self, message: Any, sender: ActorRef | None) -> Any:
        if self.answer_ping(message, sender):
            return None
        match message:
            case Bounced(forwarded):
                self.bounced.append(forwarded)
            case Retired():
                self._finish_switch()
            case _:
                self.ctx.stash()
        return None

    def _begin_switch(self, handoff: Handoff) -> None:
        self.book = handoff.book
        old = BEHAVIOUR_OF_ROLE[self._current_role]
        self.ctx.become(self.switching)
        self.ctx.log.info(
            "switching role",
            previous=old,
            role=str(handoff.book.core.role_kind),
            term=handoff.book.core.term,
            reason=handoff.reason,
        )
        assert self.active is not None
        self.active.tell(Retire())

    def _finish_switch(self) -> None:
        assert self.active is not None and self.book is not None
        self.ctx.stop(self.active)
        self.active = None
        self._activate(self.book)
        bounced, self.bounced = self.bounced, []
        for forwarded in bounced:
            self.active.tell(forwarded)
        self.ctx.unstash_all()

    def _activate(self, book: Book) -> None:
        role = book.core.role_kind
        self._current_role = role
        name = f"{role}-{book.generation + 1}"
        self.active = self.ctx.spawn(
            Props(ROLE_ACTORS[role], book, self.wiring, self.snapshots), name
        )
        self.book = None
        self.ctx.become(getattr(self, BEHAVIOUR_OF_ROLE[role]))
