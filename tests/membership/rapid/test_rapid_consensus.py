"""Agreement: the fast round with aggregated votes, and the classic Paxos fallback."""

from __future__ import annotations

import random

import pytest

from membership.errors import ProtocolViolation
from membership.rapid.config import RapidConfig
from membership.rapid.consensus import (
    FAST_RANK,
    Consensus,
    fast_quorum,
    majority,
    make_proposal,
)
from membership.rapid.messages import Decided, Phase1a, Phase1b, Phase2a, Phase2b, Proposal
from membership.rapid.topology import Configuration

CFG = RapidConfig()


def node(i: int) -> str:
    return f"coterie://n{i}@10.0.0.{i}:7100/user/node"


def instances(n: int) -> tuple[Configuration, list[Consensus]]:
    config = Configuration(0, [(node(i), 1) for i in range(n)], 10)
    return config, [Consensus(config, node(i), CFG, random.Random(i)) for i in range(n)]


CUT_A = make_proposal(((node(90), 1),))
CUT_B = make_proposal(((node(90), 1), (node(91), 1)))


def deliver(nodes: list[Consensus], out: list, now: float = 0.0) -> None:
    """Deliver messages until none are left (a lossless, instant network)."""
    by_name = {c.me: c for c in nodes}
    queue = list(out)
    while queue:
        to, message = queue.pop(0)
        c = by_name[to]
        match message:
            case Phase1a():
                queue += c.on_phase1a(message, now)
            case Phase1b():
                queue += c.on_phase1b(message, now)
            case Phase2a():
                queue += c.on_phase2a(message, now)
            case Phase2b():
                queue += c.on_phase2b(message, now)
            case Decided():
                c.on_decided(message)


def test_quorum_sizes() -> None:
    assert [fast_quorum(n) for n in (1, 2, 4, 5, 100, 10_000)] == [1, 2, 4, 4, 76, 7501]
    assert [majority(n) for n in (1, 2, 5, 100)] == [1, 2, 3, 51]


def test_a_fast_quorum_of_identical_votes_decides_in_one_step() -> None:
    _, nodes = instances(8)
    for c in nodes:
        assert c.vote(CUT_A, 0.0)
    # Votes travel aggregated: one bitset per proposal. Merge everyone's into node 0.
    bits = 0
    for i in range(fast_quorum(8) - 1):
        bits |= 1 << (i + 1)
    assert nodes[0].decision is None
    nodes[0].merge(nodes[0].learn(CUT_A), bits, 0.0)
    assert nodes[0].decision == CUT_A and nodes[0].decided_via == "fast"


def test_split_votes_skip_the_timeout_and_the_classic_round_decides() -> None:
    _, nodes = instances(8)
    for i, c in enumerate(nodes):
        c.vote(CUT_A if i < 4 else CUT_B, 0.0)
    a_bits = sum(1 << i for i in range(4))
    b_bits = sum(1 << i for i in range(4, 8))
    for c in nodes:
        c.merge(c.learn(CUT_A), a_bits, 0.0)
        c.merge(c.learn(CUT_B), b_bits, 0.0)
        assert c.decision is None
        # Hopeless: no fixed timeout, only the random delay (mean 0.5 s * 8).
        assert c.classic_at is not None and c.classic_at < CFG.fast_round_timeout + 60
    coordinator = min(nodes, key=lambda c: c.classic_at)  # type: ignore[arg-type, return-value]
    deliver(nodes, coordinator.start_classic(1.0, None), 1.0)
    decisions = {c.decision.pid for c in nodes if c.decision is not None}
    assert len(decisions) == 1 and all(c.decision is not None for c in nodes)
    assert coordinator.decided_via == "classic"
    assert {c.decided_via for c in nodes if c is not coordinator} == {"decided"}


def test_the_coordinator_keeps_a_value_that_may_have_won_the_fast_round() -> None:
    n = 12  # fast quorum 10, so a chosen value shows in at least |Q| - 2 promises
    _, nodes = instances(n)
    for i, c in enumerate(nodes):
        if i < 10:
            c.vote(CUT_B, 0.0)  # B may have been chosen: 10 votes is a fast quorum
    coordinator = nodes[11]
    # Only a majority answers (7 of them), 5 of which voted B: 5 >= 7 - 2.
    out = coordinator.start_classic(1.0, fallback=CUT_A)
    answering = {node(i) for i in (0, 1, 2, 3, 4, 10, 11)}
    deliver(nodes, [(to, m) for to, m in out if to in answering], 1.0)
    assert coordinator.cval == CUT_B


def test_without_any_accepted_value_the_coordinator_proposes_its_own() -> None:
    _, nodes = instances(5)
    deliver(nodes, nodes[2].start_classic(1.0, fallback=CUT_A), 1.0)
    assert all(c.decision == CUT_A for c in nodes)


def test_a_promise_to_a_classic_round_ends_the_fast_round_for_that_acceptor() -> None:
    config, nodes = instances(5)
    nodes[0].on_phase1a(Phase1a(node(1), 0, config.id, (2, 2)), 0.0)
    assert not nodes[0].vote(CUT_A, 0.0)
    assert nodes[0].rnd > FAST_RANK


def test_a_lower_rank_is_refused_with_the_promised_one() -> None:
    config, nodes = instances(3)
    nodes[0].on_phase1a(Phase1a(node(1), 0, config.id, (3, 2)), 0.0)
    [(to, reply)] = nodes[0].on_phase1a(Phase1a(node(2), 0, config.id, (2, 3)), 0.0)
    assert to == node(2) and not reply.promised and tuple(reply.rank) == (3, 2)


def test_bad_votes_are_protocol_violations() -> None:
    _, nodes = instances(4)
    with pytest.raises(ProtocolViolation, match="does not match"):
        nodes[0].learn(Proposal("0000000000000000", CUT_A.changes))
    with pytest.raises(ProtocolViolation, match="out of range"):
        nodes[0].merge(nodes[0].learn(CUT_A), 1 << 4, 0.0)
    with pytest.raises(ProtocolViolation, match="out of range"):
        nodes[0].merge(nodes[0].learn(CUT_A), 0, 0.0)
