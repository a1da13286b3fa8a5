"""Scanning a segment file: the one pass that recovery, index rebuilding and `verify` share.

Theory of operation
-------------------
The scanner reads the file in large chunks and walks its records, keeping the bytes of the
pending (not yet committed) batch contiguous in its buffer so that the commit record can be
checked with one checksum over the whole batch. Entries of a batch become part of the result
only when their commit record arrives and matches (first index, count, batch checksum); the
in-memory offset index and term runs are built on the way.

The walk stops at the first thing that is not a valid record: end of file, unwritten (zero)
space, a torn record, a bad checksum, an out-of-sequence index. Everything before the last
good commit record is the segment's data; what follows is classified:

* nothing, or only zeros: a clean end (the preallocated tail of the open segment);
* anything else: :class:`TailDamage`, and the scanner then looks *past* the damage for a
  valid commit record whose ``synced_through`` says the lost entries had once been fsynced.
  Finding one is :attr:`SegmentScan.durable_proof`: the damage is corruption, not a torn
  write, and recovery must refuse to cut it (see ``wal.format`` for ``synced_through``).

The scanner never modifies the file; the caller decides whether to cut, refuse or report.
"""

from __future__ import annotations

import dataclasses
import os
from array import array

from google_crc32c import value as crc32c

from wal.errors import CorruptRecord, WalCorruption
from wal.format import (
    COMMIT_MARKER,
    COMMIT_MARKER_BYTES,
    COMMIT_SIZE,
    ENTRY_HEAD,
    HEADER_SIZE,
    MARKER_BIT,
    MIN_ENTRY_LENGTH,
    PREFIX,
    WORD,
    CommitRecord,
    SegmentHeader,
    decode_commit,
    decode_header,
)
from wal.fsutil import read_exact

CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class TailDamage:
    """Bytes after the last whole committed batch that are not unwritten space."""

    cut_offset: int  # where the valid data ends; recovery cuts the file back to here
    damage_offset: int  # where the first invalid or missing record was found
    reason: str
    dropped_entries: int  # whole entry frames of the incomplete batch that are dropped
    end_offset: int  # end of the damaged region (the file size)


@dataclasses.dataclass
class SegmentScan:
    header: SegmentHeader
    offsets: array  # file offset of each entry frame, in index order
    indexes: array | None  # each entry's index; kept only for sparse (kv-compacted) segments
    run_starts: array  # term runs: run i starts at index run_starts[i] with run_terms[i]
    run_terms: array
    last_index: int  # last present index, or first_index - 1 when the segment holds none
    data_end: int  # end of the last whole committed batch (or of the header)
    last_commit: CommitRecord | None
    last_commit_offset: int | None
    last_commit_crc: int  # the stored checksum of the last commit record (0 if none)
    damage: TailDamage | None
    durable_proof: tuple[int, CommitRecord] | None

    @property
    def count(self) -> int:
        return len(self.offsets)

    @property
    def last_term(self) -> int | None:
        return self.run_terms[-1] if self.run_terms else None


def read_header(fd: int, path: str | os.PathLike[str]) -> SegmentHeader:
    try:
        return decode_header(read_exact(fd, HEADER_SIZE, 0))
    except CorruptRecord as exc:
        raise WalCorruption(path, exc.offset, exc.reason) from None


