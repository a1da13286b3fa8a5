"""`coterie waltool`: inspect, verify, compare and compact write-ahead logs on disk.

    coterie waltool info DIR                 positions, segments, damage, in a few lines
    coterie waltool verify DIR               every checksum and index; exit 1 on problems
    coterie waltool range DIR FROM TO        entries FROM <= index < TO as JSON lines
    coterie waltool compact DIR [--purge-deletes-older-than 7d]
                                             key-value compaction of the sealed segments
    coterie waltool diff A B                 index ranges one log has and the other lacks,
                                             and entries that differ; exit 1 if any

Everything but `compact` opens logs read-only and takes no lock, so it is safe on a running
node's log. `compact` takes the log's lock and must run while the node is stopped (a running
node compacts through its log-writer actor instead).

Exit status: 0 fine, 1 the log has problems (or the logs differ), 2 bad input (an unknown
directory, a bad number or duration, a log locked by a running node). Long operations draw a
progress bar on stderr when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import structlog

from actors.log import configure_logging
from coterie.cli import CliError
from wal import kv_compaction
from wal.compare import Mismatch, OnlyIn, diff_logs
from wal.entry import Entry, EntryKind
from wal.errors import LogInUse, NotAWal, WalError
from wal.log import SegmentedLog
from wal.verify import verify_log

DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _log_problems_exit_1(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Run a command with log events (warnings and worse) on stderr, keeping stdout for the
    output. A damaged log is not bad input: it is reported (file and offset), exit 1."""

    def run(args: argparse.Namespace) -> int:
        saved = structlog.get_config()
        configure_logging("warning", json=False)
        try:
            return command(args)
        except WalError as exc:
            print(f"coterie waltool {args.waltool_command}: {exc}", file=sys.stderr)
            return 1
        finally:
            structlog.configure(**saved)  # main(argv) may run inside a bigger program

    run.__name__ = command.__name__
    run.__doc__ = command.__doc__
    return run


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "waltool",
        help="inspect, verify, compare and compact write-ahead logs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tools = parser.add_subparsers(dest="waltool_command", metavar="SUBCOMMAND", required=True)

    info = tools.add_parser("info", help="positions, segments and damage of a log")
    info.add_argument("directory", metavar="DIR")
    info.add_argument("--json", action="store_true", help="one JSON object instead of text")
    info.set_defaults(func=_log_problems_exit_1(cmd_info))

    verify = tools.add_parser("verify", help="check every checksum and index; exit 1 if bad")
    verify.add_argument("directory", metavar="DIR")
    verify.set_defaults(func=_log_problems_exit_1(cmd_verify))

    ranged = tools.add_parser("range", help="entries FROM <= index < TO as JSON lines")
    ranged.add_argument("directory", metavar="DIR")
    ranged.add_argument("start", metavar="FROM", type=_index("FROM"))
    ranged.add_argument("stop", metavar="TO", type=_index("TO"))
    ranged.set_defaults(func=_log_problems_exit_1(cmd_range))

    compact = tools.add_parser("compact", help="key-value compaction of sealed segments")
    compact.add_argument("directory", metavar="DIR")
    compact.add_argument(
        "--purge-deletes-older-than",
        metavar="AGE",
        help="also drop DELETE tombstones older than AGE (30s, 15m, 12h, 7d; default: keep)",
    )
    compact.add_argument(
        "--through",
        metavar="INDEX",
        type=_index("--through"),
        help="only entries up to INDEX count as newer (the node's commit index; default: the "
        "end of the last sealed segment, leaving out a possibly uncommitted tail)",
    )
    compact.set_defaults(func=_log_problems_exit_1(cmd_compact))

    diff = tools.add_parser("diff", help="what one log holds and the other lacks; exit 1 if any")
    diff.add_argument("a", metavar="A")
    diff.add_argument("b", metavar="B")
    diff.set_defaults(func=_log_problems_exit_1(cmd_diff))


