"""Checking a log directory without changing it: every checksum, every index, every file.

Theory of operation
-------------------
Opening a log (`wal.recovery`) stops at the first piece of corruption and trusts the sidecar
indexes of sealed segments, which is right for a node starting up. An operator asking "is this
log sound?" wants more: :func:`verify_log` reads every byte of every segment, checks each
entry's own checksum as well as each batch's, keeps going after a bad segment, and reports
every problem with its file and byte offset. It never writes.

Findings are *problems* (the log is damaged or incomplete: open would refuse it, or entries are
missing) or *warnings* (things open repairs by itself: a torn tail after a crash, leftover
temporary files, stale sidecars, segments a compaction had not deleted yet).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable

from wal.errors import NotAWal, WalCorruption
from wal.fsutil import TMP_SUFFIX
from wal.meta import META_NAME, LogMeta, read_meta
from wal.scan import SegmentScan, scan_segment
from wal.segment import parse_segment_name, segment_name, sidecar_path
from wal.sidecar import StaleSidecar, read_sidecar_arrays, read_sidecar_head


@dataclasses.dataclass(frozen=True)
class Finding:
    path: str
    offset: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}: offset {self.offset}: {self.message}"


@dataclasses.dataclass
class Report:
    directory: pathlib.Path
    problems: list[Finding] = dataclasses.field(default_factory=list)
    warnings: list[Finding] = dataclasses.field(default_factory=list)
    segments: int = 0
    entries: int = 0
    bytes: int = 0
    first_index: int | None = None
    last_index: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclasses.dataclass(frozen=True)
class _Checked:
    path: pathlib.Path
    first_index: int
    scan: SegmentScan


def verify_log(
    directory: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None
) -> Report:
    """Check the log in `directory`; `progress(bytes done, bytes total)` after each segment."""
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise NotAWal(f"{root}: no such log directory")
    report = Report(root)
    names = sorted(os.listdir(root))
    firsts = sorted(f for f in (parse_segment_name(n) for n in names) if f is not None)
    meta = _read_meta(root, report, has_segments=bool(firsts))
    for name in names:
        if name.endswith(TMP_SUFFIX):
            report.warnings.append(
                Finding(str(root / name), 0, "temporary file of an interrupted write")
            )
    total = sum((root / segment_name(first)).stat().st_size for first in firsts)
    done = 0
    checked: list[_Checked] = []
    min_term = meta.base_term
    for number, first in enumerate(firsts):
        path = root / segment_name(first)
        last = number == len(firsts) - 1
        scan = _check_segment(path, first, last=last, min_term=min_term, report=report)
        size = path.stat().st_size
        done += size
        report.segments += 1
        if progress is not None:
            progress(done, total)
        if scan is None:
            continue
        report.bytes += scan.data_end
        report.entries += scan.count
        checked.append(_Checked(path, first, scan))
        if scan.last_term is not None:
            min_term = scan.last_term
        if not last:
            _check_sidecar(path, scan, size, report)
    _check_alignment(checked, meta, report)
    live = [c for c in checked if c.scan.count]
    if live:
        report.first_index = max(meta.base_index + 1, live[0].first_index)
        report.last_index = max(meta.base_index, live[-1].scan.last_index)
    else:
        report.first_index, report.last_index = meta.base_index + 1, meta.base_index
    return report


def _read_meta(root: pathlib.Path, report: Report, *, has_segments: bool) -> LogMeta:
    try:
        meta = read_meta(root)
    except WalCorruption as exc:
        report.problems.append(Finding(exc.path, exc.offset, exc.reason))
        return LogMeta(0, 0)
    if meta is None:
        if not has_segments:
            raise NotAWal(f"{root} is not a coterie write-ahead log (no {META_NAME})")
        report.problems.append(
            Finding(str(root / META_NAME), 0, "missing: the compaction base is unknown")
        )
        return LogMeta(0, 0)
    return meta


def _check_segment(
    path: pathlib.Path, first: int, *, last: bool, min_term: int, report: Report
) -> SegmentScan | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        scan = scan_segment(
            fd, path, file_size=os.fstat(fd).st_size, check_entry_crcs=True, min_term=min_term
        )
    except WalCorruption as exc:
        report.problems.append(Finding(str(path), exc.offset, exc.reason))
        return None
    finally:
        os.close(fd)
    if scan.header.first_index != first:
        report.problems.append(
            Finding(str(path), 0, f"header says first index {scan.header.first_index}")
        )
    damage = scan.damage
    if damage is not None:
        dropped = (
            f"{damage.dropped_entries} entries of an unfinished batch and "
            f"{damage.end_offset - damage.cut_offset} bytes"
        )
        if last and scan.durable_proof is None:
            report.warnings.append(
                Finding(
                    str(path),
                    damage.damage_offset,
                    f"torn tail ({damage.reason}): opening the log cuts {dropped} "
                    f"from offset {damage.cut_offset}",
                )
            )
        else:
            where = "sealed segment" if not last else "entries known to have been fsynced"
            report.problems.append(
                Finding(str(path), damage.damage_offset, f"{damage.reason} ({where})")
            )
    return scan


def _check_sidecar(path: pathlib.Path, scan: SegmentScan, size: int, report: Report) -> None:
    side = sidecar_path(path)
    try:
        head = read_sidecar_head(side)
        offsets, indexes = read_sidecar_arrays(side, head)
        if (
            head.count != scan.count
            or head.data_end != size
            or head.last_commit_crc != scan.last_commit_crc
            or offsets != scan.offsets
            or indexes != scan.indexes
            or head.run_starts != scan.run_starts
            or head.run_terms != scan.run_terms
        ):
            raise StaleSidecar("it does not describe the segment")
    except StaleSidecar as exc:
        report.warnings.append(
            Finding(str(side), 0, f"stale index sidecar, rebuilt on open ({exc})")
        )


def _check_alignment(checked: list[_Checked], meta: LogMeta, report: Report) -> None:
    previous: _Checked | None = None
    for item in checked:
        scan = item.scan
        if previous is None:
            if item.first_index > meta.base_index + 1:
                report.problems.append(
                    Finding(
                        str(item.path),
                        0,
                        f"gap: entries {meta.base_index + 1}..{item.first_index - 1} are "
                        f"missing (the log continues after {meta.base_index})",
                    )
                )
        elif previous.scan.damage is None:  # a damaged segment's end is already reported
            before = previous.scan
            if before.last_index >= item.first_index or (
                not before.header.kv_compacted and before.last_index + 1 != item.first_index
            ):
                gap = before.last_index + 1 < item.first_index
                what = (
                    f"gap: entries {before.last_index + 1}..{item.first_index - 1} are missing"
                    if gap
                    else f"overlap: the next segment starts at {item.first_index}"
                )
                report.problems.append(
                    Finding(str(previous.path), before.data_end, f"{what} ({item.path.name})")
                )
        if scan.count and item is not checked[-1] and scan.last_index <= meta.base_index:
            report.warnings.append(
                Finding(str(item.path), 0, "wholly compacted segment, deleted on open")
            )
        previous = item
