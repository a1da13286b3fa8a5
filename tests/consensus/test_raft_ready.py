"""The Ready contract: hard state travels with (never after) the messages that depend on it,
acknowledgements wait for persisted(), late persistence reports are recognised, committed
entries are handed out in order and bounded, deadlines."""

from __future__ import annotations

import random

import pytest
from raft_helpers import (
    LATE,
    append_from,
    commands,
    entries,
    follower_ack,
    make_leader,
    make_node,
    of,
    persist,
)

from consensus.config import RaftConfig
from consensus.errors import LocalProtocolError
from consensus.log import MemoryLog
from consensus.messages import (
    AppendEntriesResponse,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
)
from consensus.node import RaftNode
from consensus.ready import HardState, Ready


def test_every_message_leaves_after_the_hard_state_it_depends_on() -> None:
    """Drive three cores through elections and replication by hand, checking each Ready: any
    message speaking for a term, and any granted vote, comes in a Ready whose hard state (or
    an earlier one) already holds that term and vote."""
    ids = ("n1", "n2", "n3")
    logs = {i: MemoryLog() for i in ids}
    nodes = {
        i: RaftNode(RaftConfig(i, ids), logs[i], HardState(), random.Random(n), 0)
        for n, i in enumerate(ids)
    }
    durable = {i: HardState() for i in ids}
    queue: list[tuple[str, str, object]] = []
    checked = 0

    def carry_out(name: str, ready: Ready, now: int) -> None:
        nonlocal checked
        if ready.hard_state is not None:
            durable[name] = ready.hard_state  # step 1 of the contract
        for dest, message in ready.messages:
            term = message.term  # type: ignore[attr-defined]
            if not isinstance(message, PreVote | PreVoteResponse):
                assert term <= durable[name].term, (name, message, durable[name])
            if isinstance(message, RequestVoteResponse) and message.granted:
                assert durable[name] == HardState(term, dest), (name, message)
            if isinstance(message, RequestVote):
                assert durable[name] == HardState(term, name)
            checked += 1
            queue.append((name, dest, message))
        if ready.entries:
            follow = persist(nodes[name], ready, logs[name], now)
            carry_out(name, follow, now)
        if ready.committed:
            carry_out(name, nodes[name].applied(ready.committed[-1].index, {}, now), now)

    now = 0
    for name in ids:
        carry_out(name, nodes[name].tick(now), now)
    for now in range(0, 6000, 5):
        leader = next((n for n in ids if nodes[n].is_leader), None)
        for name in ids:
            carry_out(name, nodes[name].tick(now), now)
        if leader is not None and now % 100 == 0:
            carry_out(leader, nodes[leader].propose(commands(f"c{now}"), now), now)
        delivered, queue[:] = list(queue), []
        for source, dest, message in delivered:
            if source == leader and now % 1500 > 1000:
                continue  # the leader goes silent for a while: elections follow
            carry_out(dest, nodes[dest].step(message, now), now)
    assert checked > 100
    assert max(h.term for h in durable.values()) >= 2


def test_a_follower_acknowledges_only_what_is_persisted() -> None:
    storage = MemoryLog()
    follower = make_node("n2", log=storage)
    ready = follower.step(append_from("n1", 1, 0, 0, entries(1, 1, 1)), LATE)
    assert len(ready.entries) == 3
    assert of(ready, AppendEntriesResponse) == []  # owed until durable
    ready = persist(follower, ready, storage, LATE)
    (ack,) = of(ready, AppendEntriesResponse)
    assert (ack.success, ack.match_index) == (True, 3)


def test_one_persisted_report_covers_several_readys() -> None:
    storage = MemoryLog()
    follower = make_node("n2", log=storage)
    first = follower.step(append_from("n1", 1, 0, 0, entries(1, 1)), LATE)
    second = follower.step(append_from("n1", 1, 2, 1, entries(1, 1, start=3)), LATE)
    storage.append(first.entries)
    storage.append(second.entries)
    ready = follower.persisted(4, 1, LATE)
    assert [a.match_index for a in of(ready, AppendEntriesResponse)] == [4]


def test_a_late_report_for_replaced_entries_is_ignored() -> None:
    storage = MemoryLog()
    follower = make_node("n2", log=storage)
    first = follower.step(append_from("n1", 1, 0, 0, entries(1, 1, 1)), LATE)
    # A new leader replaces entries 2..3 before the first write is reported.
    second = follower.step(append_from("n3", 2, 1, 1, entries(2, start=2)), LATE)
    assert second.truncate_after == 1
    storage.append(first.entries)
    ready = follower.persisted(3, 1, LATE)  # (3, term 1) no longer exists
    assert ready.messages == [] and follower.log.durable_index == 0
    storage.truncate_after(1)
    storage.append(second.entries)
    ready = follower.persisted(2, 2, LATE)
    assert follower.log.durable_index == 2
    assert [a.match_index for a in of(ready, AppendEntriesResponse)] == [2]


def test_committed_entries_come_in_order_bounded_by_max_apply_entries() -> None:
    leader, storage, _ = make_leader(max_apply_entries=10)
    for peer in ("n2", "n3"):
        ready = follower_ack(leader, peer, 1, LATE)
        if peer == "n2":
            assert [e.index for e in ready.committed] == [1]  # the no-op
    ready = leader.propose(commands(*[f"c{i}" for i in range(30)]), LATE)
    persist(leader, ready, storage, LATE)
    ready = follower_ack(leader, "n2", 31, LATE)
    # Nothing reported applied yet: at most max_apply_entries beyond applied index 0.
    assert [e.index for e in ready.committed] == list(range(2, 11))
    assert ready.commit_index == 31
    ready = leader.applied(10, {i: i for i in range(2, 11)}, LATE)
    assert [e.index for e in ready.committed] == list(range(11, 21))
    assert [r.request_id for r in ready.results] == [f"c{i}" for i in range(9)]
    assert all(r.ok and r.result == r.index for r in ready.results)
    with pytest.raises(LocalProtocolError):
        leader.applied(25, {}, LATE)


def test_deadline_tells_the_caller_when_to_tick() -> None:
    leader, _, election = make_leader(now=LATE)
    assert election.deadline == LATE + leader.config.heartbeat_interval
    follower = make_node("n2")
    ready = follower.step(append_from("n1", 1, 0, 0, []), LATE)
    assert LATE + 150 <= ready.deadline < LATE + 300
