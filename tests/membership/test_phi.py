"""Unit tests of the phi accrual failure detector with synthetic heartbeat times (no clock)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from membership.config import MembershipConfig
from membership.phi import (
    AKKA_DEFAULTS,
    DetectorConfig,
    PhiAccrualDetector,
    Verdict,
    phi,
    silence_at_threshold,
)

DEFAULT = DetectorConfig()


def steady(config: DetectorConfig, interval: float, count: int, start: float = 0.0) -> tuple:
    """A detector fed `count` heartbeats exactly `interval` apart; returns it and the last time."""
    detector = PhiAccrualDetector(config)
    t = start
    detector.heartbeat(t)
    for _ in range(count):
        t += interval
        detector.heartbeat(t)
    return detector, t


def expected_silence(interval: float, std: float, config: DetectorConfig) -> float:
    """Analytic silence at which phi reaches the threshold, solved independently of the module.

    phi = log10(1 + e^z) = threshold gives z = ln(10^threshold - 1); z = y (1.5976 + 0.070566
    y^2) is the depressed cubic y^3 + p y + q = 0 with one real root (p > 0), by Cardano's
    formula. The silence is then mean + acceptable pause + y * max(std, floor).
    """
    z = math.log(10.0**config.threshold - 1.0)
    p = 1.5976 / 0.070566
    q = -z / 0.070566
    root = math.sqrt(q * q / 4 + p**3 / 27)
    y = math.cbrt(-q / 2 + root) + math.cbrt(-q / 2 - root)
    return interval + config.acceptable_pause + y * max(std, config.min_std_deviation)


# ------------------------------------------------------------------ steady heartbeats


@pytest.mark.parametrize("config", [DEFAULT, AKKA_DEFAULTS], ids=["coterie", "akka"])
def test_steady_heartbeats_keep_phi_low(config: DetectorConfig) -> None:
    interval = config.first_heartbeat_estimate
    rng = random.Random(3)
    detector = PhiAccrualDetector(config)
    t = 0.0
    detector.heartbeat(t)
    highest = 0.0
    for _ in range(2_000):
        gap = interval + rng.uniform(-0.02, 0.02)
        # Look at phi all through the gap, as the periodic check would.
        for k in range(1, 10):
            highest = max(highest, detector.phi(t + gap * k / 10))
        assert detector.check(t + gap * 0.99) is None
        t += gap
        detector.heartbeat(t)
    assert highest < 0.01
    assert not detector.suspected
    assert detector.mean_interval == pytest.approx(interval, abs=0.005)


def test_phi_is_zero_before_the_first_heartbeat() -> None:
    detector = PhiAccrualDetector(DEFAULT)
    assert detector.phi(1_000.0) == 0.0
    assert detector.check(1_000.0) is None
    assert detector.last_heartbeat is None


# ------------------------------------------------------------------ a stop


@pytest.mark.parametrize("config", [DEFAULT, AKKA_DEFAULTS], ids=["coterie", "akka"])
def test_a_stop_is_suspected_at_the_analytic_time(config: DetectorConfig) -> None:
    interval = config.first_heartbeat_estimate
    detector, last = steady(config, interval, count=config.max_sample_size + 50)
    # Exactly regular heartbeats: the history has no spread, the floor is what counts.
    assert detector.std_deviation < 1e-9
    expected = expected_silence(interval, 0.0, config)
    assert expected == pytest.approx(silence_at_threshold(interval, 0.0, config), abs=1e-9)
    assert detector.phi(last + expected - 0.001) < config.threshold
    assert detector.phi(last + expected + 0.001) >= config.threshold
    # The periodic check reports it exactly once, at the first check past that time.
    checks = [last + k * 0.01 for k in range(1, 1_000)]
    verdicts = [(t, detector.check(t)) for t in checks]
    changes = [(t, v) for t, v in verdicts if v is not None]
    assert len(changes) == 1
    at, verdict = changes[0]
    assert verdict is Verdict.SUSPECTED
    assert expected <= at - last < expected + 0.01 + 1e-9
    assert detector.suspected


def test_default_detection_beats_akka_by_the_expected_margin() -> None:
    """At steady heartbeats: ours 0.5 + 1.5 + 0.1 y, Akka's 1 + 3 + 0.1 y (y ~ 5.2)."""
    ours = expected_silence(0.5, 0.0, DEFAULT)
    akka = expected_silence(1.0, 0.0, AKKA_DEFAULTS)
    assert ours == pytest.approx(2.52, abs=0.01)
    assert akka == pytest.approx(4.52, abs=0.01)


def test_phi_keeps_growing_and_stays_finite_for_long_silences() -> None:
    detector, last = steady(DEFAULT, 0.5, 100)
    values = [detector.phi(last + s) for s in (3, 10, 100, 10_000, 1e9)]
    assert values == sorted(values)
    assert all(math.isfinite(v) for v in values)
    assert values[-1] > 1e20


