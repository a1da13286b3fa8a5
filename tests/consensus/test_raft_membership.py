"""Membership in the core: configurations (encoding, changes, tracking in the log), who may
campaign, whose messages count, the leader's rules for changes, promotion, self-removal."""

from __future__ import annotations

import pytest
from raft_helpers import (
    LATE,
    VOTERS3,
    commands,
    entries,
    follower_ack,
    make_leader,
    make_node,
    of,
    persist,
)

from consensus.config import RaftConfig
from consensus.configuration import (
    AddLearner,
    ConfigState,
    InvalidChange,
    Membership,
    PromoteLearner,
    RemoveServer,
    apply_change,
)
from consensus.errors import LocalProtocolError
from consensus.log import MemoryLog
from consensus.messages import (
    ERROR_CONFIG_IN_PROGRESS,
    ERROR_INVALID_CHANGE,
    ERROR_LEARNER_BEHIND,
    ERROR_NOT_LEADER,
    ERROR_OUTCOME_UNKNOWN,
    ERROR_TRANSFERRING,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HeartbeatResponse,
    PreVote,
    RequestVote,
    TimeoutNow,
)
from consensus.ready import HardState, Role

CONFIG = int(EntryKind.CONFIGURATION)


def config_entry(index: int, term: int, membership: Membership) -> Entry:
    return Entry(index, term, CONFIG, 0, membership.encode())


# ---------------------------------------------------------------------------- values


def test_a_membership_round_trips_and_rejects_nonsense() -> None:
    m = Membership(("a", "b"), ("c",), (("c", "10.0.0.3:7100"), ("a", "10.0.0.1:7100")))
    assert Membership.decode(m.encode()) == m
    assert m.address_of("c") == "10.0.0.3:7100" and m.address_of("b") is None
    assert m.members == ("a", "b", "c") and m.quorum == 2
    with pytest.raises(ValueError, match="twice"):
        Membership(("a",), ("a",))
    for bad in (b"\xc1", b"\x90", b"\x81\xa1v\x90", b"\x82\xa1v\x91\x01\xa1l\x90"):
        with pytest.raises(ValueError):
            Membership.decode(bad)


def test_changes_move_one_server_at_a_time() -> None:
    m = Membership(("a", "b", "c"))
    added = apply_change(m, AddLearner("d", "host:1"))
    assert added.learners == ("d",) and added.address_of("d") == "host:1"
    promoted = apply_change(added, PromoteLearner("d"))
    assert promoted.voters == ("a", "b", "c", "d") and not promoted.learners
    removed = apply_change(promoted, RemoveServer("a"))
    assert removed.voters == ("b", "c", "d")
    for change, current in (
        (AddLearner("a"), m),
        (PromoteLearner("a"), m),
        (RemoveServer("z"), m),
        (RemoveServer("a"), Membership(("a",))),
    ):
        with pytest.raises(InvalidChange):
            apply_change(current, change)


def test_the_configuration_follows_the_log_including_truncation() -> None:
    base = Membership(("a", "b", "c"))
    state = ConfigState(base, 0)
    four = apply_change(base, AddLearner("d"))
    five = apply_change(four, PromoteLearner("d"))
    assert state.appended([*entries(1, 1), config_entry(3, 1, four)])
    assert state.current == four and state.latest_index == 3 and state.uncommitted(2) == 1
    assert state.appended([config_entry(5, 2, five)])
    assert state.at(4) == four and state.at(2) == base and state.uncommitted(3) == 1
    assert state.appended(entries(2, 2, start=4))  # a conflict cuts 5 away
    assert state.current == four
    state.compact(4)
    assert state.base == four and state.base_index == 4 and not state.indexes


def test_a_node_not_named_in_its_configuration_is_joining() -> None:
    config = RaftConfig("n4", VOTERS3)
    assert not config.is_voter and config.peers == VOTERS3 and config.replicas == VOTERS3
    assert RaftConfig("n1", VOTERS3, learners=("n4",)).replicas == ("n2", "n3", "n4")
    with pytest.raises(ValueError, match="twice"):
        RaftConfig("n1", VOTERS3, learners=("n2",))


# ---------------------------------------------------------------------------- campaigning


def test_a_node_that_is_no_voter_never_campaigns() -> None:
    node = make_node("n4", VOTERS3)
    for at in range(LATE, 20 * LATE, LATE):
        ready = node.tick(at)
        assert not ready.role_changes and not ready.messages
    assert not node.campaign(30 * LATE).role_changes
    follower_of = node.step(TimeoutNow(1, "n1"), 31 * LATE)  # even told to
    assert node.role_kind is Role.FOLLOWER and not of(follower_of, RequestVote)
    with pytest.raises(LocalProtocolError, match="never campaign"):
        node.start_election("test")


