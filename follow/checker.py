"""Gap detection: what a follower checks about every record before it keeps it (sans-IO).

Sirius' client-facing nodes behind repeaters silently missed events. Here nothing is kept
unless it continues exactly what the follower already holds:

* the stream's :class:`~follow.records.Header` must start right after the follower's last
  entry (``prev_seq``) and agree on that entry's term (``prev_term``); a different term
  means the source holds another history (another cluster, or a log restored wrongly);
* each entry's sequence number must be the next one: a higher one is a *gap*, a lower one
  a *duplicate* (the source re-sent or reordered);
* its term may never drop below the previous entry's (terms only grow along a log);
* its checksum must match the one recomputed from the fields received;
* the :class:`~follow.records.Trailer` must name the follower's next sequence: a server that
  says it sent up to N when fewer arrived left a gap at the end of the range.

:meth:`GapChecker.check` answers None (keep it; the checker moves on) or a :class:`Problem`
(keep nothing more from this response, log it, count it, and ask again from
:attr:`GapChecker.next_seq`). Problems are counted by kind in :attr:`GapChecker.problems`.
"""

from __future__ import annotations

import collections
import dataclasses

from follow.records import EntryRecord, Header, Trailer, entry_crc

GAP = "gap"
DUPLICATE = "duplicate"
TERM = "term_regression"
CHECKSUM = "checksum"
DIVERGED = "diverged"
MISPLACED = "misplaced_stream"


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str  # one of the module constants
    expected: int  # the sequence number the follower needed
    got: int  # the sequence number (or prev_seq) it received
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.expected}: {self.detail}"


class GapChecker:
    """Checks records against the follower's position: `next_seq` and the previous term."""

    def __init__(self, next_seq: int, last_term: int) -> None:
        self.next_seq = next_seq
        self.last_term = last_term
        self.problems: collections.Counter[str] = collections.Counter()

    def reset(self, next_seq: int, last_term: int) -> None:
        """The follower's position changed outside the stream (a snapshot was installed)."""
        self.next_seq = next_seq
        self.last_term = last_term

    def header(self, header: Header) -> Problem | None:
        expected = self.next_seq - 1
        if header.prev_seq != expected:
            return self._problem(
                MISPLACED, header.prev_seq, f"stream continues {header.prev_seq}, not {expected}"
            )
        if header.prev_term != self.last_term:
            return self._problem(
                DIVERGED,
                header.prev_seq,
                f"source has term {header.prev_term} at {expected}, this follower "
                f"{self.last_term}: the source holds another history",
            )
        return None

    def check(self, record: EntryRecord) -> Problem | None:
        seq, term = record.seq, record.term
        expected = self.next_seq
        if seq != expected:
            if seq > expected:
                return self._problem(GAP, seq, f"entries {expected}..{seq - 1} missing")
            return self._problem(DUPLICATE, seq, f"entry {seq} again, expected {expected}")
        if term < self.last_term:
            return self._problem(TERM, seq, f"term {term} after term {self.last_term}")
        actual = entry_crc(seq, term, record.kind, record.timestamp, record.payload)
        if actual != record.crc:
            return self._problem(
                CHECKSUM, seq, f"crc {actual:#010x} computed, {record.crc:#010x} sent"
            )
        self.next_seq = seq + 1
        self.last_term = term
        return None

    def no_header(self, record: EntryRecord) -> Problem:
        """An entry arrived before the stream's header: its place cannot be vouched for."""
        return self._problem(MISPLACED, record.seq, "an entry before the stream's header")

    def after_trailer(self, record: object) -> Problem:
        return self._problem(MISPLACED, self.next_seq, f"{type(record).__name__} after the trailer")

    def trailer(self, trailer: Trailer) -> Problem | None:
        if trailer.next_seq != self.next_seq:
            if trailer.next_seq > self.next_seq:
                return self._problem(
                    GAP,
                    trailer.next_seq,
                    f"stream ended claiming {trailer.next_seq - 1}, entries from "
                    f"{self.next_seq} missing",
                )
            return self._problem(
                MISPLACED, trailer.next_seq, f"stream ended at {trailer.next_seq}, behind"
            )
        return None

    def _problem(self, kind: str, got: int, detail: str) -> Problem:
        self.problems[kind] += 1
        return Problem(kind, self.next_seq, got, detail)
