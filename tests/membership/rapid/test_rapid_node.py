"""One Rapid member driven by hand: anti-entropy answers, hostile input, and the layering rule
(the protocol modules import no IO, clock or chance)."""

from __future__ import annotations

import ast
import pathlib
import random

import pytest

from membership.effects import Log, Send
from membership.rapid.config import RapidConfig
from membership.rapid.consensus import make_proposal
from membership.rapid.effects import Publish
from membership.rapid.gossip import bits_to_bytes
from membership.rapid.messages import (
    Gossip,
    JoinGateway,
    JoinRequest,
    JoinRetry,
    PreJoin,
    Probe,
    ProbeAck,
    Proposal,
    SyncRequest,
    ViewChain,
    ViewChange,
    ViewSnapshot,
    VoteSet,
)
from membership.rapid.node import RapidNode, State
from membership.rapid.topology import Configuration, ConfigurationCache


def node(i: int) -> str:
    return f"coterie://n{i}@10.0.0.{i}:7100/user/node"


CFG = RapidConfig()


def cluster(n: int) -> tuple[Configuration, list[RapidNode]]:
    cache = ConfigurationCache()
    config = cache.build(0, [(node(i), 1) for i in range(n)], CFG.k)
    nodes = [RapidNode(node(i), 1, CFG, random.Random(i), cache=cache) for i in range(n)]
    for member in nodes:
        member.start_in(config, 0.0)
    return config, nodes


def sends(effects: list) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def test_probes_are_answered_whatever_the_view() -> None:
    config, nodes = cluster(5)
    [ack] = sends(nodes[1].step(Probe(node(0), config.epoch, config.id, 7), 1.0))
    assert ack.to == node(0) and isinstance(ack.message, ProbeAck) and ack.message.seq == 7


def test_a_member_behind_is_caught_up_with_the_cuts_it_missed() -> None:
    config, nodes = cluster(6)
    ahead, behind = nodes[0], nodes[1]
    cut = make_proposal(((node(5), 1),))
    ahead.step(ViewChain(node(9), 0, config.id, (cut,), (config.successor(cut.changes).id,)), 1.0)
    assert ahead.config.epoch == 1  # type: ignore[union-attr]
    # The lagging member probes (or gossips to) a member already in the next view...
    out = sends(ahead.step(Probe(node(1), 0, config.id, 1), 2.0))
    [chain] = [s for s in out if isinstance(s.message, ViewChain)]
    assert chain.to == node(1)
    # ... and a second message right after is not answered again (rate limit).
    out = sends(ahead.step(Probe(node(1), 0, config.id, 2), 2.1))
    assert not [s for s in out if isinstance(s.message, ViewChain)]
    effects = behind.step(chain.message, 2.2)
    assert behind.config.id == ahead.config.id  # type: ignore[union-attr]
    [event] = [e.event for e in effects if isinstance(e, Publish)]
    assert isinstance(event, ViewChange) and event.removed == ((node(5), 1),)
    assert event.via == "sync"


def test_a_member_that_sees_a_newer_view_asks_for_it() -> None:
    config, nodes = cluster(4)
    newer = config.successor(((node(3), 1),))
    out = sends(nodes[0].step(Gossip(node(1), 1, newer.id, (), ()), 1.0))
    assert [type(s.message) for s in out] == [SyncRequest]
    # A snapshot from far ahead is checked against its id before it is installed.
    bad = ViewSnapshot(node(1), 5, "0123456789abcdef", newer.members)
    effects = nodes[0].step(bad, 1.1)
    assert nodes[0].config.epoch == 0  # type: ignore[union-attr]
    assert nodes[0].counters["dropped_bad_messages"] == 1
    assert any(isinstance(e, Log) and e.level == "warning" for e in effects)
    good = ViewSnapshot(node(1), 1, newer.id, newer.members)
    nodes[0].step(good, 1.2)
    assert nodes[0].config.id == newer.id  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "message",
    [
        Gossip(node(1), 0, "", (("x", 1, 1 << 40),), ()),  # a mask wider than K rings
        Gossip(node(1), 0, "", ((node(2), 1, 0),), ()),  # an empty mask
        Gossip(node(1), 0, "", (), (VoteSet(Proposal("f" * 16, ((node(2), 1),)), b"\x01"),)),
        JoinRequest("not a path", 1, 0, "", (0,)),
        PreJoin("coterie://nobody", 1),
        ViewChain(node(1), 0, "", (make_proposal(((node(2), 1),)),), ()),
    ],
)
def test_hostile_input_costs_the_message_never_the_node(message: object) -> None:
    config, nodes = cluster(4)
    if isinstance(message, Gossip):
        message = Gossip(message.sender, 0, config.id, message.reports, message.votes)
    if isinstance(message, JoinRequest):
        message = JoinRequest(message.node, 1, 0, config.id, message.rings)
    if isinstance(message, ViewChain):
        message = ViewChain(message.sender, 0, config.id, message.cuts, message.config_ids)
    nodes[0].step(message, 1.0)
    assert nodes[0].counters["dropped_bad_messages"] == 1
    assert nodes[0].state is State.MEMBER


def test_a_vote_bitset_larger_than_the_view_is_refused() -> None:
    config, nodes = cluster(4)
    vote = VoteSet(make_proposal(((node(3), 1),)), bits_to_bytes(1 << 9, 10))
    nodes[0].step(Gossip(node(1), 0, config.id, (), (vote,)), 1.0)
    assert nodes[0].counters["dropped_bad_messages"] == 1


