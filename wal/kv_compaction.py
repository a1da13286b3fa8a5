"""Live key-value compaction (Sirius-style): keep the newest entry per key, purge old tombstones.

For logs whose entries are PUTs and DELETEs of keys, an entry is dead once a newer entry for
the same key exists: replaying the log without it yields the same state. A DELETE that is the
newest entry of its key is a *tombstone*; it must stay while older entries of the key might
still be replayed, but once it is older than a configurable age it is purged too (Sirius kept
tombstones forever, so a log of short-lived keys only ever grew).

Theory of operation
-------------------
Compaction runs in three phases so that appends never stop:

1. **plan** (:func:`plan`, on the log's owner thread, cheap): take
   :meth:`SegmentedLog.compaction_view` up to `through_index`, the byte ranges of every
   segment up to that index. `through_index` must be *committed* (never truncated later):
   compacting away an entry because of a newer one that a Raft conflict then removes would
   lose the key. Segments that are sealed and end at or before it are the rewrite targets.
2. **rewrite** (:func:`rewrite`, any thread, the slow part): read every range once to find
   the newest index of each key (memory grows with the number of distinct keys, as in any kv
   compaction), then copy each target's surviving frames, byte for byte with their
   checksums, to ``<segment>.kv.tmp`` in batches closed by commit records, fsync it. The
   log object is not touched, so the owner keeps appending meanwhile; the files read are
   immutable (sealed) or only read below `through_index`, which appends never rewrite.
3. **install** (:func:`install`, on the owner thread again): each temporary replaces its
   segment with an atomic rename (:meth:`SegmentedLog.replace_sealed`), unless the segment
   changed in between (then the rewrite is dropped, nothing lost).

An entry of kind COMMAND carries the operations `key_of` finds in its payload (one, or
several for a batch of commands in one entry). It is removed when every one of them is dead:
a newer operation on the same key exists up to `through_index`, or it is the newest on its
key but a DELETE whose entry is older than ``now_ms - purge_deletes_older_than_ms``. Entries
below the log's compaction base are removed too (a snapshot covers them). Targets are
rewritten oldest first, so a tombstone is never purged while an older entry of its key is
still on disk (the crash in between leaves the tombstone, never a resurrected key). For the
same reason a tombstone stays when an entry that survives still holds a dead operation on
its key, and when an :data:`OPAQUE` entry (one that may hold operations `key_of` cannot
read) precedes it.

The last entry of every target is always kept: it pins the segment's index range (its last
index and term stay exact, the next segment still lines up) at the cost of at most one dead
entry per segment; if that entry is dead, the tombstone of its key is kept as well, or a
replay would bring the kept value back. The log then has holes: ``get`` returns None for a
removed index, ``read_range`` skips it, ``term_at`` answers the term of the surviving entry
before it.

The default key function decodes the kv example's payloads: ``msgpack [op, key, value?]`` with
`op` ``"put"`` or ``"delete"`` (:func:`encode_put`, :func:`encode_delete`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from array import array
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
from google_crc32c import value as crc32c

from wal.entry import EntryKind
from wal.format import (
    ENTRY_BODY_HEAD,
    ENTRY_OVERHEAD,
    FLAG_KV_COMPACTED,
    FORMAT_VERSION,
    HEADER_SIZE,
    PREFIX,
    SegmentHeader,
    encode_commit,
    encode_header,
    header_crc_of,
)
from wal.fsutil import TMP_SUFFIX, read_exact, remove_if_exists, write_all
from wal.log import SegmentedLog, SegmentRange
from wal.segment import Segment, iter_raw


class _Opaque:
    __slots__ = ()

    def __repr__(self) -> str:
        return "OPAQUE"


OPAQUE: Any = _Opaque()
"""What a key function returns for an entry that may hold key-value operations it cannot
read: the entry is kept, and no tombstone after it is purged (it might rewrite that key)."""

Op = tuple[bytes, bool]
KeyOf = Callable[[bytes], "Op | list[Op] | _Opaque | None"]
"""payload -> ``(key, is_delete)`` for one operation, a list of them for an entry carrying
several, None for an entry that touches no key, or :data:`OPAQUE` (see there)."""

BATCH_MARK = 0xC1  # msgpack never uses this byte: a payload starting with it is a batch

Progress = Callable[[int, int], None]
"""progress(bytes done, bytes total), called as the rewrite phase reads."""

BATCH_BYTES = 1 << 20  # frames per commit record in a rewritten segment
REWRITE_SUFFIX = ".kv" + TMP_SUFFIX  # recovery removes it as debris after a crash


def encode_put(key: str | bytes, value: bytes) -> bytes:
    """The kv example's payload for setting `key` to `value`."""
    return msgpack.packb(["put", key, value])