def test_a_node_learns_it_became_a_voter_from_the_log() -> None:
    node = make_node("n4", VOTERS3)
    promoted = Membership(("n1", "n2", "n3", "n4"))
    ready = node.step(AppendEntries(1, "n1", 0, 0, [config_entry(1, 1, promoted)], 0, 1), LATE)
    assert ready.membership == promoted and node.config.is_voter
    assert node.config.quorum == 3
    ready = node.tick(3 * LATE)
    assert ready.role_changes  # now it may campaign


def test_votes_from_non_voters_are_ignored_but_a_learner_votes() -> None:
    node = make_node(
        "n4", VOTERS3, log=MemoryLog([config_entry(1, 1, Membership(VOTERS3, ("n4",)))])
    )
    ready = node.step(RequestVote(5, "n1", 1, 1), LATE)
    assert node.term == 5 and ready.messages[0][1].granted  # learners vote when asked
    voter = make_node("n1", VOTERS3)
    ready = voter.step(RequestVote(5, "n4", 10, 5), LATE)
    assert ready.dropped and voter.term == 0


def test_a_configuration_entry_that_does_not_decode_drops_the_message() -> None:
    node = make_node("n2")
    bad = Entry(1, 1, CONFIG, 0, b"\xc1\xc1")
    ready = node.step(AppendEntries(1, "n1", 0, 0, [bad], 0, 1), LATE)
    assert ready.dropped and "configuration entry 1" in ready.dropped[0]
    assert node.log.last_index == 0


def test_a_restarted_node_takes_its_configuration_from_the_log() -> None:
    grown = Membership(("n1", "n2", "n3", "n4"))
    log = MemoryLog([*entries(1), config_entry(2, 1, grown), *entries(1, start=3)])
    node = make_node("n4", VOTERS3, log=log)
    assert node.membership == grown and node.config.voters == grown.voters
    corrupt = MemoryLog([*entries(1), Entry(2, 1, CONFIG, 0, b"nonsense")])
    with pytest.raises(LocalProtocolError, match="configuration entry 2"):
        make_node(log=corrupt)


# ---------------------------------------------------------------------------- the leader


def committed_leader(voters: tuple[str, ...] = VOTERS3, **config: object):
    """A leader whose no-op is committed (acknowledged by every peer)."""
    leader, log, _ = make_leader(voters=voters, **config)
    for peer in leader.config.peers:
        follower_ack(leader, peer, 1, LATE)
    assert leader.role.committed_in_term  # type: ignore[union-attr]
    return leader, log


def test_a_change_waits_for_an_entry_of_the_leaders_term() -> None:
    leader, _, _ = make_leader()
    ready = leader.change_membership("m1", AddLearner("n4"), LATE)
    assert ready.results[0].error == ERROR_CONFIG_IN_PROGRESS
    follower = make_node("n2")
    assert follower.change_membership("m2", AddLearner("n4"), LATE).results[0].error == (
        ERROR_NOT_LEADER
    )


def test_adding_a_learner_replicates_to_it_without_counting_it() -> None:
    leader, log = committed_leader(auto_promote=False)
    ready = leader.change_membership("m1", AddLearner("n4", "h:4"), LATE)
    (entry,) = ready.entries
    assert entry.kind == CONFIG and ready.membership == Membership(
        VOTERS3, ("n4",), (("n4", "h:4"),)
    )
    assert {to for to, m in ready.messages if isinstance(m, AppendEntries)} >= {"n2", "n3"}
    assert "n4" in leader.role.progress  # type: ignore[union-attr]
    # A second change while the first is uncommitted is refused.
    again = leader.change_membership("m2", AddLearner("n5"), LATE)
    assert again.results[0].error == ERROR_CONFIG_IN_PROGRESS
    # The learner's acknowledgement alone does not commit anything.
    follower_ack(leader, "n4", entry.index, LATE)
    assert leader.commit_index < entry.index
    follower_ack(leader, "n2", entry.index, LATE)
    persist(leader, ready, log, LATE)
    assert leader.commit_index == entry.index
    invalid = leader.change_membership("m3", AddLearner("n2"), LATE)
    assert (
        invalid.results[0].error == ERROR_INVALID_CHANGE and "already" in invalid.results[0].result
    )