def test_a_seed_holds_joiners_while_a_view_change_is_decided_and_admits_them_after() -> None:
    config, nodes = cluster(4)
    seed = nodes[0]
    out = sends(seed.step(PreJoin(node(20), 1), 1.0))
    assert type(out[0].message).__name__ == "JoinGateway"
    full = (1 << CFG.k) - 1
    seed.step(Gossip(node(1), 0, config.id, ((node(3), 1, full),), ()), 1.1)
    assert sends(seed.step(PreJoin(node(21), 1), 1.2)) == []  # held, not turned away
    assert sends(seed.step(PreJoin(node(21), 1), 1.3)) == []  # asking again changes nothing
    # The cut {node 3} is decided: node 21 gets its gateway into the new view at once.
    cut = make_proposal(((node(3), 1),))
    nxt = seed.cache.successor(config, cut.changes, cut.pid)
    effects = seed.step(ViewChain(node(1), 0, config.id, (cut,), (nxt.id,)), 1.4)
    gateways = [s for s in sends(effects) if type(s.message).__name__ == "JoinGateway"]
    assert [(g.to, g.message.epoch, g.message.config_id) for g in gateways] == [
        (node(21), 1, nxt.id)
    ]


def test_a_seed_holding_as_many_joiners_as_it_may_turns_the_next_away() -> None:
    config, _ = cluster(4)
    cfg = CFG.replace(join_hold_max=1)
    seed = RapidNode(node(0), 1, cfg, random.Random(0))
    seed.start_in(seed.cache.build(0, config.members, cfg.k), 0.0)
    full = (1 << CFG.k) - 1
    seed.step(Gossip(node(1), 0, config.id, ((node(3), 1, full),), ()), 1.1)
    assert sends(seed.step(PreJoin(node(21), 1), 1.2)) == []
    out = sends(seed.step(PreJoin(node(22), 1), 1.3))
    assert [type(s.message).__name__ for s in out] == ["JoinRetry"]


def test_the_first_seed_forms_a_cluster_when_no_other_seed_answers_in_time() -> None:
    first = RapidNode(node(0), 1, CFG, random.Random(0))
    first.join_cluster([node(0), node(1), node(2)], 0.0, form_after=10.0)
    assert first.state is State.JOINING
    assert first.deadline() is not None and first.deadline() <= 10.0
    for t in range(1, 10):
        first.tick(float(t))
        assert first.state is State.JOINING  # still asking the others
    out = sends(first.tick(10.0))
    assert first.state is State.MEMBER
    assert [m for m, _ in first.status().members] == [node(0)]
    # The other seeds, backing off between join attempts, are told to ask again now.
    assert sorted((s.to, type(s.message).__name__) for s in out) == [
        (node(1), "JoinRetry"),
        (node(2), "JoinRetry"),
    ]
    other = RapidNode(node(1), 1, CFG, random.Random(1))
    other.join_cluster([node(0), node(1), node(2)], 0.0)
    other.tick(0.5)
    retry = next(s.message for s in out if s.to == node(1))
    other.step(retry, 10.0)
    assert other.deadline() is not None and other.deadline() <= 11.5


@pytest.mark.parametrize("answer", ["gateway", "retry"])
def test_a_seed_that_answers_means_a_cluster_exists_and_none_is_formed(answer: str) -> None:
    config, _ = cluster(3)
    first = RapidNode(node(0), 2, CFG, random.Random(0))  # a restarted first seed
    first.join_cluster([node(0), node(1), node(2)], 0.0, form_after=10.0)
    if answer == "gateway":
        observers = config.expected_observers_of(node(0))
        first.step(JoinGateway(node(1), config.epoch, config.id, observers), 1.0)
    else:
        first.step(JoinRetry(node(1), config.epoch, "view change"), 1.0)
    for t in range(2, 30):
        first.tick(float(t))
    assert first.state is State.JOINING  # never a cluster of its own


def test_a_member_that_is_not_the_first_seed_never_forms_a_cluster() -> None:
    other = RapidNode(node(1), 1, CFG, random.Random(1))
    other.join_cluster([node(0), node(1), node(2)], 0.0)
    for t in range(1, 60):
        other.tick(float(t))
    assert other.state is State.JOINING


def test_layering_protocol_modules_import_no_io_clock_or_chance() -> None:
    package = pathlib.Path(__file__).resolve().parents[3] / "membership" / "rapid"
    forbidden = {"zmq", "pykka", "time", "random", "threading", "socket", "asyncio"}
    # The simulator owns its seeded generator; the scenario runner reads the wall clock.
    allowed = {"sim.py": {"random"}, "scenarios.py": {"time"}, "actor.py": {"time", "random"}}
    modules = sorted(package.glob("*.py"))
    assert len(modules) >= 10
    for path in modules:
        tree = ast.parse(path.read_text())
        guarded = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
            for b in block.body
            for n in ast.walk(b)
        }
        names = set()
        for n in ast.walk(tree):
            if id(n) in guarded:
                continue
            if isinstance(n, ast.Import):
                names |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                names.add(n.module.split(".")[0])
        found = names & forbidden
        assert found <= allowed.get(path.name, set()), f"{path.name} imports {sorted(found)}"
