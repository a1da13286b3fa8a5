"""The linearizability checker on planted anomalies, on histories that are linearizable by
construction, and against a brute-force search on small random histories."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coterie.jepsen import (
    Counter,
    HistoryError,
    Recorder,
    Register,
    check,
    load,
    operations,
    save,
    summary,
)
from coterie.jepsen.__main__ import main as cli_main
from tests.jepsen.histories import brute_force, build, model_for, simulate

X = "x"


def verdict(lines, model=None) -> bool | None:
    return check(build(lines), model or Register()).valid


# ------------------------------------------------------------------ register: good and bad


def test_sequential_write_then_read_is_linearizable() -> None:
    assert verdict(
        [
            (0, "invoke", "write", X, 1),
            (0, "ok", "write", X, 1),
            (1, "invoke", "read", X, None),
            (1, "ok", "read", X, 1),
        ]
    )


def test_read_of_initial_value_before_any_write() -> None:
    assert verdict([(0, "invoke", "read", X, None), (0, "ok", "read", X, None)])
    assert not verdict([(0, "invoke", "read", X, None), (0, "ok", "read", X, 7)])


def test_stale_read_is_caught() -> None:
    # write 1, then write 2 completes, then a read that starts afterwards returns 1.
    lines = [
        (0, "invoke", "write", X, 1),
        (0, "ok", "write", X, 1),
        (0, "invoke", "write", X, 2),
        (0, "ok", "write", X, 2),
        (1, "invoke", "read", X, None),
        (1, "ok", "read", X, 1),
    ]
    result = check(build(lines), Register())
    assert result.valid is False
    [bad] = result.anomalies
    assert bad.key == X
    # The explanation names the read that could not be placed.
    assert any(op.f == "read" and op.result == 1 for op in bad.stuck or [])
    assert "NOT linearizable" in result.explain()


def test_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in (1, 2):
        assert verdict(
            [
                (0, "invoke", "write", X, 1),
                (0, "ok", "write", X, 1),
                (0, "invoke", "write", X, 2),
                (1, "invoke", "read", X, None),
                (1, "ok", "read", X, seen),
                (0, "ok", "write", X, 2),
            ]
        )


def test_new_value_then_old_value_is_caught_even_when_concurrent_with_the_write() -> None:
    # Both reads overlap the write of 2, but one after the other: once a read saw 2, a
    # later read may not see 1 again (no "flicker").
    assert not verdict(
        [
            (0, "invoke", "write", X, 1),
            (0, "ok", "write", X, 1),
            (0, "invoke", "write", X, 2),
            (1, "invoke", "read", X, None),
            (1, "ok", "read", X, 2),
            (1, "invoke", "read", X, None),
            (1, "ok", "read", X, 1),
            (0, "ok", "write", X, 2),
        ]
    )


def test_two_observers_disagreeing_on_the_order_of_two_writes() -> None:
    lines = [
        (0, "invoke", "write", X, 1),
        (1, "invoke", "write", X, 2),
        (2, "invoke", "read", X, None),
        (2, "ok", "read", X, 1),
        (3, "invoke", "read", X, None),
        (3, "ok", "read", X, 2),
        (2, "invoke", "read", X, None),
        (2, "ok", "read", X, 2),
        (3, "invoke", "read", X, None),
        (3, "ok", "read", X, 1),
        (0, "ok", "write", X, 1),
        (1, "ok", "write", X, 2),
    ]
    assert not verdict(lines)
    # The same reads in agreeing orders are fine.
    agreeing = list(lines)
    agreeing[9] = (3, "ok", "read", X, 2)
    assert verdict(agreeing)


def test_lost_update_through_compare_and_set() -> None:
    # Two read-modify-write clients both succeed in moving 0 -> 1: one update is lost.
    base = [(0, "invoke", "write", X, 0), (0, "ok", "write", X, 0)]
    assert not verdict(
        [
            *base,
            (1, "invoke", "cas", X, (0, 1)),
            (2, "invoke", "cas", X, (0, 1)),
            (1, "ok", "cas", X, True),
            (2, "ok", "cas", X, True),
        ]
    )
    assert verdict(
        [
            *base,
            (1, "invoke", "cas", X, (0, 1)),
            (2, "invoke", "cas", X, (0, 1)),
            (1, "ok", "cas", X, True),
            (2, "ok", "cas", X, False),
        ]
    )


def test_a_failed_cas_must_have_seen_another_value() -> None:
    assert not verdict(
        [
            (0, "invoke", "write", X, 3),
            (0, "ok", "write", X, 3),
            (1, "invoke", "cas", X, (3, 4)),
            (1, "ok", "cas", X, False),
        ]
    )


def test_failed_operations_never_took_effect() -> None:
    # A write that definitely failed cannot be the source of a read.
    assert not verdict(
        [
            (0, "invoke", "write", X, 5),
            (0, "fail", "write", X, None),
            (1, "invoke", "read", X, None),
            (1, "ok", "read", X, 5),
        ]
    )


# ------------------------------------------------------------------ unknown outcomes (info)


def info_write_then(reads: list[object]) -> list:
    lines = [
        (0, "invoke", "write", X, 1),
        (0, "ok", "write", X, 1),
        (1, "invoke", "write", X, 2),
        (1, "info", "write", X, None),
    ]
    for n, value in enumerate(reads):
        lines += [(2 + n, "invoke", "read", X, None), (2 + n, "ok", "read", X, value)]
    return lines


def test_an_info_write_may_have_taken_effect() -> None:
    assert verdict(info_write_then([2, 2]))


def test_an_info_write_may_never_have_taken_effect() -> None:
    assert verdict(info_write_then([1, 1]))


def test_an_info_write_may_take_effect_late() -> None:
    assert verdict(info_write_then([1, 2]))


def test_an_info_write_cannot_take_effect_twice_or_be_undone() -> None:
    assert not verdict(info_write_then([2, 1]))


def test_an_info_write_cannot_take_effect_before_its_invocation() -> None:
    assert not verdict(
        [
            (2, "invoke", "read", X, None),
            (2, "ok", "read", X, 9),
            (1, "invoke", "write", X, 9),
            (1, "info", "write", X, None),
        ]
    )


def test_an_unknown_cas_is_a_write_only_where_it_would_have_matched() -> None:
    lines = [
        (0, "invoke", "write", X, 1),
        (0, "ok", "write", X, 1),
        (1, "invoke", "cas", X, (1, 5)),
        (1, "info", "cas", X, None),
        (2, "invoke", "read", X, None),
        (2, "ok", "read", X, 5),
    ]
    assert verdict(lines)
    lines[2] = (1, "invoke", "cas", X, (4, 5))  # could never have matched
    assert not verdict(lines)


def test_a_chain_of_three_unknown_operations_explains_a_read() -> None:
    # Only write(1), cas(1, 2), cas(2, 3) in that order explain the read of 3: more than
    # the quick pass offers, so the complete pass has to find it.
    lines = []
    for p, (f, value) in enumerate([("write", 1), ("cas", (1, 2)), ("cas", (2, 3))]):
        lines += [(p, "invoke", f, X, value), (p, "info", f, X, None)]
    lines += [(9, "invoke", "read", X, None), (9, "ok", "read", X, 3)]
    assert verdict(lines)
    lines[-1] = (9, "ok", "read", X, 4)
    assert not verdict(lines)


def test_an_operation_never_completed_counts_as_unknown() -> None:
    assert verdict(
        [
            (0, "invoke", "write", X, 3),
            (1, "invoke", "read", X, None),
            (1, "ok", "read", X, 3),
        ]
    )


# ------------------------------------------------------------------ counter


def test_counter_lost_update() -> None:
    # Two concurrent increments both answer 1: one was lost.
    assert not verdict(
        [
            (0, "invoke", "add", X, 1),
            (1, "invoke", "add", X, 1),
            (0, "ok", "add", X, 1),
            (1, "ok", "add", X, 1),
        ],
        Counter(),
    )
    assert verdict(
        [
            (0, "invoke", "add", X, 1),
            (1, "invoke", "add", X, 1),
            (0, "ok", "add", X, 2),
            (1, "ok", "add", X, 1),
        ],
        Counter(),
    )


def test_counter_stale_read() -> None:
    assert not verdict(
        [
            (0, "invoke", "add", X, 3),
            (0, "ok", "add", X, 3),
            (1, "invoke", "read", X, None),
            (1, "ok", "read", X, 0),
        ],
        Counter(),
    )


def test_counter_unknown_add_counts_at_most_once() -> None:
    def with_reads(*values: int) -> list:
        lines = [(0, "invoke", "add", X, 5), (0, "info", "add", X, None)]
        for n, value in enumerate(values):
            lines += [(1 + n, "invoke", "read", X, None), (1 + n, "ok", "read", X, value)]
        return lines

    assert verdict(with_reads(0, 5), Counter())
    assert verdict(with_reads(0, 0), Counter())
    assert not verdict(with_reads(5, 0), Counter())
    # Applied twice (a retry after a timeout, without client sessions): caught.
    assert not verdict(with_reads(10), Counter())


def test_counter_add_without_result_is_checked_by_reads_only() -> None:
    assert verdict(
        [
            (0, "invoke", "add", X, 2),
            (0, "ok", "add", X, None),
            (1, "invoke", "read", X, None),
            (1, "ok", "read", X, 2),
        ],
        Counter(),
    )


# ------------------------------------------------------------------ keys, reports, errors


def test_keys_are_checked_independently_and_the_bad_one_is_named() -> None:
    lines = [
        (0, "invoke", "write", "a", 1),
        (0, "ok", "write", "a", 1),
        (0, "invoke", "write", "b", 1),
        (0, "ok", "write", "b", 1),
        (1, "invoke", "read", "a", None),
        (1, "ok", "read", "a", 1),
        (1, "invoke", "read", "b", None),
        (1, "ok", "read", "b", None),
    ]
    result = check(build(lines), Register())
    assert result.valid is False
    assert [k.key for k in result.anomalies] == ["b"]
    assert result.keys["a"].valid is True


def test_budget_exhaustion_is_unknown_not_a_verdict() -> None:
    # Many concurrent unknown writes and an impossible final read: the search must try
    # every subset before it can say no; a tiny budget gives up honestly.
    lines = []
    for p in range(12):
        lines += [(p, "invoke", "write", X, p), (p, "info", "write", X, None)]
    lines += [(99, "invoke", "read", X, None), (99, "ok", "read", X, 1000)]
    assert check(build(lines), Register(), budget=50).valid is None
    assert check(build(lines), Register(), budget=None).valid is False


def test_witness_is_a_legal_sequential_run() -> None:
    rng = random.Random(5)
    events = simulate(rng, "register", ops=200, processes=5, crash_rate=0.05)
    result = check(events, Register(), witness=True)
    assert result.valid
    witness = result.keys[X].witness
    assert witness is not None
    state = Register().init()
    for op in witness:
        ok, state = Register().step(state, op)
        assert ok
    position = {op.id: n for n, op in enumerate(witness)}
    for a in witness:  # real-time order respected
        for b in witness:
            if a.ret is not None and a.ret < b.call:
                assert position[a.id] < position[b.id]


def test_malformed_histories_are_refused_with_the_event_named() -> None:
    with pytest.raises(HistoryError, match="event 0: ok of process 0 without invoke"):
        operations(build([(0, "ok", "write", X, 1)]))
    with pytest.raises(HistoryError, match="event 1: process 0 invokes while event 0"):
        operations(build([(0, "invoke", "write", X, 1), (0, "invoke", "write", X, 2)]))
    with pytest.raises(HistoryError, match="crashed at event 1"):
        operations(
            build(
                [
                    (0, "invoke", "write", X, 1),
                    (0, "info", "write", X, None),
                    (0, "invoke", "write", X, 2),
                ]
            )
        )
    with pytest.raises(HistoryError, match="does not match its invocation"):
        operations(build([(0, "invoke", "write", X, 1), (0, "ok", "read", X, 1)]))


def test_recorder_pairs_processes_and_hands_out_fresh_ids() -> None:
    recorder = Recorder(processes=2)
    a = recorder.invoke(0, "write", X, 1)
    b = recorder.invoke(1, "read", X)
    with pytest.raises(HistoryError):
        recorder.invoke(0, "read", X)
    recorder.complete(b, "ok", None)
    recorder.complete(a, "info")
    fresh = recorder.crashed()
    assert fresh == 2 and recorder.crashed() == 3
    c = recorder.invoke(fresh, "read", X)
    recorder.complete(c, "ok", 1)
    events = recorder.events()
    assert [e.type for e in events] == ["invoke", "invoke", "ok", "info", "invoke", "ok"]
    assert all(x.time <= y.time for x, y in itertools.pairwise(events))
    assert summary(events) == {"ok": 2, "fail": 0, "info": 1}
    assert check(events, Register()).valid


def test_save_load_and_the_command_line(tmp_path, capsys) -> None:
    events = build(info_write_then([2, 1]))
    path = tmp_path / "h.jsonl"
    save(events, path)
    assert load(path) == events
    assert cli_main(["check", str(path), "--model", "register"]) == 1
    assert "NOT linearizable" in capsys.readouterr().out
    save(build(info_write_then([1, 2])), path)
    assert cli_main(["check", str(path)]) == 0
    path.write_text('{"index": 0}\n')
    assert cli_main(["check", str(path)]) == 2
    assert f"{path}:1" in capsys.readouterr().err


# ------------------------------------------------------------------ generated histories


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    model_name=st.sampled_from(["register", "counter"]),
    processes=st.integers(1, 6),
    ops=st.integers(1, 60),
)
def test_histories_from_a_sequential_object_are_linearizable(
    seed: int, model_name: str, processes: int, ops: int
) -> None:
    events = simulate(
        random.Random(seed), model_name, ops=ops, processes=processes, keys=("a", "b")
    )
    result = check(events, model_for(model_name), budget=None)
    assert result.valid, result.explain()


def corrupt(rng: random.Random, events: list, values: int) -> list:
    """Change one ok completion's value: the history may or may not stay linearizable."""
    oks = [n for n, e in enumerate(events) if e.type == "ok"]
    if not oks:
        return events
    n = rng.choice(oks)
    event = events[n]
    value = not event.value if event.f == "cas" else rng.randrange(values + 3)
    events = list(events)
    events[n] = type(event)(event.index, event.process, "ok", event.f, event.key, value, 0)
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    model_name=st.sampled_from(["register", "counter"]),
    processes=st.integers(1, 4),
    ops=st.integers(1, 7),
    mutate=st.booleans(),
)
def test_agrees_with_brute_force_on_small_histories(
    seed: int, model_name: str, processes: int, ops: int, mutate: bool
) -> None:
    rng = random.Random(seed)
    events = simulate(rng, model_name, ops=ops, processes=processes, values=3, crash_rate=0.2)
    if mutate:
        events = corrupt(rng, events, 3)
    model = model_for(model_name)
    assert check(events, model, budget=None).valid == brute_force(operations(events), model)


def test_thousands_of_ops_per_key_with_bounded_search() -> None:
    # Thousands of ops on one key from 10 overlapping processes, 2% of them crashing (and
    # perhaps taking effect much later): the memoised search stays within a few hundred
    # steps per op (a step count, deterministic for the seed, not a timing).
    for model_name, ops in (("register", 3000), ("counter", 2000)):
        events = simulate(
            random.Random(11), model_name, ops=ops, processes=10, values=50, crash_rate=0.02
        )
        result = check(events, model_for(model_name), budget=None)
        assert result.valid, result.explain()
        assert result.keys[X].unknown_ops > 30
        assert result.keys[X].steps < 250 * result.ops, (model_name, result.keys[X].steps)