def test_recovery_is_reported_once_when_heartbeats_return() -> None:
    detector, last = steady(DEFAULT, 0.5, 100)
    assert detector.check(last + 10.0) is Verdict.SUSPECTED
    assert detector.check(last + 11.0) is None
    detector.heartbeat(last + 11.5, sample=False)
    assert detector.check(last + 11.5) is Verdict.RECOVERED
    assert detector.check(last + 11.6) is None
    assert not detector.suspected
    # The outage did not enter the history.
    assert detector.mean_interval == pytest.approx(0.5)


# ------------------------------------------------------------------ jitter and pauses


@pytest.mark.parametrize("late_by", [0.2, 0.8, 1.2, 1.5])
def test_a_late_heartbeat_within_the_acceptable_pause_raises_no_suspicion(late_by: float) -> None:
    detector, last = steady(DEFAULT, 0.5, 300)
    arrival = last + 0.5 + late_by
    # Checked every 10 ms all the way to the late arrival.
    t = last
    while t < arrival:
        t += 0.01
        assert detector.check(min(t, arrival)) is None
    detector.heartbeat(arrival)
    assert not detector.suspected


def test_random_jitter_within_the_acceptable_pause_raises_no_suspicion() -> None:
    """Intervals anywhere from 0.3 s to 0.5 s + the acceptable pause, for an hour."""
    rng = random.Random(11)
    detector = PhiAccrualDetector(DEFAULT)
    t = 0.0
    detector.heartbeat(t)
    for _ in range(7_200):
        gap = 0.5 + rng.uniform(-0.2, DEFAULT.acceptable_pause)
        check = t
        while check + 0.1 < t + gap:
            check += 0.1
            assert detector.check(check) is None, f"suspected after {check - t:.2f} s"
        t += gap
        detector.heartbeat(t)


def test_a_gap_well_beyond_the_acceptable_pause_is_suspected() -> None:
    detector, last = steady(DEFAULT, 0.5, 300)
    gap = 0.5 + DEFAULT.acceptable_pause + 1.0
    assert detector.check(last + gap) is Verdict.SUSPECTED


def test_a_wide_history_tolerates_more_than_the_floor() -> None:
    """Irregular heartbeats spread the distribution: the same silence is less suspicious."""
    rng = random.Random(5)
    regular, last_regular = steady(DEFAULT, 0.5, 300)
    irregular = PhiAccrualDetector(DEFAULT)
    t = 0.0
    irregular.heartbeat(t)
    for _ in range(300):
        t += rng.uniform(0.1, 0.9)
        irregular.heartbeat(t)
    assert irregular.std_deviation > 0.2
    silence = 2.6
    assert irregular.phi(t + silence) < regular.phi(last_regular + silence)


# ------------------------------------------------------------------ the floor


def test_min_std_deviation_floors_a_perfectly_regular_history() -> None:
    tight = DetectorConfig(min_std_deviation=0.1)
    loose = DetectorConfig(min_std_deviation=0.5)
    a, last = steady(tight, 0.5, 300)
    b, _ = steady(loose, 0.5, 300)
    assert a.std_deviation == b.std_deviation < 1e-9
    silence = 2.3
    # Exactly the formula with the floor standing in for the (zero) deviation.
    assert a.phi(last + silence) == pytest.approx(phi(silence, 0.5 + 1.5, 0.1))
    assert b.phi(last + silence) == pytest.approx(phi(silence, 0.5 + 1.5, 0.5))
    # Without the floor, 0.3 s of lateness would already be a certainty (phi ~ infinity);
    # with it, a looser floor is less suspicious of the same silence.
    assert a.phi(last + silence) > 1.0 > b.phi(last + silence)
    assert expected_silence(0.5, 0.0, loose) - expected_silence(0.5, 0.0, tight) == (
        pytest.approx(0.4 * 5.2, abs=0.1)
    )


def test_the_real_deviation_counts_once_it_exceeds_the_floor() -> None:
    config = DetectorConfig(min_std_deviation=0.01)
    detector = PhiAccrualDetector(config)
    t = 0.0
    detector.heartbeat(t)
    for k in range(200):
        t += 0.4 if k % 2 else 0.6  # deviation exactly 0.1
        detector.heartbeat(t)
    assert detector.std_deviation == pytest.approx(0.1, rel=1e-6)
    assert detector.phi(t + 2.2) == pytest.approx(phi(2.2, 0.5 + 1.5, 0.1), rel=1e-6)


# ------------------------------------------------------------------ bookkeeping


