"""Replication: the new leader's no-op, timestamps, batching and pipelining under the inflight
window, probe and replicate states, conflict hints on both sides, the commit rule, never
truncating committed entries, lazy reads from storage, malformed input."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from raft_helpers import (
    LATE,
    VOTERS5,
    append_from,
    commands,
    entries,
    follower_ack,
    make_leader,
    make_node,
    of,
    persist,
)

from consensus.errors import LocalProtocolError
from consensus.log import MemoryLog
from consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ClientCommand,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    PreVote,
    RequestVote,
)
from consensus.progress import ProgressState
from consensus.ready import HardState


def reject(term: int, peer: str, reject_index: int, conflict_index: int, conflict_term: int):
    return AppendEntriesResponse(
        term, peer, False, 0, reject_index, conflict_index, conflict_term, conflict_index - 1, 0
    )


# ---------------------------------------------------------------------------- new leader


def test_a_new_leader_appends_a_no_op_of_its_term_at_once() -> None:
    leader, _, election = make_leader(now=LATE)
    noop = Entry(1, leader.term, int(EntryKind.NOOP), LATE, b"")
    assert election.entries == [noop]
    assert [m.entries for m in of(election, AppendEntries)] == [[noop], [noop]]
    assert [(m.prev_log_index, m.prev_log_term) for m in of(election, AppendEntries)] == [
        (0, 0)
    ] * 2


def test_entry_timestamps_never_go_back_across_leaders() -> None:
    # The previous leader's clock ran ahead: its last entry says 50 s; ours says 10 s.
    log = MemoryLog([Entry(1, 1, int(EntryKind.COMMAND), 50_000, b"x")])
    leader, storage, election = make_leader(log=log, hard=HardState(1), now=LATE)
    assert election.entries[0].timestamp == 50_000
    ready = leader.propose(commands("a"), LATE + 5)
    assert ready.entries[0].timestamp == 50_000
    persist(leader, ready, storage, LATE + 5)
    ready = leader.propose(commands("b"), 60_000)
    assert ready.entries[0].timestamp == 60_000


def test_proposals_off_the_leader_are_refused_with_a_hint() -> None:
    follower = make_node("n2")
    follower.step(AppendEntries(1, "n1", 0, 0, [], 0, 1), LATE)
    ready = follower.propose([ClientCommand("r1", b"x")], LATE)
    (answer,) = ready.results
    assert (answer.ok, answer.error, answer.leader_hint) == (False, "not_leader", "n1")


# ---------------------------------------------------------------------------- flow control


def replicating_leader(**config: object):
    """A 3-node leader whose followers acknowledged its no-op (both in REPLICATE)."""
    leader, storage, _ = make_leader(**config)
    for peer in ("n2", "n3"):
        follower_ack(leader, peer, 1, LATE)
    assert all(p.state is ProgressState.REPLICATE for p in leader.role.progress.values())
    return leader, storage


def test_probe_sends_one_message_at_a_time() -> None:
    leader, _storage, _ = make_leader()
    ready = leader.propose(commands(*"abcdef"), LATE)
    assert of(ready, AppendEntries) == []  # each follower still has its probe unanswered
    follower_ack(leader, "n2", 1, LATE)  # the probe is answered: stream from here
    assert leader.role.progress["n2"].state is ProgressState.REPLICATE


def test_batches_are_pipelined_up_to_the_inflight_window() -> None:
    leader, _storage = replicating_leader(max_entries_per_message=16, max_inflight=4)
    ready = leader.propose(commands(*[f"c{i}" for i in range(100)]), LATE)
    to_n2 = of(ready, AppendEntries, to="n2")
    assert [len(m.entries) for m in to_n2] == [16, 16, 16, 16]  # window full
    assert [m.prev_log_index for m in to_n2] == [1, 17, 33, 49]
    # Acknowledging the first batch frees one slot: exactly one more batch goes.
    ready = follower_ack(leader, "n2", 17, LATE)
    (more,) = of(ready, AppendEntries, to="n2")
    assert (more.prev_log_index, len(more.entries)) == (65, 16)
    # One acknowledgement covering several batches frees them all.
    ready = follower_ack(leader, "n2", 81, LATE)
    assert [m.prev_log_index for m in of(ready, AppendEntries, to="n2")] == [81, 97]


def test_batches_respect_max_bytes() -> None:
    leader, _storage = replicating_leader(max_bytes_per_message=3000, max_inflight=64)
    big = [ClientCommand(f"c{i}", bytes(1000)) for i in range(10)]
    ready = leader.propose(big, LATE)
    assert [len(m.entries) for m in of(ready, AppendEntries, to="n2")] == [2, 2, 2, 2, 2]


def test_a_heartbeat_answer_frees_a_slot_of_a_full_window() -> None:
    leader, _storage = replicating_leader(max_entries_per_message=1, max_inflight=2)
    leader.propose(commands(*"abcd"), LATE)
    assert len(leader.role.progress["n2"].inflight) == 2
    ready = leader.step(HeartbeatResponse(leader.term, "n2", 0), LATE + 50)
    assert len(of(ready, AppendEntries, to="n2")) == 1


# ---------------------------------------------------------------------------- hints


def test_follower_hint_when_its_log_is_too_short() -> None:
    follower = make_node("n2", log=MemoryLog(entries(1, 1)), hard=HardState(1))
    ready = follower.step(append_from("n1", 2, 5, 2, []), LATE)
    (answer,) = of(ready, AppendEntriesResponse)
    assert (answer.success, answer.conflict_term, answer.conflict_index) == (False, 0, 3)
    assert (answer.reject_index, answer.last_index) == (5, 2)


def test_follower_hint_names_the_conflicting_term_and_where_it_starts() -> None:
    follower = make_node("n2", log=MemoryLog(entries(1, 1, 2, 2, 2)), hard=HardState(2))
    ready = follower.step(append_from("n1", 3, 5, 3, []), LATE)
    (answer,) = of(ready, AppendEntriesResponse)
    assert (answer.conflict_term, answer.conflict_index, answer.reject_index) == (2, 3, 5)


def test_leader_skips_a_whole_conflicting_term_it_does_not_hold() -> None:
    log = MemoryLog(entries(1, 1, 1, 4, 4))
    leader, _, _ = make_leader(log=log, hard=HardState(4))  # term 5, no-op at 6
    ready = leader.step(reject(5, "n2", 5, conflict_index=4, conflict_term=2), LATE)
    (probe,) = of(ready, AppendEntries, to="n2")
    assert (probe.prev_log_index, probe.prev_log_term) == (3, 1)


def test_leader_jumps_to_the_end_of_a_conflicting_term_it_holds() -> None:
    log = MemoryLog(entries(1, 1, 1, 4, 4))
    leader, _, _ = make_leader(log=log, hard=HardState(4))
    ready = leader.step(reject(5, "n2", 5, conflict_index=2, conflict_term=1), LATE)
    (probe,) = of(ready, AppendEntries, to="n2")
    assert (probe.prev_log_index, probe.prev_log_term) == (3, 1)


def test_leader_jumps_to_the_end_of_a_short_log() -> None:
    log = MemoryLog(entries(*([1] * 1000)))
    leader, _, _ = make_leader(log=log, hard=HardState(1))
    ready = leader.step(reject(2, "n2", 1000, conflict_index=11, conflict_term=0), LATE)
    (probe,) = of(ready, AppendEntries, to="n2")
    assert probe.prev_log_index == 10  # one round trip, not a thousand


def test_stale_rejections_are_ignored() -> None:
    leader, _storage = replicating_leader()
    leader.propose(commands("a", "b"), LATE)
    follower_ack(leader, "n2", 3, LATE)
    ready = leader.step(reject(leader.term, "n2", 1, conflict_index=1, conflict_term=0), LATE)
    assert ready.messages == []
    assert leader.role.progress["n2"].match == 3


def test_a_rejection_beyond_the_leaders_log_is_dropped() -> None:
    leader, _ = replicating_leader()
    ready = leader.step(reject(leader.term, "n2", 99, conflict_index=1, conflict_term=0), LATE)
    assert ready.dropped and "prev index 99" in ready.dropped[0]


# ---------------------------------------------------------------------------- follower log


def test_follower_replaces_a_conflicting_uncommitted_suffix() -> None:
    storage = MemoryLog(entries(1, 1, 2, 2))
    follower = make_node("n2", log=storage, hard=HardState(2))
    ready = follower.step(append_from("n1", 3, 2, 1, entries(3, 3, start=3)), LATE)
    assert ready.truncate_after == 2
    assert [(e.index, e.term) for e in ready.entries] == [(3, 3), (4, 3)]


def test_follower_never_truncates_committed_entries() -> None:
    storage = MemoryLog(entries(1, 1, 1))
    follower = make_node("n2", log=storage, hard=HardState(1))
    follower.step(append_from("n1", 1, 3, 1, [], commit=3), LATE)
    assert follower.commit_index == 3
    # A (buggy or replayed) message whose entries disagree below the commit index.
    ready = follower.step(append_from("n1", 1, 1, 1, entries(9, 9, start=2)), LATE)
    assert ready.truncate_after is None and ready.entries == []
    assert follower.log.term_at(3) == 1
    # A message that re-sends committed entries and adds one appends only the new one.
    ready = follower.step(append_from("n1", 1, 1, 1, entries(1, 1, 1, start=2)), LATE)
    assert ready.truncate_after is None and [e.index for e in ready.entries] == [4]


def test_follower_commit_is_bounded_by_what_it_knows_matches() -> None:
    storage = MemoryLog(entries(1, 1, 1, 1))  # its last two entries may be stale
    follower = make_node("n2", log=storage, hard=HardState(2))
    follower.step(append_from("n1", 2, 2, 1, [], commit=4), LATE)
    assert follower.commit_index == 2
    follower.step(Heartbeat(2, "n1", 2, 2), LATE)
    assert follower.commit_index == 2


def test_malformed_append_is_dropped_and_the_node_keeps_serving() -> None:
    follower = make_node("n2")
    gap = [Entry(1, 1, 0, 0, b"a"), Entry(3, 1, 0, 0, b"c")]
    ready = follower.step(AppendEntries(1, "n1", 0, 0, gap, 0, 1), LATE)
    assert ready.dropped and "entry 3 where 2 was expected" in ready.dropped[0]
    assert ready.entries == [] and follower.log.last_index == 0
    ready = follower.step(AppendEntries(1, "n1", 0, 0, entries(1), 0, 1), LATE)
    assert ready.entries == entries(1)


def test_vote_requests_and_answers_from_strangers_are_dropped() -> None:
    """A node outside our configuration (a removed server, a node never added) can neither
    campaign here nor depose anyone with a higher term in an answer."""
    node = make_node("n2")
    for message in (
        PreVote(9, "mallory", 100, 9),
        RequestVote(9, "mallory", 100, 9),
        HeartbeatResponse(9, "mallory", 0),
        AppendEntriesResponse(9, "mallory", True, 0, 0, 0, 0, 0, 0),
    ):
        ready = node.step(message, LATE)
        assert ready.dropped and node.term == 0 and not ready.messages


def test_leader_traffic_from_outside_the_configuration_is_followed() -> None:
    """A lagging member, or a node being added, may not yet know the current leader as a
    member (its configuration is older): it follows it all the same (Raft thesis 4.1); the
    term rules keep that safe."""
    node = make_node("n2")
    ready = node.step(Heartbeat(9, "n7", 0, 1), LATE)
    assert not ready.dropped and node.term == 9 and node.leader_id == "n7"


def test_step_only_takes_peer_messages() -> None:
    with pytest.raises(LocalProtocolError):
        make_node().step(ClientCommand("r", b""), LATE)


# ---------------------------------------------------------------------------- commit


def test_old_term_entries_commit_only_with_an_entry_of_the_current_term() -> None:
    log = MemoryLog(entries(1, 2))
    leader, _, _ = make_leader(log=log, hard=HardState(2))  # term 3, no-op at 3
    follower_ack(leader, "n2", 2, LATE)  # a majority holds 1..2, of older terms
    assert leader.commit_index == 0
    ready = follower_ack(leader, "n2", 3, LATE)
    assert leader.commit_index == 3
    assert [e.index for e in ready.committed] == [1, 2, 3]


def test_leader_counts_itself_only_once_its_own_write_is_durable() -> None:
    leader, storage, _ = make_leader(voters=VOTERS5)
    for peer in ("n2", "n3", "n4", "n5"):
        follower_ack(leader, peer, 1, LATE)
    ready = leader.propose(commands("a"), LATE)
    follower_ack(leader, "n2", 2, LATE)
    follower_ack(leader, "n3", 2, LATE)
    assert leader.commit_index == 1  # two followers + a leader that has not written it yet
    ready = persist(leader, ready, storage, LATE)
    assert leader.commit_index == 2
    assert [e.index for e in ready.committed] == [2]


def test_heartbeats_carry_a_commit_index_the_follower_holds() -> None:
    leader, storage = replicating_leader()
    ready = leader.propose(commands(*"abc"), LATE)
    persist(leader, ready, storage, LATE)
    follower_ack(leader, "n2", 4, LATE)
    assert leader.commit_index == 4
    ready = leader.tick(LATE + 50)
    assert {dest: m.commit for dest, m in ready.messages if isinstance(m, Heartbeat)} == {
        "n2": 4,
        "n3": 1,
    }


# ---------------------------------------------------------------------------- lazy reads


class CountingLog(MemoryLog):
    """A MemoryLog that counts how many entries the core pulled out of it."""

    def __init__(self, items: list[Entry]) -> None:
        super().__init__(items)
        self.yielded = 0
        self.calls: list[tuple[int, int, int]] = []

    def entries(self, start: int, stop: int, max_bytes: int) -> Iterator[Entry]:
        self.calls.append((start, stop, max_bytes))
        for entry in super().entries(start, stop, max_bytes):
            self.yielded += 1
            yield entry


def test_entries_for_a_lagging_follower_are_read_lazily_batch_by_batch() -> None:
    items = [Entry(i, 1, 0, 0, bytes(100)) for i in range(1, 5001)]
    storage = CountingLog(items)
    leader, _, _ = make_leader(log=storage, hard=HardState(1), max_inflight=2)
    storage.yielded = 0
    storage.calls.clear()
    leader.step(reject(2, "n2", 5000, conflict_index=1, conflict_term=0), LATE)
    leader.step(AppendEntriesResponse(2, "n2", True, 64, 0, 0, 0, 64, 0), LATE)
    # probe + two pipelined batches of 64: only what was sent was read, never the whole log
    assert storage.yielded <= 64 * 4
    assert all(
        max_bytes == leader.config.max_bytes_per_message for _, _, max_bytes in storage.calls
    )