def encode_delete(key: str | bytes) -> bytes:
    """The kv example's payload for deleting `key`."""
    return msgpack.packb(["delete", key])


def msgpack_kv_key(payload: bytes) -> Op | list[Op] | _Opaque | None:
    """Default `key_of`: ``msgpack [op, key, value?]``, op "put" or "delete"; or a *batch*
    of such commands in one entry: the byte 0xC1 then a msgpack array of their payloads (the
    layout `consensus.shell.batching` gives an entry carrying several client commands).

    The key is returned re-encoded as msgpack so that keys of different types ("1", b"1",
    1) stay distinct. A payload of another shape touches no key (None): the entry is kept,
    never an error. A batch that does not decode is :data:`OPAQUE`.
    """
    if payload[:1] == bytes((BATCH_MARK,)):
        try:
            commands = msgpack.unpackb(payload[1:], raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return OPAQUE
        if not isinstance(commands, list) or not all(isinstance(c, bytes) for c in commands):
            return OPAQUE
        ops = [_single_op(command) for command in commands]
        return [op for op in ops if op is not None]
    return _single_op(payload)


def _single_op(payload: bytes) -> Op | None:
    try:
        decoded = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if not isinstance(decoded, list) or not decoded:
        return None
    op = decoded[0]
    if (op == "put" and len(decoded) == 3) or (op == "delete" and len(decoded) == 2):
        key = decoded[1]
        if isinstance(key, str | bytes | int):
            return msgpack.packb(key), op == "delete"
    return None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one compaction will read and rewrite; taken on the log's owner thread."""

    directory: pathlib.Path
    through_index: int
    base_index: int
    ranges: list[SegmentRange]

    @property
    def targets(self) -> list[SegmentRange]:
        return [r for r in self.ranges if r.target]


@dataclasses.dataclass
class Rewritten:
    """A target's replacement, fsynced under a temporary name, waiting for install."""

    old: SegmentRange
    tmp_path: pathlib.Path
    segment: Segment
    removed: int
    purged: int  # of `removed`, tombstones purged for their age
    bytes_before: int


@dataclasses.dataclass(frozen=True)
class Result:
    segments_rewritten: int
    entries_removed: int
    tombstones_purged: int
    bytes_freed: int


def plan(log: SegmentedLog, through_index: int | None = None) -> Plan:
    """Phase 1 (owner thread). `through_index` defaults to the log's last index, which is
    only right when nothing can truncate the log (an offline tool)."""
    through = log.last_index if through_index is None else through_index
    return Plan(log.directory, through, log.base_index, log.compaction_view(through))


def rewrite(
    plan: Plan,
    *,
    now_ms: int,
    purge_deletes_older_than_ms: int | None,
    key_of: KeyOf = msgpack_kv_key,
    progress: Progress | None = None,
) -> list[Rewritten]:
    """Phase 2 (any thread): the rewritten targets, oldest first. Touches no log object.

    `purge_deletes_older_than_ms` None keeps every newest DELETE. Stops at a target that
    changed or vanished since the plan: a later rewrite could purge a tombstone whose older
    entries are in it.
    """
    if not plan.targets:
        return []
    # Progress counts frame bytes: every range is read once, every target twice more.
    total = sum(r.read_end for r in plan.ranges) + 2 * sum(r.read_end for r in plan.targets)
    meter = _Meter(progress, total)
    newest: dict[bytes, int] = {}
    first_opaque: int | None = None
    try:
        for index, frame in _frames(plan.ranges, plan.through_index, meter):
            ops = _ops_of(frame, key_of)
            if ops is OPAQUE:
                if first_opaque is None and index > plan.base_index:
                    first_opaque = index
                continue
            for key, _is_delete in ops:
                newest[key] = index
    except _TargetChanged:
        return []
    purge_before = (
        None if purge_deletes_older_than_ms is None else now_ms - purge_deletes_older_than_ms
    )
    rules = _Rules(plan, newest, purge_before, key_of, first_opaque)
    rewritten: list[Rewritten] = []
    try:
        for target in plan.targets:
            try:
                outcome = _rewrite_one(target, plan.through_index, rules, meter)
            except _TargetChanged:
                break
            if outcome is not None:
                rewritten.append(outcome)
    except BaseException:
        discard(rewritten)
        raise
    return rewritten


def install(log: SegmentedLog, rewritten: list[Rewritten]) -> Result:
    """Phase 3 (owner thread): swap the rewritten segments in, oldest first, stopping at
    the first one whose segment changed meanwhile (see :func:`rewrite`)."""
    swapped = removed = purged = freed = 0
    for number, item in enumerate(rewritten):
        if not log.replace_sealed(item.old, item.segment, item.tmp_path):
            discard(rewritten[number + 1 :])
            break
        swapped += 1
        removed += item.removed
        purged += item.purged
        freed += item.bytes_before - item.segment.data_end
    return Result(swapped, removed, purged, freed)


def discard(rewritten: list[Rewritten]) -> None:
    """Delete the temporaries of rewrites that will not be installed."""
    for item in rewritten:
        remove_if_exists(item.tmp_path)


def compact(
    log: SegmentedLog,
    *,
    now_ms: int,
    purge_deletes_older_than_ms: int | None,
    through_index: int | None = None,
    key_of: KeyOf = msgpack_kv_key,
    progress: Progress | None = None,
) -> Result:
    """All three phases in a row on the calling thread (waltool, tests)."""
    work = plan(log, through_index)
    rewritten = rewrite(
        work,
        now_ms=now_ms,
        purge_deletes_older_than_ms=purge_deletes_older_than_ms,
        key_of=key_of,
        progress=progress,
    )
    return install(log, rewritten)


# -- internals -------------------------------------------------------------------------------


class _TargetChanged(Exception):
    """A target is no longer the file the plan saw (truncated into, replaced, deleted)."""


class _Meter:
    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def advance(self, size: int) -> None:
        self.done += size
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)


