"""Unit tests of the member table: states, legal transitions, events, and gossip merging."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membership.errors import IllegalTransition, ProtocolViolation
from membership.members import ALLOWED, MemberState, MemberTable
from membership.messages import (
    MemberInfo,
    MemberReachable,
    MemberRemoved,
    MemberUnreachable,
    MemberUp,
)

S = MemberState
ME = "coterie://me@127.0.0.1:7100/user/node"
X = "coterie://x@127.0.0.1:7101/user/node"
Y = "coterie://y@127.0.0.1:7102/user/node"


def table_with_x_up() -> MemberTable:
    table = MemberTable(ME, 1, 0.0)
    table.transition(ME, S.UP, 0.0)
    table.add(X, 5, 0.0, up=True)
    return table


def test_a_member_walks_joining_up_unreachable_up_leaving_removed_with_events() -> None:
    table = MemberTable(ME, 1, 0.0)
    changes = table.add(X, 5, 1.0)
    assert [(c.old, c.new, c.event) for c in changes] == [(None, S.JOINING, None)]
    events = [
        table.transition(X, S.UP, 2.0).event,
        table.transition(X, S.UNREACHABLE, 3.0, phi=9.5).event,
        table.transition(X, S.UP, 4.0).event,
        table.transition(X, S.LEAVING, 5.0).event,
        table.transition(X, S.REMOVED, 5.0, reason="left").event,
    ]
    assert events == [
        MemberUp(X, 5),
        MemberUnreachable(X, 9.5),
        MemberReachable(X),
        None,  # leaving is a state, not an event: removal follows at once
        MemberRemoved(X, "left", "leaving"),
    ]
    assert table.get(X).since == 5.0


def test_down_then_removed_carries_the_reason() -> None:
    table = table_with_x_up()
    table.transition(X, S.UNREACHABLE, 1.0, phi=8.1)
    assert table.transition(X, S.DOWN, 11.0, reason="down").event is None
    removed = table.transition(X, S.REMOVED, 11.0)
    assert removed.event == MemberRemoved(X, "down", "down")


def test_a_member_never_announced_up_is_never_announced_removed() -> None:
    table = MemberTable(ME, 1, 0.0)
    table.add(X, 5, 0.0)
    assert table.transition(X, S.DOWN, 1.0, reason="down").event is None
    assert table.transition(X, S.REMOVED, 1.0).event is None


@pytest.mark.parametrize(
    ("old", "new"),
    [(old, new) for old in S for new in S if new not in ALLOWED[old]],
)
def test_every_illegal_transition_raises_naming_the_member(old: S, new: S) -> None:
    table = MemberTable(ME, 1, 0.0)
    table.members[X] = table.members[ME].__class__(X, 5, old, 0.0)
    with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value} for {X}"):
        table.transition(X, new, 1.0)


def test_removed_is_final_and_states_only_move_forward_in_gossip() -> None:
    assert ALLOWED[S.REMOVED] == frozenset()
    table = table_with_x_up()
    table.merge([MemberInfo(X, 5, "removed", "left")], 1.0)
    assert table.get(X).state is S.REMOVED
    assert table.merge([MemberInfo(X, 5, "up", "")], 2.0) == []
    assert table.get(X).state is S.REMOVED


def test_unreachable_is_local_and_gossips_as_up() -> None:
    table = table_with_x_up()
    table.transition(X, S.UNREACHABLE, 1.0, phi=12.0)
    info = {i.node: i for i in table.infos()}[X]
    assert info.status == "up"
    # Someone else's "up" does not override our own detector.
    assert table.merge([MemberInfo(X, 5, "up", "")], 2.0) == []
    assert table.get(X).state is S.UNREACHABLE


def test_a_newer_incarnation_replaces_the_old_one() -> None:
    table = table_with_x_up()
    changes = table.merge([MemberInfo(X, 6, "up", "")], 1.0)
    assert [c.event for c in changes if c.event] == [
        MemberRemoved(X, "restarted", "up"),
        MemberUp(X, 6),
    ]
    assert table.get(X).incarnation == 6
    # News of the old incarnation is stale now.
    assert table.merge([MemberInfo(X, 5, "removed", "down")], 2.0) == []
    assert table.get(X).state is S.UP


def test_gossip_that_a_newer_process_took_our_name_removes_us() -> None:
    table = MemberTable(ME, 1, 0.0)
    table.transition(ME, S.UP, 0.0)
    changes = table.merge([MemberInfo(ME, 2, "up", "")], 1.0)
    assert [c.new for c in changes] == [S.REMOVED]
    assert table.me.state is S.REMOVED
    assert table.me.reason == "restarted"


def test_an_unknown_status_is_refused_before_anything_changes() -> None:
    table = MemberTable(ME, 1, 0.0)
    bad = [MemberInfo(X, 1, "up", ""), MemberInfo(Y, 1, "zombie", "")]
    with pytest.raises(ProtocolViolation, match="zombie"):
        table.merge(bad, 1.0)
    assert table.get(X) is None


def test_a_stranger_already_removed_stays_removed_when_stale_up_news_follows() -> None:
    table = MemberTable(ME, 1, 0.0)
    changes = table.merge([MemberInfo(X, 5, "removed", "down")], 1.0)
    assert [(c.old, c.new, c.event) for c in changes] == [(None, S.REMOVED, None)]
    assert table.merge([MemberInfo(X, 5, "up", "")], 2.0) == []
    assert table.get(X).state is S.REMOVED
    assert table.replay_events() == []


def test_replay_gives_a_new_subscriber_the_current_picture() -> None:
    table = table_with_x_up()
    table.add(Y, 3, 0.0, up=True)
    table.transition(Y, S.UNREACHABLE, 1.0, phi=8.5)
    assert table.replay_events() == [
        MemberUp(ME, 1),
        MemberUp(X, 5),
        MemberUp(Y, 3),
        MemberUnreachable(Y, 8.5),
    ]


def test_knows_more_than_spots_what_the_other_side_lacks() -> None:
    table = table_with_x_up()
    infos = table.infos()
    assert not table.knows_more_than(infos)
    assert table.knows_more_than([i for i in infos if i.node != X])
    table.transition(X, S.LEAVING, 1.0)
    assert table.knows_more_than(infos)


def test_prune_forgets_old_tombstones_only() -> None:
    table = table_with_x_up()
    table.add(Y, 1, 0.0, up=True)
    table.transition(X, S.REMOVED, 10.0, reason="left")
    table.transition(Y, S.REMOVED, 50.0, reason="left")
    assert table.prune(70.0, ttl=30.0) == [X]
    assert table.get(X) is None
    assert table.get(Y) is not None
    assert table.get(ME) is not None


# ------------------------------------------------------------------ merge is a semilattice

NODES = [X, Y, "coterie://z@127.0.0.1:7103/user/node"]
INFOS = st.builds(
    MemberInfo,
    node=st.sampled_from(NODES),
    incarnation=st.integers(1, 3),
    status=st.sampled_from(["joining", "up", "leaving", "down", "removed"]),
    reason=st.sampled_from(["", "left", "down"]),
)


def merged(infos: list[MemberInfo]) -> dict[str, tuple[int, str]]:
    table = MemberTable(ME, 1, 0.0)
    for info in infos:
        table.merge([info], 1.0)
    return {n: (m.incarnation, m.state.value) for n, m in table.members.items() if n != ME}


@settings(max_examples=300, deadline=None)
@given(st.lists(INFOS, max_size=8), st.randoms(use_true_random=False))
def test_any_delivery_order_converges_to_the_same_table(infos: list[MemberInfo], rnd) -> None:
    shuffled = infos[:]
    rnd.shuffle(shuffled)
    assert merged(infos) == merged(shuffled)


@settings(max_examples=100, deadline=None)
@given(st.lists(INFOS, max_size=6))
def test_merging_twice_changes_nothing(infos: list[MemberInfo]) -> None:
    table = MemberTable(ME, 1, 0.0)
    table.merge(infos, 1.0)
    before = {n: (m.incarnation, m.state) for n, m in table.members.items()}
    assert table.merge(infos, 2.0) == []
    assert {n: (m.incarnation, m.state) for n, m in table.members.items()} == before


def test_all_orders_of_a_small_history_agree() -> None:
    history = [
        MemberInfo(X, 1, "up", ""),
        MemberInfo(X, 1, "leaving", ""),
        MemberInfo(X, 2, "joining", ""),
        MemberInfo(X, 1, "removed", "left"),
    ]
    results = {tuple(merged(list(p)).items()) for p in itertools.permutations(history)}
    assert results == {((X, (2, "joining")),)}
