"""Topology: K rings from hashing addresses, observers and subjects, configuration ids."""

from __future__ import annotations

import pytest

from membership.rapid.topology import Configuration, ConfigurationCache, InvalidCut, ring_keys


def node(i: int) -> str:
    return f"coterie://n{i}@10.0.{i // 256}.{i % 256}:7100/user/node"


def config(n: int, k: int = 10, epoch: int = 0) -> Configuration:
    return Configuration(epoch, [(node(i), 1) for i in range(n)], k)


def test_every_member_has_k_observers_and_k_subjects_and_they_mirror_each_other() -> None:
    c = config(200)
    observed_on: dict[tuple[str, int], str] = {}
    for member in c.nodes:
        observers, subjects = c.observers_of(member), c.subjects_of(member)
        assert len(observers) == len(subjects) == 10
        assert member not in observers and member not in subjects
        for r, subject in enumerate(subjects):
            observed_on[(subject, r)] = member
    # On ring r, o observes s exactly when s is o's subject on ring r.
    for member in c.nodes:
        for r, observer in enumerate(c.observers_of(member)):
            assert observed_on[(member, r)] == observer
    # K random rings: observers are almost always distinct at this size.
    assert sum(len(set(c.observers_of(m))) for m in c.nodes) / 200 > 9.5


def test_rings_depend_only_on_the_member_list() -> None:
    members = [(node(i), 1) for i in range(50)]
    a = Configuration(3, members, 10)
    b = Configuration(3, list(reversed(members)), 10)
    assert a.id == b.id
    assert all(a.observers_of(m) == b.observers_of(m) for m in a.nodes)
    assert ring_keys(node(1), 10) == ring_keys(node(1), 10)
    assert len(set(ring_keys(node(1), 10))) == 10


def test_configuration_id_is_a_hash_of_members_and_incarnations() -> None:
    members = [(node(i), 1) for i in range(5)]
    base = Configuration(0, members, 10).id
    assert Configuration(7, members, 10).id == base  # the epoch orders views, the id names them
    assert Configuration(0, [*members[:4], (node(4), 2)], 10).id != base
    assert Configuration(0, members[:4], 10).id != base
    with pytest.raises(ValueError, match="two incarnations"):
        Configuration(0, [*members, (node(0), 2)], 10)
    with pytest.raises(ValueError, match="at least one member"):
        Configuration(0, [], 10)


def test_a_joiners_expected_observers_become_its_observers() -> None:
    c = config(100)
    joiner = (node(500), 1)
    expected = c.expected_observers_of(joiner[0])
    after = c.successor([joiner])
    assert after.epoch == 1 and after.size == 101
    assert after.observers_of(joiner[0]) == expected
    for r, observer in enumerate(expected):
        assert c.observer_mask(observer, joiner[0]) >> r & 1


def test_a_restarted_process_has_its_predecessors_gatekeepers() -> None:
    c = config(100)
    # Ring positions hash the address only: the new incarnation's gatekeepers are the
    # observers of the member at that address.
    assert c.expected_observers_of(node(7)) == c.observers_of(node(7))
    assert c.classify((node(7), 2)) is None
    with pytest.raises(InvalidCut, match="incarnation 1 is the member"):
        c.successor([(node(7), 2)])


def test_small_clusters() -> None:
    one = config(1)
    assert one.observers_of(node(0)) == () and one.subjects_of(node(0)) == ()
    assert one.expected_observers_of(node(9)) == (node(0),) * 10  # the seed gatekeeps alone
    two = config(2)
    assert two.subjects_of(node(0)) == (node(1),) * 10
    assert two.subject_masks(node(0)) == {node(1): (1 << 10) - 1}
    with pytest.raises(InvalidCut, match="every member"):
        one.successor([(node(0), 1)])


def test_successor_removes_members_and_adds_joiners_in_one_step() -> None:
    c = config(20)
    cut = [(node(3), 1), (node(4), 1), (node(30), 5)]
    nxt = c.successor(cut)
    assert nxt.epoch == 1 and nxt.size == 19
    assert not nxt.has((node(3), 1)) and nxt.has((node(30), 5))


def test_cache_shares_one_object_per_view() -> None:
    cache = ConfigurationCache(limit=4)
    c = cache.build(0, [(node(i), 1) for i in range(10)], 10)
    a = cache.successor(c, [(node(1), 1)], "cut-a")
    assert cache.successor(c, [(node(1), 1)], "cut-a") is a
    assert cache.get(1, a.id) is a
    assert cache.build(0, [(node(i), 1) for i in range(10)], 10) is c