class _Rules:
    """Which entries of a target die; see the module docstring."""

    def __init__(
        self,
        plan: Plan,
        newest: dict[bytes, int],
        purge_before: int | None,
        key_of: KeyOf,
        first_opaque: int | None,
    ) -> None:
        self.base_index = plan.base_index
        self.newest = newest
        self.purge_before = purge_before
        self.key_of = key_of
        self.first_opaque = first_opaque
        # Keys with a dead operation in an entry that stays (a segment's last entry, or an
        # entry whose other operations live): their tombstones must stay too, or a replay
        # would bring the kept value back. Targets are decided oldest first, so a key is
        # pinned before any of its later tombstones is looked at.
        self.pinned: set[bytes] = set()

    def why_removed(self, index: int, frame: bytes, *, last: bool) -> str | None:
        """Why the entry goes (None: it stays). Every operation in it must be dead."""
        if index <= self.base_index:
            return None if last else REMOVED_BELOW_BASE
        ops = _ops_of(frame, self.key_of)
        if ops is OPAQUE or not ops:
            return None
        superseded = [key for key, _ in ops if self.newest.get(key, index) > index]
        tombstones = [key for key, is_delete in ops if is_delete and key not in superseded]
        purgeable = (
            self.purge_before is not None
            and (self.first_opaque is None or self.first_opaque > index)
            and _timestamp(frame) < self.purge_before
            and not any(key in self.pinned for key in tombstones)
        )
        if not last and len(superseded) + (len(tombstones) if purgeable else 0) == len(ops):
            return REMOVED_TOMBSTONE if tombstones else REMOVED_SUPERSEDED
        self.pinned.update(superseded)
        return None


REMOVED_BELOW_BASE = "below the compaction base"
REMOVED_SUPERSEDED = "superseded"
REMOVED_TOMBSTONE = "old tombstone"


def _ops_of(frame: bytes, key_of: KeyOf) -> list[Op] | _Opaque:
    """The key-value operations of an entry frame ([] for none), or OPAQUE."""
    kind = frame[PREFIX.size + 16]  # the kind byte follows index and term
    if kind != EntryKind.COMMAND:
        return []  # noops and configuration entries touch no key
    found = key_of(frame[ENTRY_OVERHEAD:])
    if found is None:
        return []
    if found is OPAQUE:
        return OPAQUE
    return found if isinstance(found, list) else [found]


def _timestamp(frame: bytes) -> int:
    return ENTRY_BODY_HEAD.unpack_from(frame, PREFIX.size)[3]


def _frames(ranges: list[SegmentRange], through: int, meter: _Meter) -> Iterator[tuple[int, bytes]]:
    """(index, frame) of every entry up to `through` in `ranges`, checksums checked."""
    for seg in ranges:
        yield from _segment_frames(seg, through, meter)


