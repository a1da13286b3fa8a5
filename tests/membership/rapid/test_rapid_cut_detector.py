"""The multi-node cut detector: watermarks, clear cuts only, implicit reports, reinforcement."""

from __future__ import annotations

from membership.rapid.cut_detector import CutDetector
from membership.rapid.topology import Configuration

K, H, L = 10, 9, 3
ALL = (1 << K) - 1


def node(i: int) -> str:
    return f"coterie://n{i}@10.0.{i // 256}.{i % 256}:7100/user/node"


CONFIG = Configuration(0, [(node(i), 1) for i in range(100)], K)


def detector(now: float = 0.0) -> CutDetector:
    return CutDetector(CONFIG, K, H, L, now)


def member(i: int) -> tuple[str, int]:
    return (node(i), 1)


def report(d: CutDetector, subject: tuple[str, int], rings: range, now: float = 0.0) -> None:
    for r in rings:
        d.add(subject, 1 << r, now)


def test_fewer_than_l_reports_are_noise() -> None:
    d = detector()
    report(d, member(1), range(L - 1))
    assert not d.unstable and not d.stable and d.proposal(10.0, 0.0) is None


def test_h_reports_make_a_proposal_only_when_no_subject_is_unstable() -> None:
    d = detector()
    report(d, member(1), range(H))
    report(d, member(2), range(L))  # something is happening to member 2 too
    assert d.proposal(10.0, 0.0) is None
    report(d, member(2), range(L, H))
    assert d.proposal(10.0, 0.0) == (member(1), member(2))  # one cut for both


def test_a_repeated_report_counts_once() -> None:
    d = detector()
    for _ in range(20):
        assert d.add(member(1), 1, 0.0) in (0, 1)
    assert d.reports[member(1)] == 1 and not d.unstable


def test_the_proposal_waits_until_the_stable_set_settles() -> None:
    d = detector(now=0.0)
    report(d, member(1), range(H), now=1.0)
    assert d.proposal(1.2, 0.5) is None
    assert d.proposal_due(0.5) == 1.5
    report(d, member(2), range(H), now=1.4)  # joins the cut, restarts the wait
    assert d.proposal(1.6, 0.5) is None
    assert d.proposal(1.9, 0.5) == (member(1), member(2))


def test_joiners_are_reported_up_and_invalid_subjects_are_refused() -> None:
    d = detector()
    joiner = (node(1000), 3)
    assert d.valid(joiner) and d.valid(member(1))
    assert not d.valid((node(1), 2))  # another incarnation of a member: neither up nor down
    d.add(joiner, ALL, 0.0)
    assert d.proposal(1.0, 0.0) == (joiner,)


def test_observers_that_fail_with_their_subject_report_it_implicitly() -> None:
    d = detector()
    subject = node(5)
    observers = CONFIG.observers_of(subject)
    dead = [o for o in dict.fromkeys(observers)][:2]
    rings = [r for r, o in enumerate(observers) if o not in dead]
    assert len(rings) <= K - 2  # two dead observers: at most 8 explicit reports possible
    for r in rings:
        d.add((subject, 1), 1 << r, 0.0)
    assert (subject, 1) in d.unstable
    # The dead observers are being cut too (their own observers report them).
    for o in dead:
        d.add((o, 1), ALL, 0.0)
    assert d.implicit_bits > 0
    assert not d.unstable
    assert set(d.proposal(1.0, 0.0)) == {(subject, 1), *((o, 1) for o in dead)}


def test_lingering_subjects_are_listed_for_reinforcement() -> None:
    d = detector()
    report(d, member(3), range(L), now=2.0)
    assert d.linger_due(10.0) == 12.0
    assert d.lingering(11.9, 10.0) == []
    assert d.lingering(12.0, 10.0) == [member(3)]
