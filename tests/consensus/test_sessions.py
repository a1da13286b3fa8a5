"""The exactly-once session layer: registration, sequenced commands with cached answers,
gaps, acknowledgements, expiry by the log's time, close, snapshots, batches, bad input."""

from __future__ import annotations

import random
from typing import Any, NamedTuple

import pytest

from consensus import sessions
from consensus.sessions import (
    MALFORMED,
    MAX_CACHED_RESULTS,
    SEQUENCE_GAP,
    STALE_SEQUENCE,
    UNKNOWN_SESSION,
    SessionStateMachine,
    encode_command,
    encode_keepalive,
    encode_plain,
    encode_register,
    encode_unregister,
    session_error,
)
from consensus.shell.batching import decode_commands, encode_commands


class Meta(NamedTuple):
    index: int
    term: int
    timestamp: int
    position: int = 0


class Counter:
    """A user state machine: counts, remembers what it applied, can be told to fail."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []
        self.closed: list[tuple[int, bool, int]] = []

    def apply(self, command: bytes, meta: Any) -> Any:
        if command == b"boom":
            raise RuntimeError("boom")
        self.applied.append(command)
        return len(self.applied)

    def query(self, payload: bytes) -> Any:
        return len(self.applied)

    def session_closed(self, session: int, expired: bool, meta: Any) -> None:
        self.closed.append((session, expired, meta.index))

    def snapshot(self) -> bytes:
        return b"\n".join(self.applied)

    def restore(self, data: bytes) -> None:
        self.applied = data.split(b"\n") if data else []


class Driver:
    """Feeds commands as committed entries, one per index, time advancing as told."""

    def __init__(self, machine: SessionStateMachine | None = None) -> None:
        self.user = Counter()
        self.machine = machine or SessionStateMachine(self.user)
        self.index = 0

    def __call__(self, command: bytes, at: int) -> Any:
        self.index += 1
        return self.machine.apply(command, Meta(self.index, 1, at))


def test_a_retried_command_is_applied_once_and_answered_from_the_cache() -> None:
    run = Driver()
    session = run(encode_register(1000), 0)["session"]
    assert session == 1 << 16  # index 1, position 0: the same on every replica
    first = run(encode_command(session, 1, 1, b"a"), 10)
    assert first == 1
    assert run(encode_command(session, 1, 1, b"a"), 20) == first  # a retry
    assert run(encode_command(session, 2, 1, b"b"), 30) == 2
    assert run(encode_command(session, 1, 1, b"a"), 40) == first  # still cached (ack was 1)
    assert run.user.applied == [b"a", b"b"]


def test_commands_take_effect_in_sequence_order_and_gaps_are_refused() -> None:
    run = Driver()
    session = run(encode_register(1000), 0)["session"]
    gap = run(encode_command(session, 2, 1, b"b"), 1)
    assert session_error(gap) == SEQUENCE_GAP and gap["expected"] == 1
    assert run.user.applied == []
    assert run(encode_command(session, 1, 1, b"a"), 2) == 1
    assert run(encode_command(session, 2, 1, b"b"), 3) == 2


def test_acknowledged_answers_are_forgotten() -> None:
    run = Driver()
    session = run(encode_register(1000), 0)["session"]
    for seq in (1, 2, 3):
        run(encode_command(session, seq, 1, b"x"), seq)
    run(encode_keepalive(session, 3), 4)  # the client has the answers to 1 and 2
    assert set(run.machine.sessions[session].results) == {3}
    stale = run(encode_command(session, 1, 3, b"x"), 5)
    assert session_error(stale) == STALE_SEQUENCE
    assert run.user.applied == [b"x"] * 3


def test_answers_kept_per_session_are_bounded() -> None:
    run = Driver()
    session = run(encode_register(10_000), 0)["session"]
    for seq in range(1, MAX_CACHED_RESULTS + 3):
        run(encode_command(session, seq, 1, b"x"), 1)
    results = run.machine.sessions[session].results
    assert len(results) == MAX_CACHED_RESULTS and min(results) == 3


class NoScans(dict):
    """A session's answer cache that fails any walk over all of it."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the answer cache was scanned")

    def keys(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the answer cache was scanned")


def test_forgetting_answers_never_scans_the_cache() -> None:
    # Regression: every command scanned its session's whole answer cache (to forget what the
    # client acknowledged, and min() once it was full): with thousands of commands in flight
    # that cost ~80 us per command on every replica, 10x the cluster's throughput.
    run = Driver()
    session = run(encode_register(10_000), 0)["session"]
    run.machine.sessions[session].results = NoScans()
    lag = 3000  # the client acknowledges answers this far behind
    total = MAX_CACHED_RESULTS + 2000
    for seq in range(1, total + 1):
        assert run(encode_command(session, seq, max(1, seq - lag), b"x"), seq) == seq
    cached = run.machine.sessions[session]
    assert len(cached.results) == lag + 1 and cached.oldest == total - lag  # ack: below it
    # Over the cap with no acknowledgement at all, the oldest answers go first.
    for seq in range(total + 1, total + MAX_CACHED_RESULTS + 2):
        run(encode_command(session, seq, 1, b"x"), seq)
    assert len(cached.results) == MAX_CACHED_RESULTS
    assert dict.__contains__(cached.results, total + MAX_CACHED_RESULTS + 1)
    assert not dict.__contains__(cached.results, cached.oldest - 1)


def test_sessions_expire_by_the_entries_time_in_deadline_order() -> None:
    run = Driver()
    short = run(encode_register(100), 0)["session"]
    other = run(encode_register(100), 0)["session"]
    long = run(encode_register(1000), 0)["session"]
    run(encode_keepalive(other, 1), 90)  # renewed: now due at 190
    run(encode_plain(b"tick"), 100)  # exactly the timeout: not yet
    assert short in run.machine.sessions
    run(encode_plain(b"tick"), 101)
    assert short not in run.machine.sessions and other in run.machine.sessions
    run(encode_plain(b"tick"), 500)
    assert set(run.machine.sessions) == {long}
    assert [(s, expired) for s, expired, _ in run.user.closed] == [(short, True), (other, True)]
    assert run.machine.expired == 2
    answer = run(encode_command(short, 1, 1, b"late"), 501)
    assert session_error(answer) == UNKNOWN_SESSION and b"late" not in run.user.applied


def test_time_never_goes_backwards_even_if_an_entry_says_so() -> None:
    run = Driver()
    session = run(encode_register(100), 0)["session"]
    keeper = run(encode_register(10_000), 0)["session"]
    run(encode_plain(b"x"), 500)  # expires the first
    run(encode_plain(b"x"), 50)
    assert session not in run.machine.sessions and run.machine.clock == 500
    assert keeper in run.machine.sessions
    # With no session open there is nothing to time: the clock is the entry's own time.
    run(encode_unregister(keeper), 60)
    run(encode_plain(b"x"), 40)
    assert run.machine.clock == 40


def test_unregister_closes_a_session() -> None:
    run = Driver()
    session = run(encode_register(1000), 0)["session"]
    assert run(encode_unregister(session), 1) == {"session": session, "closed": True}
    assert run.user.closed == [(session, False, 2)]
    assert session_error(run(encode_unregister(session), 2)) == UNKNOWN_SESSION
    assert session_error(run(encode_keepalive(session, 1), 3)) == UNKNOWN_SESSION


def test_a_failing_command_has_a_cached_deterministic_result() -> None:
    run = Driver()
    session = run(encode_register(1000), 0)["session"]
    failed = run(encode_command(session, 1, 1, b"boom"), 1)
    assert failed["error"] == "command_failed" and failed["type"] == "RuntimeError"
    assert run(encode_command(session, 1, 1, b"boom"), 2) == failed


def test_a_restored_snapshot_continues_exactly_like_the_original() -> None:
    script = [(encode_register(300), 0), (encode_register(5000), 0)]
    original = Driver()
    sessions = [original(command, at)["session"] for command, at in script]
    for seq in range(1, 6):
        original(encode_command(sessions[0], seq, 1, f"a{seq}".encode()), seq * 10)
    copy = Driver()
    copy.machine.restore(original.machine.snapshot())
    copy.index = original.index
    later = [
        encode_command(sessions[0], 5, 1, b"a5"),  # a retry: cached on both
        encode_command(sessions[0], 6, 6, b"a6"),
        encode_plain(b"x"),
        encode_command(sessions[1], 1, 1, b"b1"),
    ]
    times = [100, 200, 800, 900]  # the first session expires at 800 on both
    assert [original(c, t) for c, t in zip(later, times, strict=True)] == [
        copy(c, t) for c, t in zip(later, times, strict=True)
    ]
    assert original.machine.snapshot() == copy.machine.snapshot()
    assert sessions[0] not in copy.machine.sessions and copy.machine.expired == 1


def test_commands_inside_a_batch_entry_are_handled_one_by_one() -> None:
    """How the shell's StateMachineActor uses it: decode the entry's batch, apply each
    command with its position (a session registered inside a batch gets a distinct id)."""
    machine = SessionStateMachine(Counter())
    entry = encode_commands([encode_register(1000), encode_register(1000), b"plain"])
    results = [
        machine.apply(command, Meta(7, 1, 0, position))
        for position, command in enumerate(decode_commands(entry))
    ]
    assert results[0]["session"] == 7 << 16 and results[1]["session"] == 7 << 16 | 1
    assert results[2] == 1
    a, b = results[0]["session"], results[1]["session"]
    second = encode_commands(
        [
            encode_command(a, 1, 1, b"x"),
            encode_command(b, 1, 1, b"y"),
            encode_command(a, 1, 1, b"x"),
        ]
    )
    answers = [
        machine.apply(command, Meta(8, 1, 1, position))
        for position, command in enumerate(decode_commands(second))
    ]
    assert answers == [2, 3, 2]  # the duplicate inside the same batch is not applied again


def test_plain_commands_pass_through_and_the_mark_is_escaped() -> None:
    run = Driver()
    assert run(b"hello", 0) == 1
    marked = bytes([0xC1]) + b"raw"
    assert encode_plain(b"hello") == b"hello"
    assert run(encode_plain(marked), 1) == 2
    assert run.user.applied == [b"hello", marked]


@pytest.mark.parametrize(
    "command",
    [
        bytes([0xC1]) + b"C" + b"\xff\xff",
        bytes([0xC1]) + b"C" + b"\x92\x01\x02",  # two fields for four
        encode_command(1, 1, 1, b"x")[:-3],
        bytes([0xC1]) + b"Z",
        encode_register(0),
        bytes([0xC1]) + b"R" + b"\x91\xa1x",  # a timeout that is a string
    ],
)
def test_malformed_session_commands_are_answered_not_raised(command: bytes) -> None:
    run = Driver()
    assert session_error(run(command, 0)) == MALFORMED
    assert run.user.applied == []


def test_restore_names_what_is_wrong() -> None:
    machine = SessionStateMachine(Counter())
    with pytest.raises(ValueError, match="shorter than its header"):
        machine.restore(b"CTSESS0")
    with pytest.raises(ValueError, match="bad header"):
        machine.restore(b"CTSESS02" + b"X" * 32)
    with pytest.raises(ValueError, match="bad header"):
        machine.restore(b"CTSESS01" + b"\xff" * 8)  # a table longer than the snapshot
    with pytest.raises(ValueError, match="does not decode"):
        machine.restore(b"CTSESS01" + bytes([3, 0, 0, 0, 0, 0, 0, 0]) + b"\xc1\xc1\xc1")


def test_without_sessions_the_snapshot_is_the_users_alone_and_restores_from_it() -> None:
    """A cluster that never opened a session keeps the user's plain snapshot format (and a
    snapshot written before sessions existed restores); once a session is open the table is
    written, and a replica restored from the plain format agrees with one that replayed."""
    run = Driver()
    run(b"a", 100)
    run(b"b", 90)  # the leaders' clocks went backwards: the clock does not matter yet
    assert run.machine.snapshot() == b"a\nb"
    copy = Driver()
    copy.machine.restore(b"a\nb")
    copy.index = run.index
    assert copy.user.applied == [b"a", b"b"] and copy.machine.sessions == {}
    for driver in (run, copy):
        session = driver(encode_register(1000), 95)["session"]
        assert driver(encode_command(session, 1, 1, b"c"), 96) == 3
    assert run.machine.snapshot() == copy.machine.snapshot()
    assert run.machine.snapshot().startswith(b"CTSESS01")


@pytest.mark.parametrize("seed", range(20))
def test_expiry_matches_a_plain_model_under_random_traffic(seed: int) -> None:
    """The lazily corrected deadline heap expires exactly the sessions, in exactly the order,
    that a scan of every session before every entry would."""
    rng = random.Random(seed)
    run = Driver()
    now = 0
    model: dict[int, tuple[int, int]] = {}  # session -> (last active, timeout)
    expected: list[int] = []
    clock = 0
    for _ in range(400):
        now += rng.choice([0, 1, 5, 20, 60])
        clock = max(clock, now) if model else now
        due = sorted((last + timeout, sid) for sid, (last, timeout) in model.items())
        for deadline, sid in due:
            if deadline < clock:
                expected.append(sid)
                del model[sid]
        live = list(model)
        if not live or rng.random() < 0.15:
            timeout = rng.choice([30, 50, 100])
            sid = run(encode_register(timeout), now)["session"]
            model[sid] = (clock, timeout)
        else:
            sid = rng.choice(live)
            assert run(encode_keepalive(sid, 0), now)["session"] == sid
            model[sid] = (clock, model[sid][1])
    assert [sid for sid, expired, _ in run.user.closed if expired] == expected
    assert set(run.machine.sessions) == set(model)


def test_registers_beyond_the_open_session_limit_are_refused_until_some_expire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    run = Driver()
    opened = [run(encode_register(100), 0)["session"] for _ in range(3)]
    refused = run(encode_register(100), 10)
    assert session_error(refused) == sessions.TOO_MANY_SESSIONS and refused["limit"] == 3
    assert set(run.machine.sessions) == set(opened)
    # Once they expire (by the log's time), a register succeeds again.
    assert "session" in run(encode_register(100), 500)
    assert len(run.machine.sessions) == 1
