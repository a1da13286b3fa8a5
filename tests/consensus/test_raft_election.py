"""Elections: randomized timeouts, pre-vote, vote rules, leader stickiness, the restart vote
hold, check-quorum, role transitions."""

from __future__ import annotations

import pytest
from raft_helpers import LATE, VOTERS5, entries, make_leader, make_node, of

from consensus.errors import IllegalTransition
from consensus.log import MemoryLog
from consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
)
from consensus.ready import HardState, Role


def heard_from_leader(node_id: str = "n2", at: int = LATE, term: int = 1):
    node = make_node(node_id)
    node.step(AppendEntries(term, "n1", 0, 0, [], 0, 1), at)
    assert node.leader_id == "n1"
    return node


# ---------------------------------------------------------------------------- timeouts


def test_election_timeout_is_randomized_from_the_injected_rng() -> None:
    deadlines = [make_node(seed=seed).tick(0).deadline for seed in range(30)]
    assert all(150 <= d < 300 for d in deadlines)
    assert len(set(deadlines)) > 10
    assert [make_node(seed=7).tick(0).deadline for _ in range(3)] == [deadlines[7]] * 3


def test_follower_times_out_into_pre_vote_without_touching_its_term() -> None:
    node = make_node()
    deadline = node.tick(0).deadline
    assert not node.tick(deadline - 1).role_changes
    ready = node.tick(deadline)
    assert [str(c) for c in ready.role_changes] == [
        "n1 became pre-candidate at term 0 (election timeout)"
    ]
    assert {m.term for m in of(ready, PreVote)} == {1}
    assert len(of(ready, PreVote)) == 2
    assert node.term == 0 and ready.hard_state is None


def test_pre_vote_majority_starts_the_real_election_with_the_vote_in_the_same_ready() -> None:
    node = make_node()
    node.tick(LATE)
    ready = node.step(PreVoteResponse(1, "n2", True), LATE)
    assert node.role_kind is Role.CANDIDATE and node.term == 1
    # The self-vote is in this Ready's hard state, which the caller makes durable before it
    # sends the RequestVotes of the same Ready.
    assert ready.hard_state == HardState(1, "n1")
    assert len(of(ready, RequestVote)) == 2


def test_a_pre_vote_changes_nothing_at_the_voter() -> None:
    voter = make_node("n2")
    ready = voter.step(PreVote(1, "n1", 0, 0), LATE)
    assert of(ready, PreVoteResponse) == [PreVoteResponse(1, "n2", True)]
    assert voter.term == 0 and voter.voted_for is None and ready.hard_state is None


def test_pre_vote_refused_for_a_less_up_to_date_log() -> None:
    voter = make_node("n2", log=MemoryLog(entries(1, 2)), hard=HardState(2))
    ready = voter.step(PreVote(3, "n1", 5, 1), LATE)
    assert of(ready, PreVoteResponse) == [PreVoteResponse(2, "n2", False)]


def test_a_refused_pre_candidate_learns_the_higher_term_and_follows() -> None:
    node = make_node()
    node.tick(LATE)
    node.step(PreVoteResponse(4, "n2", False), LATE)
    assert node.role_kind is Role.FOLLOWER and node.term == 4


def test_single_node_cluster_elects_itself_at_once() -> None:
    node = make_node("n1", ("n1",))
    ready = node.tick(LATE)
    assert node.is_leader and node.term == 1
    assert [c.new for c in ready.role_changes] == [Role.CANDIDATE, Role.CANDIDATE, Role.LEADER]
    assert ready.hard_state == HardState(1, "n1")
    assert ready.entries[0].index == 1


# ---------------------------------------------------------------------------- votes


def test_one_vote_per_term_and_it_is_durable_with_the_reply() -> None:
    voter = make_node("n2")
    ready = voter.step(RequestVote(1, "n1", 0, 0), LATE)
    assert of(ready, RequestVoteResponse) == [RequestVoteResponse(1, "n2", True)]
    assert ready.hard_state == HardState(1, "n1")
    ready = voter.step(RequestVote(1, "n3", 0, 0), LATE)
    assert of(ready, RequestVoteResponse) == [RequestVoteResponse(1, "n2", False)]
    # The same candidate asking again (its first answer was lost) is granted again.
    ready = voter.step(RequestVote(1, "n1", 0, 0), LATE)
    assert of(ready, RequestVoteResponse) == [RequestVoteResponse(1, "n2", True)]
    assert ready.hard_state is None  # nothing new to persist


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [(2, 2, True), (5, 2, True), (1, 2, False), (9, 1, False), (1, 3, True)],
)
def test_vote_only_for_a_log_at_least_as_up_to_date(
    last_index: int, last_term: int, granted: bool
) -> None:
    voter = make_node("n2", log=MemoryLog(entries(1, 2)), hard=HardState(2))
    ready = voter.step(RequestVote(3, "n1", last_index, last_term), LATE)
    assert of(ready, RequestVoteResponse)[0].granted is granted


def test_a_follower_that_knows_the_leader_of_the_term_votes_for_no_one_else() -> None:
    node = heard_from_leader(term=1)
    ready = node.step(RequestVote(1, "n3", 9, 1), LATE + 500)
    assert of(ready, RequestVoteResponse) == [RequestVoteResponse(1, "n2", False)]


def test_a_stale_candidate_learns_the_newer_term() -> None:
    voter = make_node("n2", hard=HardState(5))
    ready = voter.step(RequestVote(3, "n1", 0, 0), LATE)
    assert of(ready, RequestVoteResponse) == [RequestVoteResponse(5, "n2", False)]


