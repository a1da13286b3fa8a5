"""Configurations and the monitoring topology: K rings from hashing member addresses. Sans-IO.

Theory of operation
-------------------
A *configuration* is an immutable member list: ``(node, incarnation)`` pairs sorted by node,
one entry per node address. Its **id** is a hash of that list, carried on every membership
message so two members can tell at once whether they speak about the same view. Its **epoch**
counts the view changes that led to it; consensus makes the sequence of configurations a
single chain, so ``(epoch, id)`` orders views and names them.

The monitoring graph is Rapid's: K rings, ring ``r`` being the members sorted by
``hash_r(node address)`` (K independent hashes, here blake2b salted by ``r``). On every ring a
member *observes* its successor (its subject) and is *observed* by its predecessor (its
observer), so each member has K observers and K subjects, the same on every node that holds
the same configuration. The union of K random rings is an expander with high probability: a
set of failing members always has many healthy observers, which is what lets the cut detector
wait for several independent reports.

A joiner is not in the rings yet; its *expected observers* are the members that would precede
it on each ring once inserted. They are its gatekeepers: they announce its join. Because ring
positions hash the address only, a restarted process (same address, new incarnation) has the
same gatekeepers as its dead predecessor's observers.

Costs: building the rings of an n-member configuration is K sorts of n keys (each address is
hashed once per process and cached); lookups are O(K). A view change derives the next
configuration from a decided cut; :class:`ConfigurationCache` memoises that step, so the
simulator's 10,000 members share one object per view instead of building 10,000 copies (the
result is a pure function of its inputs, so sharing is invisible to the protocol).
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence

Member = tuple[str, int]
"""A member: its node path and its incarnation (a restarted process has a larger one)."""

_KEYS: dict[str, tuple[int, ...]] = {}
_KEYS_LIMIT = 1 << 18


def ring_keys(node: str, k: int) -> tuple[int, ...]:
    """The K ring positions of `node`: 64-bit hashes, one per ring, cached per address."""
    keys = _KEYS.get(node)
    if keys is None or len(keys) < k:
        data = node.encode()
        keys = tuple(
            int.from_bytes(hashlib.blake2b(data, digest_size=8, salt=b"ring%d" % r).digest())
            for r in range(k)
        )
        if len(_KEYS) >= _KEYS_LIMIT:
            _KEYS.clear()
        _KEYS[node] = keys
    return keys


def config_digest(members: Sequence[Member]) -> str:
    """The configuration id: a hash of the sorted member list (16 hex digits)."""
    digest = hashlib.blake2b(digest_size=8, person=b"coterie-config")
    for node, incarnation in members:
        digest.update(b"%s\x00%d\n" % (node.encode(), incarnation))
    return digest.hexdigest()


def cut_digest(changes: Sequence[Member]) -> str:
    """The id of a proposed cut (the sorted members it adds or removes)."""
    digest = hashlib.blake2b(digest_size=8, person=b"coterie-cut")
    for node, incarnation in changes:
        digest.update(b"%s\x00%d\n" % (node.encode(), incarnation))
    return digest.hexdigest()


class InvalidCut(ValueError):
    """A cut that cannot apply to a configuration (a member's other incarnation, say)."""


class Configuration:
    """One immutable view: members, id, epoch, and its K rings (built on first use)."""

    __slots__ = (
        "_expected",
        "_index",
        "_nodes",
        "_order",
        "_pos",
        "_ring_keys",
        "_subjects",
        "epoch",
        "id",
        "k",
        "members",
    )

    def __init__(self, epoch: int, members: Iterable[Member], k: int) -> None:
        ordered = sorted(set(members))
        nodes = tuple(node for node, _ in ordered)
        index = {node: i for i, node in enumerate(nodes)}
        if len(index) != len(nodes):
            twice = sorted(node for node, count in Counter(nodes).items() if count > 1)
            raise ValueError(f"nodes {twice} appear with two incarnations in one configuration")
        if not nodes:
            raise ValueError("a configuration has at least one member")
        self.epoch = epoch
        self.k = k
        self.members: tuple[Member, ...] = tuple(ordered)
        self.id = config_digest(self.members)
        self._nodes = nodes
        self._index = index
        self._order: list[list[int]] = []
        self._pos: list[list[int]] = []
        self._ring_keys: list[list[tuple[int, str]]] = []
        # Lookups are memoised per node: a view is shared by every member of a simulation,
        # and each member asks about the same few neighbours again and again.
        self._expected: dict[str, tuple[str, ...]] = {}
        self._subjects: dict[str, tuple[str, ...]] = {}

    def __repr__(self) -> str:
        return f"Configuration(epoch={self.epoch}, id={self.id}, size={len(self._nodes)})"

    # ------------------------------------------------------------------ membership queries

    @property
    def size(self) -> int:
        return len(self._nodes)

    @property
    def nodes(self) -> tuple[str, ...]:
        return self._nodes

    def index_of(self, node: str) -> int | None:
        return self._index.get(node)

    def incarnation_of(self, node: str) -> int | None:
        i = self._index.get(node)
        return None if i is None else self.members[i][1]

    def has(self, member: Member) -> bool:
        i = self._index.get(member[0])
        return i is not None and self.members[i][1] == member[1]

    # ------------------------------------------------------------------ rings

    def _build(self) -> None:
        nodes = self._nodes
        n = len(nodes)
        keys = [ring_keys(node, self.k) for node in nodes]
        for r in range(self.k):
            order = sorted(range(n), key=lambda i: (keys[i][r], nodes[i]))
            pos = [0] * n
            for p, i in enumerate(order):
                pos[i] = p
            self._order.append(order)
            self._pos.append(pos)
            self._ring_keys.append([(keys[i][r], nodes[i]) for i in order])

    def observers_of(self, node: str) -> tuple[str, ...]:
        """The member's K observers, ring by ring (a small cluster repeats members)."""
        if node not in self._index:
            raise KeyError(node)
        return self.expected_observers_of(node)

    def subjects_of(self, node: str) -> tuple[str, ...]:
        """The K members `node` probes, ring by ring."""
        known = self._subjects.get(node)
        if known is not None:
            return known
        i = self._index[node]
        n = len(self._nodes)
        if n == 1:
            return ()
        if not self._order:
            self._build()
        nodes = self._nodes
        subjects = tuple(
            nodes[order[(pos[i] + 1) % n]]
            for order, pos in zip(self._order, self._pos, strict=True)
        )
        self._subjects[node] = subjects
        return subjects

    def expected_observers_of(self, node: str) -> tuple[str, ...]:
        """The observers `node` has, or would have once added: a joiner's gatekeepers."""
        known = self._expected.get(node)
        if known is not None:
            return known
        nodes = self._nodes
        if len(nodes) == 1 and node in self._index:
            return ()
        if not self._order:
            self._build()
        i = self._index.get(node)
        if i is not None:
            # On every ring, the member just before it.
            observers = tuple(
                nodes[order[pos[i] - 1]] for order, pos in zip(self._order, self._pos, strict=True)
            )
        else:
            keys = ring_keys(node, self.k)
            out = []
            for r in range(self.k):
                p = bisect.bisect_left(self._ring_keys[r], (keys[r], node))
                out.append(nodes[self._order[r][p - 1]])  # p - 1 == -1 wraps to the last
            observers = tuple(out)
        if len(self._expected) < 4 * len(nodes) + 1024:
            self._expected[node] = observers
        return observers

    def observer_mask(self, observer: str, subject: str) -> int:
        """Bit r is set when `observer` is `subject`'s (expected) observer on ring r."""
        mask = 0
        for r, o in enumerate(self.expected_observers_of(subject)):
            if o == observer:
                mask |= 1 << r
        return mask

    def subject_masks(self, node: str) -> dict[str, int]:
        """`node`'s subjects, each with the mask of rings on which `node` observes it."""
        masks: dict[str, int] = {}
        for r, subject in enumerate(self.subjects_of(node)):
            masks[subject] = masks.get(subject, 0) | (1 << r)
        return masks

    # ------------------------------------------------------------------ view change

    def classify(self, member: Member) -> bool | None:
        """True if a cut with `member` removes it, False if it adds it, None if it cannot
        apply (another incarnation of that address is the member)."""
        i = self._index.get(member[0])
        if i is None:
            return False
        if self.members[i][1] == member[1]:
            return True
        return None

    def successor(self, cut: Sequence[Member]) -> Configuration:
        """The configuration after `cut`: members in it leave, the others join."""
        removed: set[str] = set()
        added: list[Member] = []
        for member in cut:
            kind = self.classify(member)
            if kind is None:
                raise InvalidCut(
                    f"cut names {member[0]!r} incarnation {member[1]}, but incarnation "
                    f"{self.incarnation_of(member[0])} is the member"
                )
            if kind:
                removed.add(member[0])
            else:
                added.append(member)
        kept = [m for m in self.members if m[0] not in removed]
        if not kept and not added:
            raise InvalidCut("a cut may not remove every member")
        return Configuration(self.epoch + 1, kept + added, self.k)


class ConfigurationCache:
    """Memoises configurations by (epoch, id) and view changes by (id, cut id). Bounded."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._configs: OrderedDict[tuple[int, str], Configuration] = OrderedDict()
        self._steps: OrderedDict[tuple[str, str], Configuration] = OrderedDict()

    def _remember(self, config: Configuration) -> Configuration:
        key = (config.epoch, config.id)
        known = self._configs.get(key)
        if known is not None:
            return known
        self._configs[key] = config
        if len(self._configs) > self.limit:
            self._configs.popitem(last=False)
        return config

    def get(self, epoch: int, config_id: str) -> Configuration | None:
        return self._configs.get((epoch, config_id))

    def build(self, epoch: int, members: Iterable[Member], k: int) -> Configuration:
        return self._remember(Configuration(epoch, members, k))

    def successor(self, config: Configuration, cut: Sequence[Member], cut_id: str) -> Configuration:
        key = (config.id, cut_id)
        known = self._steps.get(key)
        if known is not None and known.epoch == config.epoch + 1:
            return known
        nxt = self._remember(config.successor(cut))
        self._steps[key] = nxt
        if len(self._steps) > self.limit:
            self._steps.popitem(last=False)
        return nxt
