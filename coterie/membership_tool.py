"""``coterie nodetool add`` and ``remove``: membership changes driven from the command line.

Each change is one :class:`~consensus.shell.protocol.ChangeMembership` ask to the leader. The
leader may change while we talk to it (a transfer before it removes itself, an election), so
:func:`change` follows the hint of a refusal, rediscovers the leader when there is none, and
retries what is only refused "not now" (another change in progress, a transfer under way, a
learner still behind) with a short backoff until the deadline. A request id is fresh per
attempt: a retried add that had in fact committed comes back "already a member", which
:func:`add` recognises.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING

from actors.paths import ANY_SYSTEM
from consensus.shell.protocol import ChangeMembership, MembershipChangeResponse
from coterie.errors import CliError

if TYPE_CHECKING:
    from coterie.nodetool import Tool

RETRY = frozenset(
    {
        "not_leader",
        "leadership_transfer",
        "config_change_in_progress",
        "learner_behind",
        "outcome_unknown",
        "superseded",
    }
)
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_ADDRESS = re.compile(r"[^\s:/@]+:(\d{1,5})\Z")


def check_node_id(node_id: str) -> None:
    if not _NODE_ID.match(node_id):
        raise CliError(f"NODE_ID {node_id!r}: use letters, digits, '-' and '_' (at most 64)")


def check_address(address: str) -> None:
    match = _ADDRESS.match(address)
    if match is None:
        raise CliError(f"ADDRESS {address!r}: not host:port")
    if not 0 < int(match.group(1)) < 65536:
        raise CliError(f"ADDRESS {address!r}: port must be between 1 and 65535")


def _say(text: str) -> None:
    print(text, flush=True)


def change(
    tool: Tool, kind: str, node_id: str, address: str, deadline: float
) -> MembershipChangeResponse:
    """Ask the leader for one change until it is answered for good or ``deadline`` passes;
    the last answer (ok or not)."""
    path: str | None = None
    backoff = 0.05
    last: MembershipChangeResponse | None = None
    last_error = "no leader found"
    while time.monotonic() < deadline:
        if path is None:
            found = tool.leader()
            path = found[0] if found else None
        if path is None:
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.5)
            continue
        request = ChangeMembership(uuid.uuid4().hex, kind, node_id, address)
        try:
            last = tool.ask(path, request)
        except Exception as exc:
            last_error = f"{path}: {exc}"
            path = None
            continue
        if last.ok or last.error not in RETRY:
            return last
        if last.error == "leadership_transfer":
            _say(f"leadership is being handed to {last.leader_hint} first")
        last_error = f"{last.error}" + (f" ({last.detail})" if last.detail else "")
        hint = last.leader_hint
        if last.error in ("not_leader", "leadership_transfer") and hint:
            path = f"coterie://{ANY_SYSTEM}@{hint}/user/node"
        elif last.error == "not_leader":
            path = None
        time.sleep(backoff)
        backoff = min(backoff * 2, 0.5)
    if last is not None and not last.ok:
        raise CliError(f"{kind} {node_id}: gave up waiting; last answer: {last_error}")
    raise CliError(f"{kind} {node_id}: gave up waiting; {last_error}")


def add(tool: Tool, node_id: str, address: str | None, wait: float) -> int:
    check_node_id(node_id)
    if address is None:
        if tool.config is None:
            raise CliError("ADDRESS is required unless --config lists the node")
        try:
            address = tool.config.node(node_id).address
        except Exception as exc:
            raise CliError(f"NODE_ID {node_id!r}: {exc}") from exc
    check_address(address)
    started = time.monotonic()
    deadline = started + wait
    answer = change(tool, "add_learner", node_id, address, deadline)
    if answer.ok:
        _say(f"{node_id} ({address}) added as a learner at index {answer.index}")
    elif answer.error == "invalid_membership_change" and node_id in (
        *answer.voters,
        *answer.learners,
    ):
        _say(f"{node_id} is already a member")
    else:
        raise CliError(f"add {node_id}: {answer.error}: {answer.detail}")
    return _promote(tool, node_id, started, deadline)


def _promote(tool: Tool, node_id: str, started: float, deadline: float) -> int:
    """Watch the learner catch up, print its progress, promote it when close enough."""
    shown = ""
    while time.monotonic() < deadline:
        found = tool.leader()
        if found is None:
            time.sleep(0.1)
            continue
        path, leader = found
        if node_id in leader.voters:
            _say(f"{node_id} is a voter ({time.monotonic() - started:.2f}s after the request)")
            return 0
        if node_id not in leader.learners:
            raise CliError(f"add {node_id}: it is no longer a member (voters {leader.voters})")
        match = dict(leader.matches).get(node_id, 0)
        progress = f"{node_id} learner: replicated {match} of {leader.last_index}"
        if progress != shown:
            _say(progress)
            shown = progress
        answer = _try(tool, path, "promote", node_id)
        if answer is not None and answer.ok:
            _say(f"{node_id} promoted to voter at index {answer.index}")
            continue  # the next round confirms it among the voters
        time.sleep(0.1)
    raise CliError(f"add {node_id}: not promoted in time (still a learner)")


def _try(tool: Tool, path: str, kind: str, node_id: str) -> MembershipChangeResponse | None:
    try:
        answer: MembershipChangeResponse = tool.ask(
            path, ChangeMembership(uuid.uuid4().hex, kind, node_id, "")
        )
    except Exception:
        return None
    return answer


def remove(tool: Tool, node_id: str, wait: float) -> int:
    check_node_id(node_id)
    started = time.monotonic()
    answer = change(tool, "remove", node_id, "", started + wait)
    if not answer.ok:
        raise CliError(f"remove {node_id}: {answer.error}: {answer.detail}")
    _say(
        f"{node_id} removed at index {answer.index} "
        f"({time.monotonic() - started:.2f}s); voters now {', '.join(answer.voters)}"
    )
    found = tool.leader()
    if found is not None:
        _say(f"leader: {found[1].node_id} (term {found[1].term})")
    return 0
