"""A follower-only node's engine: pull committed ranges, check them, append, apply, repeat.

A :class:`Follower` owns a WAL (``<data_dir>/log``), a snapshot store
(``<data_dir>/snapshots``) and a state machine. It never votes and is unknown to the Raft
configuration; all it does is ask its source URI for the range after its last entry:

1. ``GET /log?from=<next>&to=<next + window - 1>`` (plus ``wait`` once caught up, so an idle
   follower long-polls instead of spinning);
2. every record goes through the :class:`~follow.checker.GapChecker`; the first problem ends
   the response: it is logged, counted, and the range is asked for again, never skipped;
3. accepted entries are appended to the WAL in batches and then applied in order
   (:mod:`follow.apply`), so the WAL never lags the state machine;
4. the :class:`~follow.window.Window` grows on full responses and halves on timeouts; an
   unreachable source is retried after :class:`~follow.window.Backoff` delays;
5. a ``410`` (the range was compacted at the source) makes it fetch ``/snapshot/latest`` into
   its store, restore the state machine from it, reset its WAL to start after it, and go on.

On start it restores its latest snapshot, if any, and replays its WAL into the state machine:
it resumes from the last entry it had, never from scratch. With ``snapshot_every`` it takes
its own snapshots (in the Raft shell's format) and compacts its WAL behind them, so restarts
and disk stay bounded, and followers chained behind it restore from them. Reads
(:meth:`Follower.query`) run under the same lock as applying and answer with the applied
sequence number.

The WAL is shared with the follower's own ``/log`` server through
``consensus.shell.node_storage.SharedLog``; everything it holds is committed, so all of it may
be served (chaining). Durability follows the cluster file: ``always`` fsyncs every append,
``group`` once per response, ``never`` leaves it to the OS; a lost tail is simply fetched
again after a crash, since committed entries never change.
"""

from __future__ import annotations

import pathlib
import random
import threading
import time
from typing import Any

import structlog

from consensus.configuration import Membership
from consensus.shell.node_storage import SharedLog
from consensus.shell.sessions_shell import with_sessions
from consensus.shell.state_machine import StateMachine
from consensus.snapshots import decode_header, encode_header
from follow.apply import apply_entry
from follow.checker import GapChecker, Problem
from follow.client import Compacted, SourceClient, SourceError, SourceTimeout
from follow.records import EntryRecord, ErrorRecord, Header, MalformedRecord, Trailer
from follow.source import WalSource
from follow.window import Backoff, Window
from wal.entry import Entry, EntryKind
from wal.errors import WalError
from wal.log import DEFAULT_SEGMENT_SIZE, SegmentedLog
from wal.snapshot import SnapshotStore

log = structlog.get_logger(__name__)

APPEND_BATCH = 4096
CAUGHT_UP_WAIT_MS = 500
PROGRESS_SECONDS = 5.0
SNAPSHOT_TRAILING = 128  # entries kept behind a follower's own snapshot
CONFIGURATION = int(EntryKind.CONFIGURATION)


