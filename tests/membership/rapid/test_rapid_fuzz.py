"""Hostile but well-typed Rapid messages (any field values the wire can decode) never crash a
member: ``step`` returns effects or counts a dropped message, and the member keeps working.

The messages are re-addressed to the member's own configuration (epoch and id) and often name
real members, so they get past the anti-entropy gate into the handlers, where the damage
would be done."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import wire
from membership.rapid.config import RapidConfig
from membership.rapid.messages import RAPID_PROTOCOL
from membership.rapid.node import RapidNode, State
from membership.rapid.topology import ConfigurationCache
from tests.fuzz.strategies import instances

CFG = RapidConfig()
NAMES = [f"coterie://n{i}@10.0.0.{i}:7100/user/node" for i in range(6)]


def members() -> tuple:
    cache = ConfigurationCache()
    config = cache.build(0, [(name, 1) for name in NAMES], CFG.k)
    nodes = [RapidNode(name, 1, CFG, random.Random(i), cache=cache) for i, name in enumerate(NAMES)]
    for node in nodes:
        node.start_in(config, 0.0)
    return config, nodes


@st.composite
def hostile(draw: st.DrawFn) -> object:
    cls = draw(st.sampled_from(RAPID_PROTOCOL))
    message = draw(instances(wire._BY_CLASS[cls]))
    changes: dict[str, object] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    real = st.sampled_from(NAMES)
    for field in ("sender", "node"):
        if field in names and draw(st.booleans()):
            changes[field] = draw(real)
    return message, changes


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(st.lists(hostile(), min_size=1, max_size=6))
def test_hostile_rapid_messages_never_crash_a_member(batch: list) -> None:
    config, nodes = members()
    target = nodes[0]
    now = 1.0
    for drawn, changes in batch:
        names = {f.name for f in dataclasses.fields(drawn)}
        if "epoch" in names:
            changes["epoch"] = 0
        if "config_id" in names:
            changes["config_id"] = config.id
        message = dataclasses.replace(drawn, **changes)
        effects = target.step(message, now)
        assert isinstance(effects, list)
        now += 0.1
    # Still a working member of a valid view: ticks run, probes go out, status answers.
    for _ in range(30):
        target.tick(now)
        now += 0.1
    assert target.state in (State.MEMBER, State.REMOVED)
    status = target.status()
    assert status.epoch >= 0 and status.size >= 1
