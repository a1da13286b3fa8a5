"""Membership changes and leadership transfer in the simulator: add a learner, promote it,
remove a voter, remove the leader (with a transfer first, or stepping down after the change
commits); never two changes in flight; a learner behind is not promoted; a removed server
cannot disrupt the cluster; a node that is not named never starts a cluster of its own; the
leader refuses writes while it hands leadership over."""

from __future__ import annotations

from consensus.configuration import AddLearner, PromoteLearner, RemoveServer
from consensus.messages import (
    ERROR_CONFIG_IN_PROGRESS,
    ERROR_LEARNER_BEHIND,
    ERROR_NOT_LEADER,
    ERROR_TRANSFERRING,
    ClientResponse,
)
from consensus.ready import Role

from .cluster import SimCluster
from .test_sim_scenarios import ELECTION_MAX, converge, core, elect, write

RETRY = (ERROR_CONFIG_IN_PROGRESS, ERROR_LEARNER_BEHIND, ERROR_NOT_LEADER)


def change(
    cluster: SimCluster, what: object, node_id: str | None = None, *, retry: bool = True
) -> ClientResponse:
    """Ask for a membership change and wait for the answer; with ``retry``, a change refused
    for a passing reason (a new leader has not committed yet, another change is being
    committed, the learner's acknowledgement is on its way) is asked again, at the leader."""
    for _ in range(20):
        request = cluster.change(what, node_id)  # type: ignore[arg-type]
        assert request is not None
        assert cluster.run_until(lambda r=request: r in cluster.change_results, 3000), what
        response = cluster.change_results[request]
        if response.ok or not retry or response.error not in RETRY:
            return response
        cluster.run_for(50)
        node_id = None
    return response


def test_add_a_learner_promote_it_remove_a_voter_then_the_leader() -> None:
    cluster = SimCluster(3, spares=2, seed=51, auto_promote=False)
    leader = elect(cluster)
    write(cluster, 10)
    assert change(cluster, AddLearner("n4", "127.0.0.1:7104")).ok
    membership = core(leader).membership
    assert membership.learners == ("n4",) and membership.address_of("n4") == "127.0.0.1:7104"
    converge(cluster)  # the learner holds and applies the whole log
    assert core(cluster.nodes["n4"]).membership.learners == ("n4",)
    assert not core(cluster.nodes["n4"]).config.is_voter
    assert change(cluster, PromoteLearner("n4")).ok
    assert core(leader).membership.voters == ("n1", "n2", "n3", "n4")
    write(cluster, 10)
    follower = next(n for n in ("n1", "n2", "n3") if n != leader.id)
    assert change(cluster, RemoveServer(follower)).ok
    assert follower not in core(leader).membership.members
    write(cluster, 10)
    # Removing the leader: it hands leadership over first and says where to retry.
    refused = change(cluster, RemoveServer(leader.id), retry=False)
    assert not refused.ok and refused.error == ERROR_TRANSFERRING
    successor = refused.leader_hint
    began = cluster.now
    assert cluster.run_until(lambda: core(cluster.nodes[successor]).is_leader, 1000)
    assert cluster.now - began < ELECTION_MAX  # a transfer, not an election timeout
    assert change(cluster, RemoveServer(leader.id), successor).ok
    voters = core(cluster.nodes[successor]).membership.voters
    assert leader.id not in voters and len(voters) == 2
    write(cluster, 10)
    converge(cluster)
    assert not core(leader).is_leader


def test_a_leader_removing_itself_steps_down_once_the_change_commits() -> None:
    cluster = SimCluster(5, seed=52)
    leader = elect(cluster)
    write(cluster, 5)
    request = cluster.change(RemoveServer(leader.id, transfer_first=False))
    # It appended the change and still leads until the change commits.
    assert core(leader).is_leader and leader.id not in core(leader).membership.voters
    assert cluster.run_until(lambda: request in cluster.change_results, 1000)
    assert cluster.change_results[request].ok
    assert cluster.run_until(lambda: not core(leader).is_leader, 100)
    began = cluster.now
    assert cluster.run_until(lambda: cluster.leader() not in (None, leader), 1000)
    assert cluster.now - began < ELECTION_MAX  # handed over with TimeoutNow
    write(cluster, 10)
    converge(cluster)
    assert leader.id not in cluster.members()
    cluster.run_for(3 * ELECTION_MAX)  # the removed node never campaigns
    assert core(leader).role_kind is Role.FOLLOWER


