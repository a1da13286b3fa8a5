"""Comparing two logs entry by entry, streaming both (Sirius' operators needed this to find
the events one node had and another had lost).

:func:`diff_logs` walks both logs in index order at once, reading raw frames, so memory stays
flat whatever their size. It yields :class:`OnlyIn` for each maximal run of indexes that one
log holds and the other does not, and :class:`Mismatch` for an index both hold with different
contents (the frame checksum covers index, term, kind, timestamp and payload, so equal
checksums mean equal entries). Indexes below either log's first index are not compared: one
node may simply have compacted them into a snapshot; the caller reports the two first indexes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from wal.format import ENTRY_BODY_HEAD, PREFIX
from wal.log import SegmentedLog


@dataclasses.dataclass(frozen=True)
class OnlyIn:
    side: str  # "A" or "B": the log that holds the entries
    first: int
    last: int


@dataclasses.dataclass(frozen=True)
class Mismatch:
    index: int
    term_a: int
    crc_a: int
    term_b: int
    crc_b: int


Difference = OnlyIn | Mismatch


def diff_logs(
    a: SegmentedLog, b: SegmentedLog, progress: Callable[[int, int], None] | None = None
) -> Iterator[Difference]:
    """Differences between `a` and `b` from the larger of their first indexes on."""
    start = max(a.first_index, b.first_index)
    stop = max(a.last_index, b.last_index) + 1
    left = a.read_range_raw(start, stop)
    right = b.read_range_raw(start, stop)
    run: list = [None, 0, 0]  # side, first, last of the OnlyIn run being built

    def extend(side: str, index: int) -> Iterator[Difference]:
        if run[0] == side and run[2] == index - 1:
            run[2] = index
            return
        yield from flush()
        run[:] = [side, index, index]

    def flush() -> Iterator[Difference]:
        if run[0] is not None:
            yield OnlyIn(run[0], run[1], run[2])
            run[0] = None

    x = next(left, None)
    y = next(right, None)
    done = 0
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            assert x is not None
            yield from extend("A", x[0])
            current = x[0]
            x = next(left, None)
        elif x is None or y[0] < x[0]:
            yield from extend("B", y[0])
            current = y[0]
            y = next(right, None)
        else:
            yield from flush()
            current = x[0]
            crc_a, crc_b = PREFIX.unpack_from(x[1])[1], PREFIX.unpack_from(y[1])[1]
            if crc_a != crc_b or x[1] != y[1]:
                yield Mismatch(current, _term(x[1]), crc_a, _term(y[1]), crc_b)
            x = next(left, None)
            y = next(right, None)
        done += 1
        if progress is not None and done % 4096 == 0:
            progress(current - start + 1, stop - start)
    yield from flush()
    if progress is not None:
        progress(stop - start, stop - start)


def _term(frame: bytes) -> int:
    return ENTRY_BODY_HEAD.unpack_from(frame, PREFIX.size)[1]
