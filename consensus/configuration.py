"""Cluster configuration: who votes, who only learns, and how that changes, one server at a time.

Theory of operation
-------------------
A :class:`Membership` is the full configuration: the voters, the learners (members that
receive the log but neither vote nor count for a majority) and each member's address (opaque
to the core; the shell uses it to reach a node it has never heard of). It travels in the log as
a ``CONFIGURATION`` entry whose payload is :meth:`Membership.encode`, and in snapshots and
InstallSnapshot as the same bytes.

A configuration takes effect as soon as it is *appended* to a log, committed or not (the Raft
thesis, section 4.1): a leader counts majorities with the newest configuration in its log, and a
node whose log loses a configuration entry to a conflict falls back to the previous one.
:class:`ConfigState` follows that: the base (from the snapshot, or the bootstrap
configuration) plus the configuration entries of the log after it.

Changes are *single-server* changes (thesis 4.1 rather than joint consensus): add a learner,
promote one learner to voter, remove one server. Any two majorities of configurations that
differ by one voter overlap, so no two leaders can be elected in one term by the old and the
new configuration; that holds only if at most one change is uncommitted at a time, and only
once the leader has committed an entry of its own term (the fix to the single-server bug found
after the thesis), which the leader enforces. Joint consensus would allow arbitrary changes in
one step but needs two-phase entries and a two-majority rule everywhere; adding servers as
learners first gives the same availability with the simpler rule.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Sequence

import msgpack

from actors.wire import message
from consensus.errors import ConsensusError, RemoteProtocolError
from consensus.messages import Entry, EntryKind

CONFIGURATION = int(EntryKind.CONFIGURATION)


class InvalidChange(ConsensusError):
    """A membership change that makes no sense for the current configuration (e.g. adding a
    server that is already a member). Not retryable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Membership:
    """The full configuration. ``addresses`` holds ``(node id, address)`` pairs, sorted."""

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        voters, learners = tuple(self.voters), tuple(self.learners)
        addresses = tuple(sorted((str(k), str(v)) for k, v in self.addresses))
        object.__setattr__(self, "voters", voters)
        object.__setattr__(self, "learners", learners)
        object.__setattr__(self, "addresses", addresses)
        members = voters + learners
        if len(set(members)) != len(members):
            raise ValueError(f"a node is listed twice in voters {voters} / learners {learners}")
        if any(not isinstance(m, str) or not m for m in members):
            raise ValueError(f"node ids are non-empty strings: {members}")
        named = [node for node, _ in addresses]
        if len(set(named)) != len(named):
            raise ValueError(f"a node has two addresses: {addresses}")

    @property
    def members(self) -> tuple[str, ...]:
        return self.voters + self.learners

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def address_of(self, node: str) -> str | None:
        for name, address in self.addresses:
            if name == node:
                return address
        return None

    def encode(self) -> bytes:
        fields = {
            "v": list(self.voters),
            "l": list(self.learners),
            "a": [list(a) for a in self.addresses],
        }
        return msgpack.packb(fields, use_bin_type=True)

    @classmethod
    def decode(cls, payload: bytes) -> Membership:
        """The configuration in ``payload``; ValueError saying what is wrong otherwise."""
        try:
            data = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise ValueError(f"configuration does not decode: {exc}") from exc
        if type(data) is not dict or not {"v", "l"} <= data.keys():
            raise ValueError("a configuration is a map with voters 'v' and learners 'l'")
        voters, learners, addresses = data["v"], data["l"], data.get("a", [])
        if not all(type(x) is list for x in (voters, learners, addresses)):
            raise ValueError("configuration fields must be arrays")
        if not all(type(n) is str for n in voters + learners):
            raise ValueError("node ids must be strings")
        if not all(
            type(a) is list and len(a) == 2 and all(type(x) is str for x in a) for a in addresses
        ):
            raise ValueError("addresses must be [node id, address] pairs of strings")
        return cls(tuple(voters), tuple(learners), tuple((a[0], a[1]) for a in addresses))

    def diff(self, other: Membership) -> str:
        """A short account of how ``other`` differs from this one, for logs."""
        parts = [f"+voter {v}" for v in other.voters if v not in self.voters]
        parts += [f"-voter {v}" for v in self.voters if v not in other.voters]
        parts += [f"+learner {v}" for v in other.learners if v not in self.learners]
        parts += [f"-learner {v}" for v in self.learners if v not in other.learners]
        return ", ".join(parts) or "unchanged"

    def __str__(self) -> str:
        learners = f" learners {list(self.learners)}" if self.learners else ""
        return f"voters {list(self.voters)}{learners}"


def voters_changed(old: Membership, new: Membership) -> int:
    """How many voters differ between two configurations (symmetric difference)."""
    return len(set(old.voters) ^ set(new.voters))


# ---------------------------------------------------------------------------- changes


@message("raft.add_learner")
class AddLearner:
    """Add ``node`` as a learner; the leader promotes it to voter once it has caught up
    (``RaftConfig.auto_promote``). ``address`` is where the shell reaches it.
    ``member_addresses`` are ``(node id, address)`` pairs of current members the
    configuration holds no address for yet (a bootstrap configuration carries none): the new
    configuration records them, so the node being added, which knows nobody, can reach every
    member it may one day have to lead or vote with."""

    node: str
    address: str = ""
    member_addresses: tuple[tuple[str, str], ...] = ()