# -- commands ----------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    with _ReadOnlyLog(args.directory) as log:
        segments = log.segments()
        info: dict[str, Any] = {
            "directory": str(log.directory),
            "first_index": log.first_index,
            "last_index": log.last_index,
            "last_term": log.last_term,
            "compacted_through": log.base_index,
            "compacted_term": log.base_term,
            "segments": len(segments),
            "bytes": sum(segment.size for segment in segments),
            "kv_compacted_segments": sum(segment.kv_compacted for segment in segments),
            "tail_damage": None,
        }
        damage = log.tail_damage
        if damage is not None:
            info["tail_damage"] = {
                "offset": damage.damage_offset,
                "reason": damage.reason,
                "entries_to_cut": damage.dropped_entries,
                "bytes_to_cut": damage.end_offset - damage.cut_offset,
            }
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    print(f"log            {info['directory']}")
    print(f"entries        {info['first_index']}..{info['last_index']}")
    print(f"last term      {info['last_term']}")
    print(f"compacted      through {info['compacted_through']} (term {info['compacted_term']})")
    print(
        f"segments       {info['segments']} ({info['kv_compacted_segments']} kv-compacted), "
        f"{_human_bytes(info['bytes'])}"
    )
    for segment in segments:
        state = "sealed" if segment.sealed else "open"
        extra = ", kv-compacted" if segment.kv_compacted else ""
        print(
            f"  {segment.path.name}  {segment.first_index}..{segment.last_index}  "
            f"{segment.count} entries  {_human_bytes(segment.size)}  {state}{extra}"
        )
    if damage is not None:
        print(
            f"torn tail      at offset {damage.damage_offset}: {damage.reason}; opening the log "
            f"for writing cuts {damage.dropped_entries} entries"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _Progress("verify") as bar:
        try:
            report = verify_log(args.directory, progress=bar.update)
        except NotAWal as exc:
            raise CliError(str(exc)) from None
    for finding in report.problems:
        print(f"problem: {finding}")
    for finding in report.warnings:
        print(f"warning: {finding}")
    verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(
        f"{report.directory}: {verdict}; {report.segments} segments, {report.entries} entries "
        f"({report.first_index}..{report.last_index}), {_human_bytes(report.bytes)}, "
        f"{len(report.warnings)} warning(s)"
    )
    return 0 if report.ok else 1


def cmd_range(args: argparse.Namespace) -> int:
    if args.stop < args.start:
        raise CliError(f"TO ({args.stop}) is before FROM ({args.start})")
    with _ReadOnlyLog(args.directory) as log:
        if args.start < log.first_index:
            raise CliError(
                f"FROM {args.start}: entries up to {log.base_index} were compacted; "
                f"the log holds {log.first_index}..{log.last_index}"
            )
        stop = min(args.stop, log.last_index + 1)
        total = max(0, stop - args.start)
        out = sys.stdout
        with _Progress("range") as bar:
            for count, entry in enumerate(log.read_range(args.start, stop), 1):
                out.write(entry_json(entry))
                out.write("\n")
                if count % 1024 == 0:
                    bar.update(entry.index - args.start + 1, total)
        out.flush()
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    purge_ms = None
    if args.purge_deletes_older_than is not None:
        purge_ms = parse_duration(args.purge_deletes_older_than, "--purge-deletes-older-than")
    try:
        log = SegmentedLog.open(args.directory, create=False)
    except LogInUse as exc:
        raise CliError(f"{exc}; stop the node first") from None
    except NotAWal as exc:
        raise CliError(str(exc)) from None
    with log, _Progress("compact") as bar:
        segments = log.segments()
        before = sum(segment.size for segment in segments)
        through = args.through
        if through is None:
            # The open segment may end in entries Raft never committed and may still
            # truncate: they must not count as newer. The sealed segments are far older.
            sealed = [segment for segment in segments if segment.sealed]
            through = sealed[-1].last_index if sealed else log.base_index
        elif through > log.last_index:
            raise CliError(f"--through {through}: the log ends at {log.last_index}")
        result = kv_compaction.compact(
            log,
            now_ms=int(time.time() * 1000),
            purge_deletes_older_than_ms=purge_ms,
            through_index=through,
            progress=bar.update,
        )
    print(
        f"{args.directory}: rewrote {result.segments_rewritten} segment(s), removed "
        f"{result.entries_removed} entries ({result.tombstones_purged} tombstones), freed "
        f"{_human_bytes(result.bytes_freed)} of {_human_bytes(before)}"
    )
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    differences = 0
    with _ReadOnlyLog(args.a) as a, _ReadOnlyLog(args.b) as b, _Progress("diff") as bar:
        if a.first_index != b.first_index:
            print(
                f"note: A starts at {a.first_index}, B at {b.first_index} (compacted prefixes "
                f"differ); comparing from {max(a.first_index, b.first_index)}"
            )
        for difference in diff_logs(a, b, progress=bar.update):
            differences += 1
            match difference:
                case OnlyIn(side, first, last):
                    span = f"{first}" if first == last else f"{first}..{last}"
                    other = "B" if side == "A" else "A"
                    count = last - first + 1
                    noun = "entry" if count == 1 else "entries"
                    print(f"only in {side}: {span} ({count} {noun} missing in {other})")
                case Mismatch(index, term_a, crc_a, term_b, crc_b):
                    print(
                        f"differ at {index}: A term {term_a} crc {crc_a:#010x}, "
                        f"B term {term_b} crc {crc_b:#010x}"
                    )
        if differences == 0:
            print(
                f"identical from index {max(a.first_index, b.first_index)} to "
                f"{max(a.last_index, b.last_index)}"
            )
    return 1 if differences else 0


# -- helpers -----------------------------------------------------------------------------------


def parse_duration(text: str, option: str) -> int:
    """Milliseconds in a duration like 500ms, 30s, 15m, 12h, 7d; CliError naming `option`."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise CliError(
            f"{option}: {text!r} is not a duration; use a number and a unit: "
            "500ms, 30s, 15m, 12h or 7d"
        )
    return int(match.group(1)) * UNIT_MS[match.group(2)]


def entry_json(entry: Entry) -> str:
    """One entry as a JSON object: the payload as text when it is printable UTF-8."""
    try:
        text = entry.payload.decode("utf-8")
        printable = all(ch.isprintable() or ch in "\t\n\r" for ch in text)
    except UnicodeDecodeError:
        printable = False
    record: dict[str, Any] = {
        "index": entry.index,
        "term": entry.term,
        "kind": _kind_name(entry.kind),
        "timestamp": entry.timestamp,
    }
    if printable:
        record["payload"], record["encoding"] = text, "utf-8"
    else:
        record["payload"] = base64.b64encode(entry.payload).decode("ascii")
        record["encoding"] = "base64"
    return json.dumps(record, ensure_ascii=False)


def _kind_name(kind: int) -> str | int:
    try:
        return EntryKind(kind).name.lower()
    except ValueError:
        return kind


def _index(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an index, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {value}")
        return value

    return parse


class _ReadOnlyLog:
    """Open a log read-only for a command; a missing or foreign directory is bad input."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.log: SegmentedLog | None = None

    def __enter__(self) -> SegmentedLog:
        try:
            self.log = SegmentedLog.open(self.directory, readonly=True)
        except NotAWal as exc:
            raise CliError(str(exc)) from None
        for first, last in self.log.gaps:
            print(
                f"warning: {self.directory}: entries {first}..{last} are missing (a segment "
                "file is gone); they read as holes",
                file=sys.stderr,
            )
        if self.log.tail_damage is not None:
            damage = self.log.tail_damage
            print(
                f"warning: {self.directory}: torn tail at offset {damage.damage_offset} "
                f"({damage.reason}); ignoring {damage.dropped_entries} unfinished entries",
                file=sys.stderr,
            )
        return self.log

    def __exit__(self, *exc_info: object) -> None:
        if self.log is not None:
            self.log.close()


class _Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal, at most 10 times/s."""

    WIDTH = 30

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.last_draw = 0.0
        self.drawn = False

    def __enter__(self) -> _Progress:
        return self

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        if now - self.last_draw < 0.1 and done < total:
            return
        self.last_draw = now
        fraction = min(1.0, done / total)
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction * 100:5.1f}%")
        self.stream.flush()
        self.drawn = True

    def __exit__(self, *exc_info: object) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * (len(self.label) + self.WIDTH + 12) + "\r")
            self.stream.flush()


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