def scan_segment(  # noqa: PLR0915 - one hot loop; helpers would cost a call per record
    fd: int,
    path: str | os.PathLike[str],
    *,
    file_size: int,
    check_entry_crcs: bool = False,
    min_term: int = 0,
) -> SegmentScan:
    """Walk every record of the segment open on `fd`.

    Raises WalCorruption only for a bad header; damage after it is reported in the result.
    `check_entry_crcs` also verifies each entry's own checksum (the batch checksum already
    covers every byte; `verify` asks for both). `min_term` is the last term before this
    segment: a lower term in it is out of order.
    """
    header = read_header(fd, path)
    sparse = header.kv_compacted
    offsets = array("Q")
    indexes = array("Q") if sparse else None
    run_starts = array("Q")
    run_terms = array("Q")
    last_term = min_term
    next_index = header.first_index  # exact for dense segments, a lower bound for sparse ones

    # Pending batch: provisional until its commit record arrives.
    pending_offsets: list[int] = []
    pending_indexes: list[int] = []
    pending_runs: list[tuple[int, int]] = []
    pending_term = last_term

    buf = b""
    base = HEADER_SIZE  # file offset of buf[0]
    pos = 0
    batch_start = 0
    data_end = HEADER_SIZE
    last_commit: CommitRecord | None = None
    last_commit_offset: int | None = None
    last_commit_crc = 0
    stop_reason: str | None = None
    stop_offset = 0
    unpack_word = WORD.unpack_from
    unpack_entry = ENTRY_HEAD.unpack_from

    while True:
        # How many bytes from pos the next step needs in the buffer (0: it can proceed).
        needed = 0
        remaining = len(buf) - pos
        if remaining < WORD.size:
            needed = WORD.size
        else:
            (word,) = unpack_word(buf, pos)
            if word == COMMIT_MARKER:
                needed = COMMIT_SIZE if remaining < COMMIT_SIZE else 0
            elif word and not word & MARKER_BIT and word >= MIN_ENTRY_LENGTH:
                size = PREFIX.size + word
                needed = size if remaining < size else 0
        if needed:
            if base + pos + needed > file_size:
                if pos == len(buf) and base + pos == file_size and not pending_offsets:
                    break  # clean end of file
                stop_reason = (
                    "batch without its commit record at end of file"
                    if pos == len(buf) and base + pos == file_size
                    else "torn record at end of file"
                )
                stop_offset = base + pos
                break
            # Refill, keeping the pending batch contiguous for its checksum.
            want = max(CHUNK, needed - remaining)
            chunk = read_exact(fd, min(want, file_size - base - len(buf)), base + len(buf))
            if not chunk:
                stop_reason, stop_offset = "file shrank while being scanned", base + pos
                break
            buf = buf[batch_start:] + chunk
            base += batch_start
            pos -= batch_start
            batch_start = 0
            continue

        if word == 0:
            stop_reason, stop_offset = "unwritten space", base + pos
            break
        if word == COMMIT_MARKER:
            try:
                commit = decode_commit(buf, pos)
            except CorruptRecord as exc:
                stop_reason, stop_offset = exc.reason, base + pos
                break
            problem = _commit_mismatch(commit, pending_indexes, buf, batch_start, pos)
            if problem is not None:
                stop_reason = problem
                stop_offset = base + (_first_bad_entry(buf, batch_start, pos) or pos)
                break
            offsets.extend(pending_offsets)
            if indexes is not None:
                indexes.extend(pending_indexes)
            for start, term in pending_runs:
                run_starts.append(start)
                run_terms.append(term)
            last_term = pending_term
            pending_offsets.clear()
            pending_indexes.clear()
            pending_runs.clear()
            pos += COMMIT_SIZE
            batch_start = pos
            data_end = base + pos
            last_commit, last_commit_offset = commit, data_end - COMMIT_SIZE
            last_commit_crc = PREFIX.unpack_from(buf, pos - COMMIT_SIZE)[1]
            continue
        if word & MARKER_BIT:
            stop_reason, stop_offset = f"unknown record marker 0x{word:08x}", base + pos
            break
        if word < MIN_ENTRY_LENGTH:
            stop_reason = f"entry length {word} is shorter than an entry header"
            stop_offset = base + pos
            break
        _length, crc, index, term, _kind, _ts = unpack_entry(buf, pos)
        end = pos + PREFIX.size + word
        if check_entry_crcs and crc32c(buf[pos + PREFIX.size : end]) != crc:
            stop_reason, stop_offset = "entry checksum mismatch", base + pos
            break
        if index != next_index and (not sparse or index < next_index):
            expected = "" if sparse else f", expected {next_index}"
            stop_reason, stop_offset = f"entry index {index} out of sequence{expected}", base + pos
            break
        if term < pending_term:
            stop_reason = f"entry {index} has term {term} below the preceding term {pending_term}"
            stop_offset = base + pos
            break
        if term != pending_term or (not run_terms and not pending_runs):
            pending_runs.append((index, term))
            pending_term = term
        pending_offsets.append(base + pos)
        pending_indexes.append(index)
        next_index = index + 1
        pos = end

    last_index = indexes[-1] if indexes else header.first_index + len(offsets) - 1
    damage = None
    proof = None
    if stop_reason is not None:
        unwritten = stop_reason == "unwritten space" and not pending_offsets
        if stop_reason == "unwritten space" and pending_offsets:
            stop_reason = "batch without its commit record (unwritten space follows)"
        # Only zeros after the data is a clean end, whatever stopped the walk: preallocated
        # space can end fewer than 4 bytes after the data, which reads as a torn length word.
        if not _all_zero(fd, data_end, file_size):
            damage = TailDamage(
                cut_offset=data_end,
                damage_offset=stop_offset,
                reason="non-zero bytes in unwritten space" if unwritten else stop_reason,
                dropped_entries=len(pending_offsets),
                end_offset=file_size,
            )
            if last_commit is None or not last_commit.truncates:
                proof = _find_durable_commit(fd, data_end, file_size, last_index)
    return SegmentScan(
        header=header,
        offsets=offsets,
        indexes=indexes,
        run_starts=run_starts,
        run_terms=run_terms,
        last_index=last_index,
        data_end=data_end,
        last_commit=last_commit,
        last_commit_offset=last_commit_offset,
        last_commit_crc=last_commit_crc,
        damage=damage,
        durable_proof=proof,
    )


