"""The checker can fail: plant a bug in the core, run seeded random schedules, and the checker
must catch it, name the seed, and catch it again identically when that seed is replayed; the
same seed without the bug passes. (Figure 8's commit rule is planted in test_sim_scenarios.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from consensus.follower import Follower
from consensus.leader import Leader
from consensus.messages import AppendEntriesResponse, RequestVoteResponse
from consensus.node import RaftNode

from .checker import InvariantViolation
from .schedule import run_random

MAX_SEEDS = 120


def commit_without_majority(self: Leader) -> None:
    """Commits whatever the leader itself holds durably."""
    node = self.node
    log = node.log
    if log.durable_index > node.commit_index and log.term_at(log.durable_index) == node.term:
        node.advance_commit(log.durable_index)
        self.committed_in_term = True


def vote_twice(self: RaftNode, msg: Any) -> None:
    """Grants any up-to-date candidate, forgetting the vote already cast in this term."""
    granted = self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)
    if granted:
        if self.voted_for != msg.source:
            self.voted_for = msg.source
            self._hard_state_dirty = True
        self.role.vote_granted()
    self.send(msg.source, RequestVoteResponse(self.term, self.id, granted))


def acknowledge_before_persisting(self: Follower, *, force: bool) -> None:
    """Claims entries it has only received, not yet made durable."""
    node = self.node
    self.ack_owed = False
    if self.accepted > self.acked or force:
        self.acked = max(self.acked, self.accepted)
        assert node.leader_id is not None
        node.send(
            node.leader_id,
            AppendEntriesResponse(
                node.term, node.id, True, self.accepted, 0, 0, 0, node.log.last_index, 0
            ),
        )


def read_without_confirmation(self: Leader, request_ids: list[str]) -> None:
    """Serves reads at once from local state, as PySyncObj and Sirius do."""
    self.node.reads_to_serve.extend((self.node.commit_index, r) for r in request_ids)


BUGS: dict[str, tuple[type, str, Callable[..., Any], str]] = {
    "commit without majority": (Leader, "_maybe_commit", commit_without_majority, "durably"),
    "vote twice in a term": (RaftNode, "_decide_vote", vote_twice, "vote|election safety"),
    "acknowledge before persisting": (
        Follower,
        "_acknowledge",
        acknowledge_before_persisting,
        "durably|committed|state-machine|completeness",
    ),
    "read without confirmation": (
        Leader,
        "read",
        read_without_confirmation,
        "linearizability",
    ),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_checker_catches_a_planted_bug(bug: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls, attribute, replacement, expected = BUGS[bug]
    monkeypatch.setattr(cls, attribute, replacement)
    caught: InvariantViolation | None = None
    seed = -1
    for seed in range(MAX_SEEDS):
        try:
            run_random(seed, duration=1500)
        except InvariantViolation as exc:
            caught = exc
            break
    assert caught is not None, f"{bug}: not caught in {MAX_SEEDS} seeds"
    message = str(caught)
    assert f"seed {seed}," in message and f"replay {seed}" in message
    assert re.search(expected, message), message
    # The seed replays exactly: the same violation at the same event.
    with pytest.raises(InvariantViolation) as again:
        run_random(seed, duration=1500)
    assert str(again.value) == message
    # And it is the planted bug that fails it.
    monkeypatch.undo()
    run_random(seed, duration=1500)
