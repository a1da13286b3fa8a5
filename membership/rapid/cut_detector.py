"""Rapid's multi-node cut detector: turn edge alerts into a view-change proposal only when a cut
is clear. Sans-IO.

Theory of operation
-------------------
An observer that suspects its subject (or a gatekeeper that admits a joiner) *reports* it for
the rings on which it observes that subject. Reports about one subject are counted per ring,
as a K-bit mask, so a report repeated by gossip or by a retry counts once. Masks only grow
within a configuration; a view change starts a fresh detector.

With watermarks H (high) and L (low), a subject with

* at least H reports is **stable**: enough independent observers agree;
* L to H-1 reports is **unstable**: something is happening, the picture is not clear yet;
* fewer than L is noise and ignored (one flaky link, one observer's false suspicion).

A proposal is the set of stable subjects, and it exists only while **no subject is unstable**:
when a group of members fails together, the detector waits until every one of them is clear
and proposes them as one cut, instead of one view change per member. Because every member
sees the same reports (gossip), members almost always propose the very same cut, which lets
Fast Paxos agree in one step.

*Implicit reports* (Rapid's invalidation): an observer that is itself being cut (L or more
reports) may never report its subject, for instance when both crashed. So for an unstable
subject, every ring on which its observer is itself in flux counts as reported. This is kept
incrementally: when a member enters the flux, the subjects it observes get the bits.

Two timing rules, both outside Rapid's filter proper:

* the proposal is held until the stable set has not changed for ``settle`` seconds, so that
  alerts still on their way (batched, gossiped) join the cut rather than start a second one;
* :meth:`lingering` lists subjects unstable for ``reinforce_after``: their observers that did
  not report them then do (Rapid's reinforcement), so a subject stuck between the watermarks
  (a crashed joiner, a member only some observers can reach) cannot block every proposal.
"""

from __future__ import annotations

from membership.rapid.topology import Configuration, Member


class CutDetector:
    def __init__(self, config: Configuration, k: int, high: int, low: int, now: float) -> None:
        self.config = config
        self.high = high
        self.low = low
        self.full_mask = (1 << k) - 1
        self.reports: dict[Member, int] = {}
        self._implicit: dict[Member, int] = {}
        self.stable: set[Member] = set()
        # Insertion order is time order, so the first entry is the oldest unstable subject.
        self.unstable: dict[Member, float] = {}
        self._flux_nodes: set[str] = set()
        self._unstable_joiners: dict[Member, None] = {}  # ordered: replays are deterministic
        self.changed_at = now
        self.implicit_bits = 0

    # ------------------------------------------------------------------ input

    def valid(self, subject: Member) -> bool:
        """A report can be about a member (its removal) or a non-member address (its join)."""
        return self.config.classify(subject) is not None

    def add(self, subject: Member, mask: int, now: float) -> int:
        """Merge reports about `subject`; returns the bits that were new (0: nothing new).

        The caller has checked ``valid(subject)`` and that `mask` fits in K bits.
        """
        reports = self.reports
        old = reports.get(subject, 0)
        new = old | mask
        if new == old:
            return 0
        reports[subject] = new
        # Only a count at or above L can change anything; a stable subject stays stable.
        if subject not in self.stable and (
            (new | self._implicit.get(subject, 0)).bit_count() >= self.low
        ):
            self._classify(subject, now)
        return new & ~old

    def known(self, subject: Member) -> int:
        """Every bit counted for `subject`: reported or implied."""
        return self.reports.get(subject, 0) | self._implicit.get(subject, 0)

    # ------------------------------------------------------------------ output

    def proposal(self, now: float, settle: float) -> tuple[Member, ...] | None:
        if not self.stable or self.unstable or now < self.changed_at + settle:
            return None
        return tuple(sorted(self.stable))

    def proposal_due(self, settle: float) -> float | None:
        """When :meth:`proposal` will answer, if nothing changes before; None if it cannot."""
        if not self.stable or self.unstable:
            return None
        return self.changed_at + settle

    def lingering(self, now: float, after: float) -> list[Member]:
        # Same arithmetic as linger_due, so a tick at that deadline finds them.
        return [s for s, since in self.unstable.items() if now >= since + after]

    def linger_due(self, after: float) -> float | None:
        for since in self.unstable.values():
            return since + after
        return None

    # ------------------------------------------------------------------ internals

    def _classify(self, subject: Member, now: float) -> None:
        count = (self.reports.get(subject, 0) | self._implicit.get(subject, 0)).bit_count()
        if count >= self.high:
            if subject not in self.stable:
                self.stable.add(subject)
                entered = self.unstable.pop(subject, None) is None
                self._unstable_joiners.pop(subject, None)
                self.changed_at = now
                if entered:
                    self._entered_flux(subject, now)
        elif count >= self.low and subject not in self.unstable:
            self.unstable[subject] = now
            self.changed_at = now
            if not self.config.has(subject):
                self._unstable_joiners[subject] = None
            self._entered_flux(subject, now)

    def _entered_flux(self, subject: Member, now: float) -> None:
        """`subject` just reached L reports: apply the implicit reports this makes true."""
        node = subject[0]
        config = self.config
        self._flux_nodes.add(node)
        if subject in self.unstable:
            # Its own observers that are already in flux cannot be expected to report it.
            mask = 0
            for r, observer in enumerate(config.expected_observers_of(node)):
                if observer != node and observer in self._flux_nodes:
                    mask |= 1 << r
            self._imply(subject, mask, now)
        if not config.has(subject):
            return  # a joiner observes nobody yet
        # The members it observes lose it as a reporter on those rings.
        for r, target_node in enumerate(config.subjects_of(node)):
            if target_node == node:
                continue
            target = config.members[config.index_of(target_node)]  # type: ignore[index]
            if target in self.unstable:
                self._imply(target, 1 << r, now)
        for joiner in list(self._unstable_joiners):
            mask = config.observer_mask(node, joiner[0])
            if mask:
                self._imply(joiner, mask, now)

    def _imply(self, subject: Member, mask: int, now: float) -> None:
        have = self.reports.get(subject, 0) | self._implicit.get(subject, 0)
        new = mask & ~have
        if not new or subject not in self.unstable:
            return
        self._implicit[subject] = self._implicit.get(subject, 0) | new
        self.implicit_bits += new.bit_count()
        self._classify(subject, now)