@message("raft.promote_learner")
class PromoteLearner:
    """Make learner ``node`` a voter (refused while it lags more than ``promote_lag``)."""

    node: str


@message("raft.remove_server")
class RemoveServer:
    """Remove ``node`` (voter or learner). When it is the leader itself and ``transfer_first``
    holds, the leader first hands leadership to the most caught-up voter and refuses with a
    retryable error, so the removal happens at the new leader without a leaderless gap."""

    node: str
    transfer_first: bool = True


MembershipChange = AddLearner | PromoteLearner | RemoveServer
MEMBERSHIP_CHANGES = (AddLearner, PromoteLearner, RemoveServer)


def apply_change(current: Membership, change: MembershipChange) -> Membership:
    """The configuration after ``change``; :class:`InvalidChange` if it does not apply."""
    node = change.node
    if isinstance(change, AddLearner):
        if node in current.members:
            raise InvalidChange(f"{node} is already a member ({current})")
        known = {name for name, _ in current.addresses}
        filled = tuple(
            (name, address)
            for name, address in change.member_addresses
            if name in current.members and name not in known and address
        )
        added = ((node, change.address),) if change.address else ()
        return Membership(
            current.voters, (*current.learners, node), current.addresses + filled + added
        )
    if isinstance(change, PromoteLearner):
        if node not in current.learners:
            raise InvalidChange(f"{node} is not a learner ({current})")
        learners = tuple(n for n in current.learners if n != node)
        return Membership((*current.voters, node), learners, current.addresses)
    if isinstance(change, RemoveServer):
        if node not in current.members:
            raise InvalidChange(f"{node} is not a member ({current})")
        if current.voters == (node,):
            raise InvalidChange(f"cannot remove {node}, the last voter")
        return Membership(
            tuple(n for n in current.voters if n != node),
            tuple(n for n in current.learners if n != node),
            tuple(a for a in current.addresses if a[0] != node),
        )
    raise InvalidChange(f"not a membership change: {change!r}")


# ---------------------------------------------------------------------------- in the log


class ConfigState:
    """The configuration in effect for a log: ``base`` (at ``base_index``, the snapshot) plus
    every configuration entry after it, newest last. Entries are kept only down to the
    snapshot: older ones are folded into the base when a snapshot is taken."""

    __slots__ = ("base", "base_index", "indexes", "memberships")

    def __init__(self, base: Membership, base_index: int) -> None:
        self.base = base
        self.base_index = base_index
        self.indexes: list[int] = []
        self.memberships: list[Membership] = []

    @property
    def current(self) -> Membership:
        return self.memberships[-1] if self.memberships else self.base

    @property
    def latest_index(self) -> int:
        """Index of the newest configuration entry (the base index if none)."""
        return self.indexes[-1] if self.indexes else self.base_index

    def at(self, index: int) -> Membership:
        """The configuration in effect after entry ``index`` (>= base_index)."""
        position = bisect.bisect_right(self.indexes, index)
        return self.memberships[position - 1] if position else self.base

    def uncommitted(self, commit_index: int) -> int:
        """How many configuration entries lie beyond ``commit_index``."""
        return len(self.indexes) - bisect.bisect_right(self.indexes, commit_index)

    def appended(self, entries: Sequence[Entry]) -> bool:
        """Entries were put in the log at ``entries[0].index`` on, replacing anything there.
        Returns True if the configuration in effect changed."""
        if not entries:
            return False
        before = self.current
        self.truncate_from(entries[0].index)
        for entry in entries:
            if entry.kind == CONFIGURATION:
                self.indexes.append(entry.index)
                self.memberships.append(decode_entry(entry))
        return self.current != before

    def truncate_from(self, index: int) -> None:
        cut = bisect.bisect_left(self.indexes, index)
        del self.indexes[cut:]
        del self.memberships[cut:]

    def compact(self, index: int) -> None:
        """A snapshot now covers ``index``: fold older entries into the base."""
        if index <= self.base_index:
            return
        self.base = self.at(index)
        self.base_index = index
        cut = bisect.bisect_right(self.indexes, index)
        del self.indexes[:cut]
        del self.memberships[:cut]

    def reset(self, base: Membership, base_index: int) -> None:
        """An installed snapshot replaced the log up to ``base_index``."""
        self.base, self.base_index = base, base_index
        self.indexes.clear()
        self.memberships.clear()


def decode_entry(entry: Entry) -> Membership:
    """The configuration a CONFIGURATION entry carries; RemoteProtocolError if malformed (a
    peer sent it; a local log is checked when it is read at start-up)."""
    try:
        return Membership.decode(entry.payload)
    except ValueError as exc:
        raise RemoteProtocolError(f"configuration entry {entry.index}: {exc}") from exc


def check_entries(entries: Iterable[Entry]) -> None:
    """Reject a batch carrying a configuration entry that does not decode."""
    for entry in entries:
        if entry.kind == CONFIGURATION:
            decode_entry(entry)