def test_candidate_refused_by_a_majority_returns_to_follower() -> None:
    node = make_node(pre_vote=False)
    node.tick(LATE)
    assert node.term == 1
    node.step(RequestVoteResponse(1, "n2", False), LATE)
    ready = node.step(RequestVoteResponse(1, "n3", False), LATE)
    assert node.role_kind is Role.FOLLOWER and node.term == 1
    assert "refused" in ready.role_changes[0].reason


def test_candidate_that_hears_the_leader_of_its_term_follows_it() -> None:
    node = make_node(pre_vote=False)
    node.tick(LATE)
    node.step(AppendEntries(1, "n3", 0, 0, [], 0, 1), LATE)
    assert node.role_kind is Role.FOLLOWER and node.leader_id == "n3"


# ---------------------------------------------------------------------------- stickiness


def test_leader_stickiness_ignores_vote_requests_while_the_leader_is_heard() -> None:
    node = heard_from_leader(at=LATE)
    for message in (PreVote(2, "n3", 9, 1), RequestVote(2, "n3", 9, 1)):
        ready = node.step(message, LATE + 149)
        assert ready.messages == [] and node.term == 1 and node.voted_for is None
    ready = node.step(PreVote(2, "n3", 9, 1), LATE + 150)
    assert of(ready, PreVoteResponse) == [PreVoteResponse(2, "n2", True)]


def test_a_transfer_vote_request_passes_stickiness() -> None:
    node = heard_from_leader(at=LATE)
    ready = node.step(RequestVote(2, "n3", 9, 1, transfer=True), LATE + 10)
    assert of(ready, RequestVoteResponse) == [RequestVoteResponse(2, "n2", True)]


def test_a_restarted_node_holds_its_vote_for_one_minimum_election_timeout() -> None:
    node = make_node("n2", hard=HardState(3, "n1"), now=5000)
    ready = node.step(RequestVote(4, "n3", 0, 0), 5149)
    assert ready.messages == [] and node.term == 3
    ready = node.step(RequestVote(4, "n3", 0, 0), 5150)
    assert of(ready, RequestVoteResponse) == [RequestVoteResponse(4, "n2", True)]


def test_campaign_is_refused_while_a_leader_is_heard() -> None:
    node = heard_from_leader(at=LATE)
    assert not node.campaign(LATE + 100).role_changes
    ready = node.campaign(LATE + 150)
    assert ready.role_changes and ready.role_changes[0].reason == "campaign requested"


def test_a_leader_ignores_disruptive_vote_requests() -> None:
    leader, _, _ = make_leader()
    ready = leader.step(RequestVote(leader.term + 1, "n2", 99, 99), LATE + 1)
    assert leader.is_leader and ready.messages == []


def test_without_check_quorum_there_is_no_stickiness() -> None:
    node = make_node("n2", check_quorum=False)
    node.step(AppendEntries(1, "n1", 0, 0, [], 0, 1), LATE)
    ready = node.step(RequestVote(2, "n3", 0, 0), LATE + 1)
    assert of(ready, RequestVoteResponse) == [RequestVoteResponse(2, "n2", True)]


# ---------------------------------------------------------------------------- terms


def test_a_higher_term_deposes_the_leader_with_a_logged_reason() -> None:
    leader, _, _ = make_leader()
    term = leader.term
    ready = leader.step(AppendEntriesResponse(term + 1, "n2", False, 0, 0, 0, 0, 0, 0), LATE)
    assert leader.role_kind is Role.FOLLOWER and leader.term == term + 1
    change = ready.role_changes[0]
    assert (change.old, change.new, change.term) == (Role.LEADER, Role.FOLLOWER, term + 1)
    assert "AppendEntriesResponse from n2" in change.reason
    assert ready.hard_state == HardState(term + 1, None)


def test_a_stale_leader_is_told_the_newer_term() -> None:
    node = make_node("n2", hard=HardState(3))
    ready = node.step(AppendEntries(2, "n1", 0, 0, [], 0, 1), LATE)
    (answer,) = of(ready, AppendEntriesResponse)
    assert answer.term == 3 and not answer.success
    ready = node.step(Heartbeat(2, "n1", 0, 1), LATE)
    assert of(ready, HeartbeatResponse)[0].term == 3


def test_illegal_transitions_raise() -> None:
    node = make_node()
    with pytest.raises(IllegalTransition, match="follower -> leader"):
        node.become_leader("skipping the election")
    leader, _, _ = make_leader()
    with pytest.raises(IllegalTransition, match="leader -> candidate"):
        leader.become_candidate("no", pre_vote=False)


# ---------------------------------------------------------------------------- check-quorum


def test_check_quorum_counts_from_the_start_of_the_term() -> None:
    """A fresh leader gets a full window (Copycat measured from the last commit and stepped
    fresh leaders down at once); silence for that window then deposes it."""
    leader, _, _ = make_leader(voters=VOTERS5, now=LATE)
    leader.tick(LATE + 1)
    assert leader.is_leader  # nothing heard yet, but the term just began
    leader.tick(LATE + 299)
    assert leader.is_leader
    ready = leader.tick(LATE + 300)
    assert not leader.is_leader
    assert "check-quorum" in ready.role_changes[0].reason


def test_check_quorum_counts_answering_followers() -> None:
    leader, _, _ = make_leader(voters=VOTERS5, now=LATE)
    for peer in ("n2", "n3"):
        leader.step(HeartbeatResponse(leader.term, peer, 0), LATE + 250)
    leader.tick(LATE + 400)
    assert leader.is_leader  # n1, n2, n3 heard within the window
    leader.tick(LATE + 550)
    assert not leader.is_leader