def test_never_two_changes_in_flight_and_no_promotion_while_behind() -> None:
    cluster = SimCluster(3, spares=2, seed=53, auto_promote=False)
    leader = elect(cluster)
    cluster.isolate("n4")  # the learner-to-be cannot catch up
    first = cluster.change(AddLearner("n4"))
    second = change(cluster, AddLearner("n5"), retry=False)
    assert not second.ok and second.error == ERROR_CONFIG_IN_PROGRESS
    assert cluster.run_until(lambda: first in cluster.change_results, 1000)
    assert cluster.change_results[first].ok
    write(cluster, 30)
    behind = change(cluster, PromoteLearner("n4"), retry=False)
    assert not behind.ok and behind.error == ERROR_LEARNER_BEHIND
    cluster.heal()
    assert cluster.run_until(lambda: cluster.nodes["n4"].applied == core(leader).commit_index, 2000)
    assert change(cluster, PromoteLearner("n4")).ok
    assert change(cluster, AddLearner("n5")).ok
    converge(cluster)


def test_a_removed_server_cannot_disrupt_the_cluster() -> None:
    """Removed while cut off, it never learns of it and campaigns with ever higher terms
    (pre-vote off); the members ignore it."""
    cluster = SimCluster(3, seed=54, pre_vote=False)
    leader = elect(cluster)
    victim = next(n for n in cluster.ids if n != leader.id)
    cluster.isolate(victim)
    assert change(cluster, RemoveServer(victim)).ok
    write(cluster, 5)
    term = core(leader).term
    cluster.run_for(2 * ELECTION_MAX)
    cluster.heal()
    cluster.run_for(10 * ELECTION_MAX)
    assert core(cluster.nodes[victim]).term > term + 3  # it campaigned again and again
    assert cluster.leader() is leader and core(leader).term == term
    write(cluster, 5)
    converge(cluster)


def test_a_node_not_in_the_configuration_never_starts_a_cluster() -> None:
    """Copycat's split brain at start-up: two new nodes that cannot reach the cluster must
    not elect each other; they wait to be added."""
    cluster = SimCluster(3, spares=2, seed=55)
    elect(cluster)
    cluster.partition(["n1", "n2", "n3"], ["n4", "n5"])
    cluster.run_for(20 * ELECTION_MAX)
    for spare in ("n4", "n5"):
        assert core(cluster.nodes[spare]).role_kind is Role.FOLLOWER
        assert core(cluster.nodes[spare]).term == 0
    cluster.heal()
    assert change(cluster, AddLearner("n4")).ok
    assert cluster.run_until(lambda: "n4" in cluster.members() and cluster.converged(), 3000)


def test_the_leader_refuses_writes_while_it_hands_leadership_over() -> None:
    cluster = SimCluster(3, seed=56)
    leader = elect(cluster)
    target = next(n for n in cluster.ids if n != leader.id)
    cluster.isolate(target)  # the transfer cannot complete: writes stay refused meanwhile
    write(cluster, 5)
    cluster._carry_out(leader, core(leader).transfer_leadership(target, cluster.now))
    refused = cluster.propose(leader.id, 3)
    assert all(r not in cluster.acked for r in refused)
    assert cluster.refused[ERROR_TRANSFERRING] == 3
    membership = change(cluster, AddLearner("n9"), leader.id, retry=False)
    assert membership.error == ERROR_TRANSFERRING
    # The attempt is abandoned after an election timeout; writes are taken again.
    cluster.run_for(ELECTION_MAX + 10)
    write(cluster, 3, leader.id)
    cluster.heal()
    # A transfer that completes: refused during, accepted by the new leader after.
    cluster._carry_out(leader, core(leader).transfer_leadership(target, cluster.now))
    cluster.propose(leader.id, 1)
    assert cluster.refused[ERROR_TRANSFERRING] == 4
    assert cluster.run_until(lambda: core(cluster.nodes[target]).is_leader, 1000)
    write(cluster, 5, target)
    converge(cluster)