def test_the_window_keeps_exact_statistics_over_many_turnovers() -> None:
    config = DetectorConfig(max_sample_size=50)
    detector = PhiAccrualDetector(config)
    rng = random.Random(9)
    t = 1e6  # a large clock origin must not cost precision
    detector.heartbeat(t)
    intervals = []
    for _ in range(10_000):
        gap = rng.uniform(0.3, 0.7) if rng.random() < 0.9 else rng.uniform(1.0, 3.0)
        intervals.append(gap)
        t += gap
        detector.heartbeat(t)
    tail = intervals[-50:]
    assert detector.samples == 50
    assert detector.mean_interval == pytest.approx(statistics.fmean(tail), abs=1e-6)
    assert detector.std_deviation == pytest.approx(statistics.pstdev(tail), abs=1e-6)


def test_the_bootstrap_suspects_a_peer_that_never_answers() -> None:
    detector = PhiAccrualDetector(DEFAULT)
    detector.heartbeat(0.0, sample=False)  # watching starts: no interval yet
    assert detector.samples == 2
    assert detector.mean_interval == pytest.approx(0.5)
    assert detector.std_deviation == pytest.approx(0.125)
    expected = expected_silence(0.5, 0.125, DEFAULT)
    assert detector.phi(expected - 0.001) < DEFAULT.threshold <= detector.phi(expected + 0.001)


def test_heartbeats_out_of_order_never_move_the_clock_back() -> None:
    detector, last = steady(DEFAULT, 0.5, 10)
    samples = detector.samples
    detector.heartbeat(last - 0.3)
    assert detector.last_heartbeat == last
    assert detector.samples == samples


def test_forgive_moves_the_last_heartbeat_forward() -> None:
    detector, last = steady(DEFAULT, 0.5, 100)
    before = detector.phi(last + 5.0)
    detector.forgive(4.0)
    assert detector.last_heartbeat == last + 4.0
    assert detector.phi(last + 5.0) < 0.01 < before
    detector.forgive(-1.0)  # never backwards
    assert detector.last_heartbeat == last + 4.0


# ------------------------------------------------------------------ configuration errors


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("threshold", 0.0),
        ("threshold", math.nan),
        ("max_sample_size", 1),
        ("min_std_deviation", 0.0),
        ("min_std_deviation", -0.1),
        ("acceptable_pause", -0.5),
        ("first_heartbeat_estimate", 0.0),
    ],
)
def test_detector_config_errors_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{key} must"):
        DetectorConfig(**{key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("heartbeat_interval", 0.0),
        ("tick_interval", -1.0),
        ("ref_ttl", 0.0),
        ("down_after", 0.0),
        ("join_backoff_initial", 0.0),
        ("seed_timeout", -2.0),
        ("leave_timeout", 0.0),
    ],
)
def test_membership_config_errors_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{key} must"):
        MembershipConfig(**{key: value})


def test_membership_config_cross_checks_name_both_keys() -> None:
    with pytest.raises(ValueError, match=r"ref_ttl.*heartbeat"):
        MembershipConfig(heartbeat_interval=1.0, ref_ttl=0.5)
    with pytest.raises(ValueError, match=r"tick_interval.*heartbeat"):
        MembershipConfig(heartbeat_interval=0.1, tick_interval=0.2, self_pause_tolerance=0.5)
    with pytest.raises(ValueError, match=r"self_pause_tolerance.*tick"):
        MembershipConfig(self_pause_tolerance=0.05)


def test_a_seed_that_is_not_a_node_supervisor_is_refused_with_the_path() -> None:
    with pytest.raises(ValueError, match="membership"):
        MembershipConfig(seeds=("coterie://a@127.0.0.1:7100/user/node/membership",))
    config = MembershipConfig(seeds=("coterie://a@127.0.0.1:7100",))
    assert config.seeds == ("coterie://a@127.0.0.1:7100/user/node",)


@pytest.mark.parametrize("threshold", [0.1, math.log10(2.0), 0.31, 1.0, 8.0])
def test_availability_is_exactly_phi_below_the_threshold(threshold: float) -> None:
    """The shortcut for silences shorter than the mean never changes an answer, including
    for thresholds at or below phi's value at the mean (log10 2)."""
    rng = random.Random(5)
    config = DetectorConfig(threshold=threshold, acceptable_pause=0.3, min_std_deviation=0.05)
    detector = PhiAccrualDetector(config)
    t = 0.0
    detector.heartbeat(t)
    for _ in range(500):
        t += rng.uniform(0.2, 0.8)
        detector.heartbeat(t)
        for silence in (0.0, 0.3, 0.5, 0.8, 1.0, 1.5, 3.0, rng.uniform(0.0, 4.0)):
            now = t + silence
            assert detector.is_available(now) == (detector.phi(now) < threshold), (t, silence)