class Follower:
    def __init__(
        self,
        uri: str,
        data_dir: pathlib.Path,
        machine: StateMachine,
        *,
        durability: str = "group",
        segment_bytes: int = DEFAULT_SEGMENT_SIZE,
        timeout: float = 5.0,
        window: Window | None = None,
        backoff: Backoff | None = None,
        wait_ms: int = CAUGHT_UP_WAIT_MS,
        name: str = "follower",
        snapshot_every: int = 0,
        snapshot_trailing: int = SNAPSHOT_TRAILING,
    ) -> None:
        self.uri = uri
        self.name = name
        self.data_dir = pathlib.Path(data_dir)
        self.machine = machine
        # Applied, snapshotted and restored behind the same session layer as on a Raft node:
        # a retried session command sits in the log twice and must take effect once here too,
        # and the session table is part of the snapshots a node serves and this one writes.
        self.replica = with_sessions(machine)
        self.durability = durability
        self.wait_ms = wait_ms
        self.window = window or Window()
        self.backoff = backoff or Backoff(rng=random.Random())
        self.client = SourceClient(uri, timeout)
        self.counters: dict[str, int] = {
            "requests": 0,
            "entries": 0,
            "timeouts": 0,
            "unreachable": 0,
            "source_errors": 0,
            "malformed": 0,
            "cut_short": 0,
            "snapshots_installed": 0,
        }
        self.machine_lock = threading.Lock()
        log_dir = self.data_dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.shared = SharedLog(lambda: SegmentedLog.open(log_dir, segment_size=segment_bytes))
        self.snapshots = SnapshotStore(self.data_dir / "snapshots")
        self.applied = 0
        self.snapshot_every = snapshot_every
        self.snapshot_trailing = snapshot_trailing
        self._snapshot_index = 0
        # The latest configuration seen (a CONFIGURATION entry's payload, or a restored
        # snapshot's): a snapshot of ours must carry it, as the Raft shell's do.
        self._membership: bytes | None = None
        self._caught_up = False
        try:
            self._recover()
        except BaseException:
            self.shared.close()
            raise
        self.checker = GapChecker(self.applied + 1, self._term_at(self.applied))

    # ------------------------------------------------------------------ reading the state

    def query(self, payload: bytes) -> tuple[int, Any]:
        """The state machine's answer to `payload` and the sequence number it reflects."""
        with self.machine_lock:
            return self.applied, self.replica.query(payload)

    def source(self) -> WalSource:
        """What this follower's own ``/log`` serves: everything it holds (all committed)."""
        return WalSource(lambda last, _term: last, self.data_dir / "snapshots", self.shared)

    def status(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "window": self.window.size,
            "problems": dict(self.checker.problems),
            **self.counters,
        }

    # ------------------------------------------------------------------ start-up

    def _recover(self) -> None:
        latest = self.snapshots.latest()
        shared = self.shared
        base = shared.first_index - 1
        if latest is not None:
            self._restore_machine(b"".join(self.snapshots.read(latest)))
            with shared.lock:
                holds = (
                    shared.first_index - 1 <= latest.index <= shared.last_index
                    and shared.term_at(latest.index) == latest.term
                )
                if not holds:  # a crash between installing a snapshot and resetting the log
                    shared.reset(latest.index, latest.term)
            base = self._snapshot_index = latest.index
        elif base > 0:
            # The log was reset after a snapshot that is gone: replaying it would apply its
            # entries to a state machine that lacks everything before them.
            raise WalError(
                f"{self.data_dir}: the log starts after {base} but no snapshot covers it; "
                "remove the follower's data directory to start over"
            )
        self.applied = base
        last = shared.last_index
        replayed = 0
        position = base + 1
        while position <= last:
            with shared.lock:
                batch = list(shared.read_range(position, min(last + 1, position + APPEND_BATCH)))
            self._apply(batch)
            replayed += len(batch)
            position += len(batch)
        log.info(
            "follow.recovered",
            follower=self.name,
            snapshot=None if latest is None else latest.index,
            replayed=replayed,
            applied=self.applied,
        )

    def _restore_machine(self, content: bytes) -> int:
        info, offset = decode_header(content)
        with self.machine_lock:
            self.replica.restore(content[offset:])
            self.applied = info.index
        self._membership = info.membership.encode()
        return int(info.index)

    def _apply(self, entries: list[Entry]) -> None:
        with self.machine_lock:
            machine = self.replica
            for entry in entries:
                apply_entry(machine, entry)
                if entry.kind == CONFIGURATION:
                    self._membership = entry.payload
            self.applied = entries[-1].index

    def _maybe_snapshot(self) -> None:
        """Every `snapshot_every` applied entries: snapshot the state machine as the Raft
        shell does (the core's header, then the machine's bytes) and compact the WAL but its
        last `snapshot_trailing` entries. Restarts then replay only what follows, and a
        follower chained behind this one that is further behind restores from it."""
        if not self.snapshot_every or self._membership is None:
            return
        if self.applied - self._snapshot_index < self.snapshot_every:
            return
        with self.machine_lock:
            index, data = self.applied, self.replica.snapshot()
        shared = self.shared
        with shared.lock:
            term = int(shared.term_at(index))
            entry = shared.get(index)
        timestamp = entry.timestamp if entry is not None else 0
        header = encode_header(index, term, timestamp, Membership.decode(self._membership))
        meta = self.snapshots.write(index, term, [header, bytes(data)])
        self._snapshot_index = index
        compact = index - self.snapshot_trailing
        if compact >= shared.first_index:
            shared.compact_through(compact)
        log.info("follow.snapshot_taken", follower=self.name, index=index, size=meta.size,
                 compacted_through=compact)  # fmt: skip

    def _term_at(self, index: int) -> int:
        with self.shared.lock:
            return int(self.shared.term_at(index))

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        """Follow until `stop` is set; logs its progress every PROGRESS_SECONDS."""
        report_at = time.monotonic() + PROGRESS_SECONDS
        while not stop.is_set():
            delay = self.step()
            if delay:
                stop.wait(delay)
            if time.monotonic() >= report_at:
                report_at = time.monotonic() + PROGRESS_SECONDS
                log.info("follow.progress", follower=self.name, **self.status())

    def step(self) -> float:
        """One request; returns how long to wait before the next (0: go on at once)."""
        start = self.checker.next_seq
        size = self.window.size
        self.counters["requests"] += 1
        try:
            received, finished = self._fetch(start, start + size - 1)
        except Compacted as exc:
            log.info("follow.compacted_at_source", follower=self.name, at=start, answer=exc.body)
            return self._install_snapshot()
        except SourceTimeout as exc:
            self.counters["timeouts"] += 1
            self.window.on_timeout()
            log.warning("follow.timeout", follower=self.name, error=str(exc),
                        window=self.window.size)  # fmt: skip
            return 0.0
        except MalformedRecord as exc:
            self.counters["malformed"] += 1
            log.warning("follow.malformed", follower=self.name, at=start, error=str(exc))
            return self.backoff.next_delay()
        except SourceError as exc:
            self.counters["unreachable"] += 1
            delay = self.backoff.next_delay()
            log.warning("follow.source_down", follower=self.name, error=str(exc),
                        retry_in=round(delay, 3))  # fmt: skip
            return delay
        if not finished:
            return self.backoff.next_delay() if not received else 0.0
        if received:
            self._maybe_snapshot()
        if self.backoff.failures:
            log.info("follow.source_back", follower=self.name, at=start, received=received)
        self.backoff.reset()
        self.window.on_success(received)
        self._caught_up = received < size
        return 0.0

    def _fetch(self, start: int, to: int) -> tuple[int, bool]:
        """Fetch, check, append and apply one range; (entries kept, ended cleanly)."""
        # A long poll must end well before the request would count as timed out.
        wait = min(self.wait_ms, int(self.client.timeout * 500)) if self._caught_up else 0
        records = self.client.log(start, to, wait)
        pending: list[Entry] = []
        kept = 0
        started = finished = clean = False
        checker = self.checker
        try:
            for record in records:
                problem: Problem | None = None
                if finished:
                    problem = checker.after_trailer(record)
                elif type(record) is EntryRecord:
                    problem = checker.check(record) if started else checker.no_header(record)
                    if problem is None:
                        pending.append(record)
                        if len(pending) >= APPEND_BATCH:
                            kept += self._keep(pending)
                elif isinstance(record, Header):
                    problem = checker.header(record)
                    started = True
                elif isinstance(record, Trailer):
                    problem = checker.trailer(record)
                    finished = problem is None
                elif isinstance(record, ErrorRecord):
                    self.counters["source_errors"] += 1
                    log.warning("follow.source_stopped", follower=self.name, error=record.message)
                    break
                if problem is not None:
                    log.warning("follow.problem", follower=self.name, kind=problem.kind,
                                expected=problem.expected, got=problem.got,
                                detail=problem.detail)  # fmt: skip
                    break
            else:
                # The body ended: cleanly after a trailer, or cut off before one.
                clean = finished
                if not finished:
                    self.counters["cut_short"] += 1
                    log.warning("follow.cut_short", follower=self.name, at=start, kept=kept)
        finally:
            kept += self._keep(pending)
            if kept and self.durability == "group":
                self.shared.sync()  # once per response
            if not clean:
                self.client.close()  # the rest of this response is not wanted
            records.close()  # type: ignore[attr-defined]
        return kept, clean

    def _keep(self, records: list[EntryRecord]) -> int:
        """Append the entries of checked `records` to the WAL, then apply them; empties it."""
        if not records:
            return 0
        count = len(records)
        entries = [record.to_entry() for record in records]
        records.clear()
        self.shared.append(entries, sync=self.durability == "always")
        self._apply(entries)
        self.counters["entries"] += count
        return count

    def _install_snapshot(self) -> float:
        try:
            head, chunks = self.client.snapshot()
            if head.index < self.applied:
                log.error("follow.snapshot_behind", follower=self.name, snapshot=head.index,
                          applied=self.applied)  # fmt: skip
                return self.backoff.next_delay()
            writer = self.snapshots.begin(head.index, head.term)
            if writer.offset:  # a partial one from an earlier try: this stream starts at 0
                writer.abort()
                writer = self.snapshots.begin(head.index, head.term)
            try:
                for chunk in chunks:
                    writer.write(chunk)
                meta = writer.finish(expected_size=head.size, expected_crc=head.crc)
            except BaseException:
                writer.close()
                raise
        except (SourceError, OSError, ValueError) as exc:
            self.counters["unreachable"] += 1
            log.warning("follow.snapshot_failed", follower=self.name, error=str(exc))
            return self.backoff.next_delay()
        content = b"".join(self.snapshots.read(meta))
        with self.shared.lock:
            # Restore while holding the log's lock, so our own /log never serves a log and a
            # state machine that disagree.
            index = self._restore_machine(content)
            self.shared.reset(meta.index, meta.term)
        self.checker.reset(index + 1, meta.term)
        self._snapshot_index = index
        self.counters["snapshots_installed"] += 1
        log.info("follow.snapshot_installed", follower=self.name, index=index, term=meta.term,
                 size=meta.size)  # fmt: skip
        return 0.0

    def close(self) -> None:
        self.client.close()
        with self.shared.lock:
            if not self.shared.closed:
                self.shared.close()
