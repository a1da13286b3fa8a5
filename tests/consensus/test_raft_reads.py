"""Reads: read index confirmed by a heartbeat round and released once applied, rounds shared
by concurrent reads, no reads before the leader's first commit, leases (and none after a
TimeoutNow), followers' stale reads, reads refused when leadership is lost."""

from __future__ import annotations

from raft_helpers import LATE, follower_ack, make_leader, make_node, of

from consensus.config import ReadMode
from consensus.messages import AppendEntries, Heartbeat, HeartbeatResponse, TimeoutNow
from consensus.node import RaftNode
from consensus.ready import ReadState


def settled_leader(**config: object) -> RaftNode:
    """A 3-node leader whose no-op is committed and applied."""
    leader, _, _ = make_leader(**config)
    ready = follower_ack(leader, "n2", 1, LATE, round_=1)
    assert leader.commit_index == 1
    leader.applied(1, {}, LATE)
    assert ready.committed
    return leader


def answer_round(leader: RaftNode, peer: str, now: int) -> list[ReadState]:
    return leader.step(HeartbeatResponse(leader.term, peer, leader.role.reads.round), now).reads


def test_read_index_waits_for_a_majority_to_confirm_a_round() -> None:
    leader = settled_leader()
    ready = leader.read("r1", LATE + 1)
    assert ready.reads == []
    heartbeats = of(ready, Heartbeat)
    assert len(heartbeats) == 2  # the round starts at once, not at the next heartbeat
    reads = answer_round(leader, "n3", LATE + 2)
    assert reads == [ReadState("r1", True, 1)]


def test_an_answer_to_an_older_round_does_not_confirm_a_read() -> None:
    leader = settled_leader()
    old_round = leader.role.reads.round
    leader.read("r1", LATE + 1)
    ready = leader.step(HeartbeatResponse(leader.term, "n3", old_round), LATE + 2)
    assert ready.reads == []


def test_a_batch_of_reads_shares_one_round() -> None:
    leader = settled_leader()
    ready = leader.read_batch([f"r{i}" for i in range(20)], LATE + 1)
    assert len(of(ready, Heartbeat)) == 2  # one round: one heartbeat per follower
    reads = answer_round(leader, "n2", LATE + 2)
    assert [r.request_id for r in reads] == [f"r{i}" for i in range(20)]
    assert all(r.ok for r in reads)


def test_reads_one_call_at_a_time_share_the_next_round() -> None:
    leader = settled_leader()
    heartbeats = sum(len(of(leader.read(f"r{i}", LATE + 1), Heartbeat)) for i in range(20))
    assert heartbeats == 2  # r0's round; the others wait, since it began before they came
    assert [r.request_id for r in answer_round(leader, "n2", LATE + 2)] == ["r0"]
    # Their shared round starts as soon as r0's is confirmed.
    assert len(leader.role.reads.pending) == 1
    reads = answer_round(leader, "n2", LATE + 3)
    assert [r.request_id for r in reads] == [f"r{i}" for i in range(1, 20)]


def test_reads_arriving_during_a_round_wait_for_the_next_one() -> None:
    leader = settled_leader()
    leader.read("early", LATE + 1)
    first_round = leader.role.reads.round
    leader.read("late", LATE + 2)  # the round under way began before this read arrived
    reads = leader.step(HeartbeatResponse(leader.term, "n2", first_round), LATE + 3).reads
    assert [r.request_id for r in reads] == ["early"]
    reads = answer_round(leader, "n2", LATE + 4)  # the next round started at once
    assert [r.request_id for r in reads] == ["late"]


def test_a_read_is_released_only_once_applied_reaches_its_index() -> None:
    leader = settled_leader()
    leader.propose([], LATE)
    from raft_helpers import commands, persist

    ready = leader.propose(commands("w"), LATE + 1)
    persist(leader, ready, leader.log.storage, LATE + 1)  # type: ignore[arg-type]
    follower_ack(leader, "n2", 2, LATE + 1)
    assert leader.commit_index == 2 and leader.applied_index == 1
    leader.read("r", LATE + 2)
    assert answer_round(leader, "n2", LATE + 3) == []  # confirmed, but index 2 not applied
    ready = leader.applied(2, {2: "ok"}, LATE + 4)
    assert ready.reads == [ReadState("r", True, 2)]


def test_no_reads_before_the_new_leader_commits_in_its_term() -> None:
    leader, _, _ = make_leader()
    ready = leader.read("r", LATE)
    assert ready.reads == [] and of(ready, Heartbeat) == []
    # The no-op commits: the waiting read gets its round at once.
    ready = follower_ack(leader, "n2", 1, LATE + 1, round_=1)
    assert len(of(ready, Heartbeat)) == 2
    leader.applied(1, {}, LATE + 1)
    assert answer_round(leader, "n2", LATE + 2) == [ReadState("r", True, 1)]


def test_lease_reads_skip_the_round_while_the_lease_lasts() -> None:
    leader = settled_leader(read_mode=ReadMode.LEASE)
    lease = leader.config.lease_duration  # 150 * (1 - 0.1)
    # The election's first round (started at LATE, now confirmed) earned a lease.
    ready = leader.read("r1", LATE + lease - 1)
    assert ready.reads == [ReadState("r1", True, 1)] and of(ready, Heartbeat) == []
    ready = leader.read("r2", LATE + lease)
    assert ready.reads == [] and len(of(ready, Heartbeat)) == 2
    assert answer_round(leader, "n2", LATE + lease + 1) == [ReadState("r2", True, 1)]
    ready = leader.read("r3", LATE + 2 * lease - 1)  # the lease renewed from that round
    assert ready.reads == [ReadState("r3", True, 1)]


def test_no_lease_reads_after_a_timeout_now_left() -> None:
    leader = settled_leader(read_mode=ReadMode.LEASE)
    leader.read("r0", LATE + 1)
    answer_round(leader, "n2", LATE + 2)
    follower_ack(leader, "n3", 1, LATE + 2)
    ready = leader.transfer_leadership("n3", LATE + 3)
    assert of(ready, TimeoutNow)
    leader.role.transfer_target = None  # say the transfer is abandoned...
    ready = leader.read("r1", LATE + 4)
    assert ready.reads == []  # ...the lease stays off for the term: a round is needed


def test_followers_refuse_linearizable_reads_and_serve_stale_ones() -> None:
    follower = make_node("n2")
    follower.step(AppendEntries(1, "n1", 0, 0, [], 0, 1), LATE)
    ready = follower.read("r", LATE)
    assert ready.reads == [ReadState("r", False, 0, "not_leader", "n1")]
    ready = follower.read("s", LATE, stale=True)
    assert ready.reads == [ReadState("s", True, 0)]


def test_reads_are_refused_when_leadership_is_lost() -> None:
    leader = settled_leader()
    leader.read("r", LATE + 1)
    ready = leader.step(HeartbeatResponse(leader.term + 1, "n2", 0), LATE + 2)
    assert ready.reads == [ReadState("r", False, 0, "not_leader", None)]