def _commit_mismatch(
    commit: CommitRecord, pending_indexes: list[int], buf: bytes, start: int, end: int
) -> str | None:
    if not pending_indexes:
        return "commit record without entries"
    if commit.count != len(pending_indexes) or commit.first_index != pending_indexes[0]:
        return (
            f"commit record for entries {commit.first_index}+{commit.count} does not match "
            f"the batch {pending_indexes[0]}+{len(pending_indexes)} before it"
        )
    if crc32c(buf[start:end]) != commit.batch_crc:
        return "batch checksum mismatch"
    return None


def _first_bad_entry(buf: bytes, start: int, end: int) -> int | None:
    """Offset (in buf) of the first entry of a failed batch whose own checksum fails."""
    pos = start
    while pos < end:
        length, crc = PREFIX.unpack_from(buf, pos)
        if crc32c(buf[pos + PREFIX.size : pos + PREFIX.size + length]) != crc:
            return pos
        pos += PREFIX.size + length
    return None


def _all_zero(fd: int, start: int, end: int) -> bool:
    offset = start
    while offset < end:
        chunk = read_exact(fd, min(CHUNK, end - offset), offset)
        if not chunk:
            return True
        if chunk.count(0) != len(chunk):
            return False
        offset += len(chunk)
    return True


def _find_durable_commit(
    fd: int, start: int, end: int, last_good_index: int
) -> tuple[int, CommitRecord] | None:
    """A valid commit record in [start, end) proving entries after `last_good_index` synced."""
    overlap = COMMIT_SIZE - 1
    offset = start
    while offset < end:
        chunk = read_exact(fd, min(CHUNK + overlap, end - offset), offset)
        if not chunk:
            return None
        hit = chunk.find(COMMIT_MARKER_BYTES)
        while hit != -1 and hit + COMMIT_SIZE <= len(chunk):
            try:
                commit = decode_commit(chunk, hit)
            except CorruptRecord:
                commit = None
            if (
                commit is not None
                and commit.first_index > last_good_index
                and commit.synced_through > last_good_index
            ):
                return offset + hit, commit
            hit = chunk.find(COMMIT_MARKER_BYTES, hit + 1)
        if len(chunk) <= overlap:
            return None
        offset += len(chunk) - overlap
    return None
