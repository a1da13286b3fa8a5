"""Opening a log directory: find its segments, trust or rebuild their indexes, recover the tail.

Theory of operation
-------------------
* Leftover temporary files (``*.tmp``) are debris of an interrupted atomic write: removed.
* Segments are ordered by the first index in their names. A segment whose whole index range
  lies at or below the compaction base is dead (compaction deletes it after recording the
  base; a crash can leave it behind): removed.
* Every segment but the last is *sealed*: it was fsynced and truncated to its data before its
  successor was created, so any damage in it is corruption and opening fails naming file and
  offset. Its index comes from its sidecar when the sidecar matches the segment exactly;
  otherwise the segment is scanned in full and the sidecar rewritten.
* The last segment is *open*: it is always scanned. A torn or damaged tail (incomplete record,
  bad checksum, batch without its commit record) is cut back to the last whole committed batch
  and the cut is logged, unless the scan found proof that the damaged entries had been fsynced
  (see `wal.scan`), in which case opening fails: that is corruption, never a torn write.
* Finally the segments must line up: the first covers the index after the base, each dense
  segment ends just before the next begins, terms never go backwards.

In read-only mode nothing is modified: debris and dead segments are skipped, not removed, and a
damaged tail is reported in :attr:`Recovered.tail_damage` instead of being cut.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib

import structlog

from wal.errors import CorruptRecord, WalCorruption
from wal.format import (
    COMMIT_MARKER,
    COMMIT_SIZE,
    HEADER_SIZE,
    PREFIX,
    SEGMENT_SUFFIX,
    SegmentHeader,
    decode_header,
    header_crc_of,
)
from wal.fsutil import TMP_SUFFIX, fsync_dir, preallocate, read_exact, remove_if_exists
from wal.meta import LogMeta
from wal.scan import TailDamage, scan_segment
from wal.segment import Segment, parse_segment_name, segment_name, sidecar_path
from wal.sidecar import (
    SIDECAR_SUFFIX,
    SidecarHead,
    StaleSidecar,
    encode_sidecar,
    read_sidecar_head,
    write_sidecar,
)

log = structlog.get_logger(__name__)


@dataclasses.dataclass
class Recovered:
    segments: list[Segment]
    tail_damage: TailDamage | None  # cut from the open segment (or, read-only, to be cut)
    gaps: list[tuple[int, int]]  # missing index ranges (read-only opens only; else an error)


def recover(
    directory: pathlib.Path,
    meta: LogMeta,
    *,
    readonly: bool,
    segment_size: int,
    prealloc: bool,
) -> Recovered:
    firsts = []
    dirty = False
    for name in sorted(os.listdir(directory)):
        if name.endswith(TMP_SUFFIX):
            if not readonly:
                remove_if_exists(directory / name)
                log.info("wal.removed_debris", path=str(directory / name))
                dirty = True
            continue
        first = parse_segment_name(name)
        if first is not None:
            firsts.append(first)
        elif (
            not readonly
            and name.endswith(SIDECAR_SUFFIX)
            and not (directory / name).with_suffix(SEGMENT_SUFFIX).exists()
        ):
            # An orphaned sidecar (its segment was deleted by a truncation or compaction).
            remove_if_exists(directory / name)
            dirty = True
    firsts.sort()
    while len(firsts) >= 2 and firsts[1] - 1 <= meta.base_index:
        dead = directory / segment_name(firsts.pop(0))
        if not readonly:
            remove_if_exists(dead)
            remove_if_exists(sidecar_path(dead))
            log.info("wal.removed_compacted_segment", path=str(dead), base=meta.base_index)
            dirty = True

    segments: list[Segment] = []
    min_term = 0
    for first in firsts[:-1]:
        segment = _load_sealed(directory / segment_name(first), first, readonly, min_term)
        segments.append(segment)
        min_term = segment.last_term if segment.last_term is not None else min_term
    damage = None
    if firsts:
        segment, damage = _recover_open(
            directory / segment_name(firsts[-1]),
            firsts[-1],
            readonly=readonly,
            segment_size=segment_size,
            prealloc=prealloc,
            min_term=min_term,
        )
        segments.append(segment)
        dirty = dirty or not readonly
    if dirty:
        fsync_dir(directory)
    gaps = _check_alignment(segments, meta, tolerate_gaps=readonly)
    return Recovered(segments, damage, gaps)


def _read_checked_header(
    fd: int, path: pathlib.Path, expected_first: int
) -> tuple[int, SegmentHeader]:
    raw = read_exact(fd, HEADER_SIZE, 0)
    try:
        header = decode_header(raw)
    except CorruptRecord as exc:
        raise WalCorruption(path, exc.offset, exc.reason) from None
    if header.first_index != expected_first:
        raise WalCorruption(
            path,
            0,
            f"header says first index {header.first_index}, file name says {expected_first}",
        )
    return header_crc_of(raw), header


def _load_sealed(path: pathlib.Path, first: int, readonly: bool, min_term: int) -> Segment:
    fd = os.open(path, os.O_RDONLY)
    try:
        header_crc, header = _read_checked_header(fd, path, first)
        size = os.fstat(fd).st_size
        try:
            head = read_sidecar_head(sidecar_path(path))
            _check_sidecar_matches(fd, head, header, header_crc, size)
            return Segment.from_sidecar(path, header, header_crc, head)
        except StaleSidecar as stale:
            log.info("wal.sidecar_rebuild", path=str(path), why=str(stale))
        scan = scan_segment(fd, path, file_size=size, min_term=min_term)
        if scan.damage is not None:
            raise WalCorruption(
                path, scan.damage.damage_offset, f"sealed segment: {scan.damage.reason}"
            )
    finally:
        os.close(fd)
    segment = Segment.from_scan(path, scan, header_crc)
    if not readonly:
        if size != scan.data_end:
            # Only zeros follow the data (the scan said so): drop them so the sidecar matches.
            os.truncate(path, scan.data_end)
        write_sidecar(sidecar_path(path), sidecar_bytes(segment))
        segment.attach_sidecar(read_sidecar_head(sidecar_path(path)))
    return segment


def _check_sidecar_matches(
    fd: int, head: SidecarHead, header: SegmentHeader, header_crc: int, size: int
) -> None:
    if (
        head.first_index != header.first_index
        or head.sparse != header.kv_compacted
        or head.header_crc != header_crc
        or head.data_end != size
    ):
        raise StaleSidecar("sidecar describes another version of the segment")
    if head.count == 0 and size == HEADER_SIZE:
        return
    tail = read_exact(fd, COMMIT_SIZE, size - COMMIT_SIZE) if size >= COMMIT_SIZE else b""
    if len(tail) != COMMIT_SIZE or PREFIX.unpack_from(tail) != (
        COMMIT_MARKER,
        head.last_commit_crc,
    ):
        raise StaleSidecar("segment does not end with the commit record the sidecar names")


def sidecar_bytes(segment: Segment) -> bytes:
    offsets = segment.offsets()
    return encode_sidecar(
        first_index=segment.first_index,
        last_index=segment.last_index,
        data_end=segment.data_end,
        header_crc=segment.header_crc,
        last_commit_crc=segment.last_commit_crc,
        offsets=offsets,
        indexes=segment.sparse_indexes(),
        run_starts=segment.run_starts,
        run_terms=segment.run_terms,
    )


def _recover_open(
    path: pathlib.Path,
    first: int,
    *,
    readonly: bool,
    segment_size: int,
    prealloc: bool,
    min_term: int,
) -> tuple[Segment, TailDamage | None]:
    fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
    try:
        header_crc, _header = _read_checked_header(fd, path, first)
        size = os.fstat(fd).st_size
        scan = scan_segment(fd, path, file_size=size, min_term=min_term)
        damage = scan.damage
        if damage is not None and scan.durable_proof is not None:
            offset, commit = scan.durable_proof
            raise WalCorruption(
                path,
                damage.damage_offset,
                f"{damage.reason}; the commit record at byte {offset} (entries "
                f"{commit.first_index}..{commit.last_index}) says entries through "
                f"{commit.synced_through} had been fsynced, so this is not a torn write",
            )
        if damage is not None and not readonly:
            log.warning(
                "wal.torn_tail_cut",
                path=str(path),
                cut_offset=damage.cut_offset,
                damage_offset=damage.damage_offset,
                reason=damage.reason,
                dropped_entries=damage.dropped_entries,
                dropped_bytes=damage.end_offset - damage.cut_offset,
            )
            os.ftruncate(fd, damage.cut_offset)
        segment = Segment.from_scan(path, scan, header_crc)
        segment.sealed = False
        segment.fd = fd
        if not readonly:
            remove_if_exists(sidecar_path(path))
            if prealloc:
                preallocate(fd, segment_size)
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return segment, damage


def _check_alignment(
    segments: list[Segment], meta: LogMeta, *, tolerate_gaps: bool
) -> list[tuple[int, int]]:
    """Check that the segments line up; returns the gaps when `tolerate_gaps` (read-only
    inspection must be able to read a log that lost a segment: its entries read as holes)."""
    gaps: list[tuple[int, int]] = []
    if not segments:
        return gaps
    first = segments[0]
    if first.first_index > meta.base_index + 1 and tolerate_gaps:
        gaps.append((meta.base_index + 1, first.first_index - 1))
    elif first.first_index > meta.base_index + 1:
        raise WalCorruption(
            first.path,
            0,
            f"the log continues after index {meta.base_index} but its first segment starts "
            f"at {first.first_index}: entries {meta.base_index + 1}..{first.first_index - 1} "
            "are missing",
        )
    for before, after in itertools.pairwise(segments):
        if before.sparse:
            aligned = before.last_index < after.first_index
        else:
            aligned = before.last_index == after.first_index - 1
        if not aligned and tolerate_gaps and before.last_index < after.first_index:
            gaps.append((before.last_index + 1, after.first_index - 1))
        elif not aligned:
            raise WalCorruption(
                before.path,
                before.data_end,
                f"segment holds entries up to {before.last_index} but the next segment "
                f"{after.path.name} starts at {after.first_index}",
            )
        if (
            before.last_term is not None
            and after.run_terms
            and after.run_terms[0] < before.last_term
        ):
            raise WalCorruption(
                after.path,
                HEADER_SIZE,
                f"term {after.run_terms[0]} at index {after.run_starts[0]} is below the "
                f"previous segment's last term {before.last_term}",
            )
    return gaps