def test_a_learner_is_promoted_only_once_caught_up() -> None:
    leader, log = committed_leader(auto_promote=False, promote_lag=2)
    ready = leader.change_membership("m1", AddLearner("n4"), LATE)
    index = ready.entries[0].index
    persist(leader, ready, log, LATE)
    follower_ack(leader, "n2", index, LATE)
    leader.propose(commands(*[f"c{i}" for i in range(5)]), LATE)
    behind = leader.change_membership("m2", PromoteLearner("n4"), LATE)
    assert behind.results[0].error == ERROR_LEARNER_BEHIND
    follower_ack(leader, "n4", leader.log.last_index - 2, LATE)
    ready = leader.change_membership("m3", PromoteLearner("n4"), LATE)
    assert ready.membership is not None and "n4" in ready.membership.voters


def test_a_caught_up_learner_is_promoted_automatically() -> None:
    leader, log = committed_leader(promote_lag=0)
    ready = leader.change_membership("m1", AddLearner("n4"), LATE)
    index = ready.entries[0].index
    persist(leader, ready, log, LATE)
    follower_ack(leader, "n2", index, LATE)  # the change commits
    ready = follower_ack(leader, "n4", index, LATE)  # the learner has everything
    assert ready.membership is not None and ready.membership.voters == ("n1", "n2", "n3", "n4")


def test_a_leader_asked_to_remove_itself_hands_over_first() -> None:
    leader, _ = committed_leader()
    follower_ack(leader, "n3", 1, LATE)
    ready = leader.change_membership("m1", RemoveServer("n1"), LATE)
    (answer,) = ready.results
    assert answer.error == ERROR_TRANSFERRING and answer.leader_hint in ("n2", "n3")
    assert of(ready, TimeoutNow, answer.leader_hint)
    assert leader.propose(commands("w"), LATE).results[0].error == ERROR_TRANSFERRING


def test_a_leader_that_removed_itself_steps_down_when_that_commits() -> None:
    leader, log = committed_leader()
    ready = leader.change_membership("m1", RemoveServer("n1", transfer_first=False), LATE)
    (entry,) = ready.entries
    assert leader.is_leader and not leader.config.is_voter
    # It no longer counts itself: its own write does not make a majority of {n2, n3}.
    persist(leader, ready, log, LATE)
    persist(leader, leader.propose(commands("after"), LATE), log, LATE)
    follower_ack(leader, "n2", entry.index, LATE)
    assert leader.commit_index < entry.index and leader.is_leader
    ready = follower_ack(leader, "n3", entry.index, LATE)
    assert leader.commit_index == entry.index
    assert (
        not leader.is_leader and ready.role_changes[-1].reason == "removed from the configuration"
    )
    assert of(ready, TimeoutNow)  # to the most caught-up remaining voter
    assert [r.error for r in ready.results if r.request_id == "after"] == [ERROR_OUTCOME_UNKNOWN]
    assert [r.ok for r in ready.results if r.request_id == "m1"] == []  # answered when applied
    later = leader.tick(100 * LATE)
    assert not later.role_changes  # a removed node never campaigns


def test_a_removed_follower_is_replicated_to_until_its_removal_commits() -> None:
    leader, log = committed_leader()
    ready = leader.change_membership("m1", RemoveServer("n3"), LATE)
    (entry,) = ready.entries
    assert of(ready, AppendEntries, "n3")  # so it can learn of its removal
    # Its answers still reach the leader meanwhile.
    assert not leader.step(HeartbeatResponse(leader.term, "n3", 0), LATE).dropped
    persist(leader, ready, log, LATE)
    follower_ack(leader, "n2", entry.index, LATE)  # {n1, n2} commit it
    assert leader.commit_index == entry.index
    assert "n3" not in leader.role.progress  # type: ignore[union-attr]
    ready = leader.step(AppendEntriesResponse(leader.term + 5, "n3", False, 0, 0, 0, 0, 0, 0), LATE)
    assert ready.dropped and leader.is_leader


def test_leadership_goes_only_to_a_voter() -> None:
    leader, _ = committed_leader()
    leader.change_membership("m1", AddLearner("n4"), LATE)
    with pytest.raises(LocalProtocolError, match="voting peer"):
        leader.transfer_leadership("n4", LATE)


def test_pre_votes_from_a_removed_server_do_not_change_terms() -> None:
    node = make_node(
        "n2", log=MemoryLog([config_entry(1, 1, Membership(("n1", "n2")))]), hard=HardState(1)
    )
    ready = node.step(PreVote(9, "n3", 50, 8), LATE)
    assert ready.dropped and node.term == 1 and not ready.messages