def _segment_frames(seg: SegmentRange, through: int, meter: _Meter) -> Iterator[tuple[int, bytes]]:
    try:
        fd = os.open(seg.path, os.O_RDONLY)
    except FileNotFoundError:
        if seg.target:
            raise _TargetChanged from None
        return  # deleted meanwhile (prefix compaction, reset): nothing left to supersede
    try:
        if seg.target and not _unchanged(fd, seg):
            raise _TargetChanged
        for index, frame in iter_raw(fd, seg.path, HEADER_SIZE, seg.read_end, 0, through + 1):
            meter.advance(len(frame))
            yield index, frame
    finally:
        os.close(fd)


def _unchanged(fd: int, seg: SegmentRange) -> bool:
    """Whether a target file is still the version planned (same header, same size)."""
    header_crc, data_end, _commit_crc = seg.identity
    return (
        os.fstat(fd).st_size == data_end
        and header_crc_of(read_exact(fd, HEADER_SIZE, 0)) == header_crc
    )


def _decided(
    target: SegmentRange, through: int, rules: _Rules, meter: _Meter
) -> Iterator[tuple[int, bytes, str | None]]:
    """(index, frame, why it is removed or None) for each entry of `target`, in order.

    The last entry is always kept: it pins the segment's index range.
    """
    frames = _segment_frames(target, through, meter)
    current = next(frames, None)
    while current is not None:
        following = next(frames, None)
        index, frame = current
        yield index, frame, rules.why_removed(index, frame, last=following is None)
        current = following


def _rewrite_one(
    target: SegmentRange, through: int, rules: _Rules, meter: _Meter
) -> Rewritten | None:
    """Write `target`'s survivors to a temporary file; None if nothing would be removed."""
    # A first read decides whether a rewrite pays off, so that a compaction that finds
    # nothing new to remove writes nothing.
    if not any(why for _i, _f, why in _decided(target, through, rules, meter)):
        return None
    tmp_path = target.path.with_name(target.path.name + REWRITE_SUFFIX)
    writer = _SegmentWriter(tmp_path, target.first_index)
    removed = purged = 0
    try:
        for index, frame, why in _decided(target, through, rules, meter):
            if why is None:
                writer.add(index, frame)
            else:
                removed += 1
                purged += why == REMOVED_TOMBSTONE
        segment = writer.finish()
    except BaseException:
        writer.abort()
        raise
    return Rewritten(target, tmp_path, segment, removed, purged, target.identity[1])


class _SegmentWriter:
    """Builds a kv-compacted segment file from raw frames, batch by batch."""

    def __init__(self, tmp_path: pathlib.Path, first_index: int) -> None:
        self.tmp_path = tmp_path
        self.final_path = tmp_path.with_name(tmp_path.name.removesuffix(REWRITE_SUFFIX))
        self.first_index = first_index
        self.header = encode_header(first_index, FLAG_KV_COMPACTED)
        self.fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        write_all(self.fd, (self.header,), 0)
        self.end = HEADER_SIZE
        self.offsets = array("Q")
        self.indexes = array("Q")
        self.run_starts = array("Q")
        self.run_terms = array("Q")
        self.last_commit_crc = 0
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.pending_first = 0
        self.last_index = first_index - 1

    def add(self, index: int, frame: bytes) -> None:
        if not self.pending:
            self.pending_first = index
        term = ENTRY_BODY_HEAD.unpack_from(frame, PREFIX.size)[1]
        if not self.run_terms or self.run_terms[-1] != term:
            self.run_starts.append(index)
            self.run_terms.append(term)
        self.offsets.append(self.end + self.pending_size)
        self.indexes.append(index)
        self.pending.append(frame)
        self.pending_size += len(frame)
        self.last_index = index
        if self.pending_size >= BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        frames = b"".join(self.pending)
        # Everything in this file is durable before the file becomes visible, so the batch's
        # own last index is a truthful synced_through.
        commit = encode_commit(
            self.pending_first, len(self.pending), crc32c(frames), self.last_index
        )
        write_all(self.fd, (frames, commit), self.end)
        self.end += len(frames) + len(commit)
        self.last_commit_crc = PREFIX.unpack_from(commit)[1]
        self.pending.clear()
        self.pending_size = 0

    def finish(self) -> Segment:
        if self.pending:
            self._flush()
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        return Segment(
            self.final_path,
            SegmentHeader(FORMAT_VERSION, FLAG_KV_COMPACTED, self.first_index),
            header_crc=header_crc_of(self.header),
            data_end=self.end,
            last_index=self.last_index,
            count=len(self.offsets),
            run_starts=self.run_starts,
            run_terms=self.run_terms,
            last_commit_crc=self.last_commit_crc,
            offsets=self.offsets,
            indexes=self.indexes,
        )

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        remove_if_exists(self.tmp_path)
