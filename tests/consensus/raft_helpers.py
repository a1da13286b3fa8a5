"""Helpers for the core's unit tests: build a node, drive it into a role by hand-made messages,
pick messages out of a Ready, and carry out a Ready's writes the way a caller must."""

from __future__ import annotations

import random
from typing import Any, TypeVar

from consensus.config import RaftConfig
from consensus.log import MemoryLog
from consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ClientCommand,
    Entry,
    EntryKind,
    PreVoteResponse,
    RequestVoteResponse,
)
from consensus.node import RaftNode
from consensus.ready import HardState, Ready

T = TypeVar("T")
VOTERS3 = ("n1", "n2", "n3")
VOTERS5 = ("n1", "n2", "n3", "n4", "n5")
LATE = 10_000  # a time past any election timeout of a node started at 0


def make_node(
    node_id: str = "n1",
    voters: tuple[str, ...] = VOTERS3,
    *,
    log: MemoryLog | None = None,
    hard: HardState | None = None,
    seed: int = 1,
    now: int = 0,
    **config: Any,
) -> RaftNode:
    return RaftNode(
        RaftConfig(node_id, voters, **config),
        log if log is not None else MemoryLog(),
        hard or HardState(),
        random.Random(seed),
        now,
    )


def entries(*terms: int, start: int = 1, timestamp: int = 0) -> list[Entry]:
    """Entries with the given terms at consecutive indexes from ``start``."""
    return [
        Entry(start + i, term, int(EntryKind.COMMAND), timestamp, f"e{start + i}".encode())
        for i, term in enumerate(terms)
    ]


def of(ready: Ready, cls: type[T], to: str | None = None) -> list[T]:
    """The messages of type ``cls`` in ``ready`` (to ``to`` only, if given)."""
    return [m for dest, m in ready.messages if isinstance(m, cls) and (to is None or dest == to)]


def persist(node: RaftNode, ready: Ready, log: MemoryLog, now: int) -> Ready:
    """Carry out ``ready``'s writes on ``log`` and report them durable; returns the new Ready."""
    if ready.truncate_after is not None:
        log.truncate_after(ready.truncate_after)
    if ready.entries:
        log.append(ready.entries)
        last = ready.entries[-1]
        return node.persisted(last.index, last.term, now)
    return Ready()


def commands(*names: str) -> list[ClientCommand]:
    return [ClientCommand(name, name.encode()) for name in names]


def make_leader(
    node_id: str = "n1",
    voters: tuple[str, ...] = VOTERS3,
    *,
    log: MemoryLog | None = None,
    hard: HardState | None = None,
    now: int = LATE,
    **config: Any,
) -> tuple[RaftNode, MemoryLog, Ready]:
    """A node elected leader by hand (pre-vote, then votes from every peer); its no-op is
    written and persisted. Returns the node, its storage and the Ready of its election."""
    storage = log if log is not None else MemoryLog()
    node = make_node(node_id, voters, log=storage, hard=hard, **config)
    ready = node.tick(now)
    peers = [v for v in voters if v != node_id]
    if node.config.pre_vote:
        for peer in peers:
            ready = node.step(PreVoteResponse(node.term + 1, peer, True), now)
            if node.role.pre_vote is False:  # type: ignore[union-attr]
                break
    for peer in peers:
        if node.is_leader:
            break
        ready = node.step(RequestVoteResponse(node.term, peer, True), now)
    assert node.is_leader, node
    election = ready
    persist(node, ready, storage, now)
    return node, storage, election


def follower_ack(node: RaftNode, peer: str, match: int, now: int, round_: int = 0) -> Ready:
    return node.step(
        AppendEntriesResponse(node.term, peer, True, match, 0, 0, 0, match, round_), now
    )


def append_from(
    leader: str,
    term: int,
    prev_index: int,
    prev_term: int,
    batch: list[Entry],
    commit: int = 0,
    round_: int = 0,
) -> AppendEntries:
    return AppendEntries(term, leader, prev_index, prev_term, batch, commit, round_)
