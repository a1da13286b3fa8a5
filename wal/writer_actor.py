"""The log-writer actor: the one owner of a node's log and hard state, doing group commit.

Theory of operation
-------------------
Raft roles send :class:`~wal.writer_messages.AppendBatch` and the writer answers
:class:`~wal.writer_messages.Persisted` once the entries are durable as the policy says
(`wal.durability`): ``always`` fsyncs before acknowledging, ``group`` fsyncs at most every
`group_interval_ms` and acknowledges after that fsync, ``never`` acknowledges once written.
A batch holding a configuration entry is fsynced before it is acknowledged under every policy.

**Adaptive batching, no timer.** An AppendBatch is only validated and buffered; the writer
then tells *itself* a flush, which lands behind whatever is already in its inbox. By the time
the flush runs, every AppendBatch queued meanwhile has joined the buffer, and the flush writes
them all with one ``pwritev`` (one commit record) and, when the policy wants it, one fsync.
Under load, batches grow by themselves; alone, a batch is flushed at once. Only ``group``
uses a timer, for the next allowed fsync (`ctx.schedule_once`).

**Inbox order.** Every other request (hard state, compaction, reset, status) first writes
the buffer, so requests take effect in the order they were queued.

**A failed write or fsync is fatal to the writer.** It is logged with the path and errno,
then raised, so the supervisor sees the failure; there is no retry. After a failed fsync
the kernel may have dropped the dirty pages and marked them clean (PostgreSQL's "fsyncgate",
2018): a second fsync then *succeeds* without the data ever reaching the disk, and reads
still return the lost bytes from memory. Retrying would acknowledge entries that are gone.
The log object refuses any further write once one failed; give the writer's parent
:func:`escalate_io_failures` as its decider so that the node stops instead of restarting the
writer over the same page cache. Bad requests (a non-contiguous batch, a compaction past the
end) are the caller's bugs, not IO failures: they are logged and refused (an ask gets the
error), and the writer carries on.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from actors import UNHANDLED, Actor, ActorRef, Directive, Reply
from actors.scheduler import Cancellable
from wal import kv_compaction
from wal.durability import Durability, GroupCommit
from wal.entry import Entry, EntryKind
from wal.errors import WalError
from wal.format import ENTRY_OVERHEAD
from wal.hardstate import HardState, HardStateStore
from wal.log import DEFAULT_SEGMENT_SIZE, SegmentedLog
from wal.writer_messages import (
    AppendBatch,
    CompactKeys,
    CompactThrough,
    HardStateSaved,
    InstallSnapshotReset,
    KeysCompacted,
    LogCompacted,
    LogReset,
    Persisted,
    SaveHardState,
    StatusRequest,
    WriterStatus,
)

HARD_STATE_NAME = "hardstate"


class WalWriteFailed(WalError):
    """A write or fsync of the log or hard state failed; the writer cannot go on."""


def escalate_io_failures(exc: BaseException) -> Directive:
    """A supervisor decider for the writer's parent: stop and escalate on an IO failure
    (see the module docstring), restart on anything else."""
    return Directive.ESCALATE if isinstance(exc, WalWriteFailed) else Directive.RESTART


@dataclasses.dataclass(frozen=True)
class WriterConfig:
    directory: str
    policy: Durability | str = Durability.ALWAYS
    group_interval_ms: float = 2.0
    segment_size: int = DEFAULT_SEGMENT_SIZE
    preallocate: bool = True
    # Coalesced appends are written in log batches of about this size at most, so a burst
    # neither builds one huge write nor overfills a segment.
    max_batch_bytes: int = 1 << 20
    hard_state_path: str | None = None  # default: <directory>/hardstate
    key_of: kv_compaction.KeyOf = kv_compaction.msgpack_kv_key
    # How to open the log; tests pass a wrapper to observe fsyncs.
    open_log: Callable[..., SegmentedLog] = SegmentedLog.open


@dataclasses.dataclass(frozen=True)
class _Flush:
    """Internal: write what is buffered, fsync if due, acknowledge. Never from the wire."""

    timer: bool = False


@dataclasses.dataclass(frozen=True)
class _CompactionDone:
    rewritten: list[kv_compaction.Rewritten] | None
    error: BaseException | None
    reply: Reply | None


class _Rejected(ValueError):
    """A request the writer refuses (the caller's bug); the writer itself is fine."""


class LogWriter(Actor):
    """Owns the log in `config.directory`; tells Persisted to `subscriber` (if given) or to
    each sender."""

    def __init__(self, config: WriterConfig, subscriber: ActorRef | None = None) -> None:
        self.config = config
        self.subscriber = subscriber
        self.policy = Durability(config.policy)
        self.log: SegmentedLog | None = None
        self.hard_state: HardStateStore | None = None
        self.group: GroupCommit | None = None
        self.buffer: list[Entry] = []
        self.buffer_configuration = False
        self.next_index = 0
        self.next_min_term = 0
        # (last index of a batch, who to tell or None, the ask's reply or None), oldest first.
        self.waiting: collections.deque[tuple[int, ActorRef | None, Reply | None]] = (
            collections.deque()
        )
        self.acknowledged = 0
        self.flush_queued = False
        self.timer: Cancellable | None = None
        self.compaction: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def pre_start(self) -> None:
        config = self.config
        self.log = self._io(
            "open",
            config.directory,
            lambda: config.open_log(
                config.directory,
                segment_size=config.segment_size,
                preallocate=config.preallocate,
            ),
        )
        path = config.hard_state_path or os.path.join(config.directory, HARD_STATE_NAME)
        self.hard_state = HardStateStore(path)
        self._io("read hard state", path, self.hard_state.load)
        self._reset_positions(self.log.durable_index)
        self.ctx.log.info(
            "wal.writer_started",
            directory=config.directory,
            policy=self.policy.value,
            first=self.log.first_index,
            last=self.log.last_index,
        )

    def post_stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self._fail_waiting(WalError("the log writer stopped before persisting these entries"))
        if self.log is not None:
            log, self.log = self.log, None
            # Closing fsyncs what is still pending, unless a write already failed.
            self._io("close", str(log.directory), log.close)

    def _reset_positions(self, durable_index: int) -> None:
        assert self.log is not None
        self.group = GroupCommit(
            self.policy, interval_ms=self.config.group_interval_ms, durable_index=durable_index
        )
        self.acknowledged = durable_index
        self.next_index = self.log.last_index + 1
        self.next_min_term = self.log.last_term

    # -- messages -------------------------------------------------------------------------

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        try:
            match message:
                case AppendBatch(entries, truncate_after):
                    self._append(entries, truncate_after, sender)
                case _Flush(timer):
                    self._flush(timer)
                case SaveHardState(term, voted_for):
                    self._answer(self._save_hard_state(term, voted_for), sender)
                case CompactThrough(index):
                    self._answer(self._compact_through(index), sender)
                case InstallSnapshotReset(index, term):
                    self._answer(self._reset(index, term), sender)
                case StatusRequest():
                    self._write_buffer()
                    self._answer(self._status(), sender)
                case CompactKeys():
                    self._start_kv_compaction(message)
                case _CompactionDone():
                    self._finish_kv_compaction(message)
                case _:
                    return UNHANDLED
        except _Rejected as exc:
            self.ctx.log.error(
                "wal.writer_refused", request=type(message).__name__, reason=str(exc)
            )
            reply = self._take_reply()
            if reply is not None:
                reply.failure(exc)
        return None

    def _answer(self, answer: Any, sender: ActorRef | None) -> None:
        """Reply to an ask, or tell the answer to the sender of a tell."""
        reply = self._take_reply()
        if reply is not None:
            reply.success(answer)
        elif sender is not None:
            sender.tell(answer)

    def _append(
        self, entries: list[Entry], truncate_after: int | None, sender: ActorRef | None
    ) -> None:
        assert self.log is not None and self.group is not None
        truncate = truncate_after is not None and truncate_after < self.next_index - 1
        start = truncate_after + 1 if truncate_after is not None and truncate else self.next_index
        self._check_batch(entries, start, self._term_before(start))
        if truncate:
            assert truncate_after is not None
            self._truncate(truncate_after)
        self.buffer.extend(entries)
        self.buffer_configuration = self.buffer_configuration or any(
            entry.kind == EntryKind.CONFIGURATION for entry in entries
        )
        if entries:
            self.next_index = entries[-1].index + 1
            self.next_min_term = entries[-1].term
        reply = self._take_reply()
        if entries or reply is not None:
            self.waiting.append((self.next_index - 1, sender, reply))
        if not self.flush_queued:
            self.flush_queued = True
            self.ctx.self_ref.tell(_Flush())

    def _term_before(self, index: int) -> int:
        """Term of the entry at index - 1, written or still buffered."""
        assert self.log is not None
        previous = index - 1
        if previous > self.log.last_index:
            return self.buffer[previous - self.log.last_index - 1].term
        if previous < self.log.base_index:
            raise _Rejected(f"index {index} is below the compaction base {self.log.base_index}")
        return self.log.term_at(previous)

    def _check_batch(self, entries: list[Entry], expected: int, term: int) -> None:
        for entry in entries:
            if not isinstance(entry, Entry):
                raise _Rejected(f"AppendBatch holds a {type(entry).__name__}, not a wal Entry")
            if entry.index != expected:
                raise _Rejected(
                    f"entry index {entry.index} does not continue the log (expected {expected})"
                )
            if entry.term < term:
                raise _Rejected(f"entry {entry.index} has term {entry.term} below {term}")
            if not 0 <= entry.kind < 256 or type(entry.payload) is not bytes:
                raise _Rejected(f"entry {entry.index}: kind must be 0-255, payload bytes")
            if not (0 <= entry.timestamp < 2**64 and 0 <= entry.term < 2**64):
                raise _Rejected(f"entry {entry.index}: term and timestamp must be u64")
            expected, term = expected + 1, entry.term

    def _truncate(self, index: int) -> None:
        assert self.log is not None and self.group is not None
        log = self.log
        written_last = log.last_index
        if index < written_last:
            self._io("truncate", str(log.directory), lambda: log.truncate_after(index))
            self.buffer.clear()  # only once the log accepted the truncation
        else:
            del self.buffer[index - written_last :]
        self.buffer_configuration = any(
            entry.kind == EntryKind.CONFIGURATION for entry in self.buffer
        )
        self.group.truncated(min(index, written_last))
        self.acknowledged = min(self.acknowledged, index)
        self.next_index = index + 1
        self.next_min_term = self.buffer[-1].term if self.buffer else log.last_term
        # Batches whose entries were removed will never be persisted: fail their asks.
        kept: collections.deque[tuple[int, ActorRef | None, Reply | None]] = collections.deque()
        for last, who, reply in self.waiting:
            if last <= index:
                kept.append((last, who, reply))
            elif reply is not None:
                reply.failure(WalError(f"entries up to {last} were truncated before persisting"))
        self.waiting = kept

    def _write_buffer(self) -> None:
        """Write the buffered entries (one pwritev per max_batch_bytes), without an fsync."""
        if not self.buffer:
            return
        assert self.log is not None and self.group is not None
        buffered = self.buffer
        self.buffer, self.buffer_configuration = [], False
        log = self.log
        limit = self.config.max_batch_bytes
        start = 0
        while start < len(buffered):
            end, size = start, 0
            while end < len(buffered) and (end == start or size < limit):
                size += len(buffered[end].payload) + ENTRY_OVERHEAD
                end += 1
            batch = buffered[start:end]
            start = end
            # The log fsyncs a batch holding a configuration entry by itself.
            appended = self._io(
                "write", str(log.directory), lambda batch=batch: log.append(batch, sync=False)
            )
            now = _now_ms()
            self.group.appended(
                appended.first_index,
                appended.last_index,
                now,
                configuration=appended.configuration,
            )
            if log.durable_index > self.group.durable_index:
                self.group.synced(log.durable_index, now)

    def _flush(self, timer: bool) -> None:
        assert self.log is not None and self.group is not None
        if timer:
            self.timer = None
        else:
            self.flush_queued = False
        self._write_buffer()
        now = _now_ms()
        if self.group.sync_due(now):
            log = self.log
            durable = self._io("fsync", str(log.directory), log.sync)
            self.group.synced(durable, now)
        self._acknowledge()
        deadline = self.group.deadline_ms()
        if deadline is not None and self.timer is None:
            self.timer = self.ctx.schedule_once(max(0.0, deadline - now) / 1000, _Flush(True))
        elif deadline is None and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _acknowledge(self) -> None:
        assert self.log is not None and self.group is not None
        upto = min(self.group.acknowledged_index, self.log.last_index)
        if upto < self.log.base_index:
            return
        term = self.log.term_at(upto)
        persisted = Persisted(upto, term)
        advanced = upto > self.acknowledged
        self.acknowledged = max(self.acknowledged, upto)
        told: set[ActorRef] = set()
        while self.waiting and self.waiting[0][0] <= upto:
            _last, who, reply = self.waiting.popleft()
            if reply is not None:
                reply.success(persisted)
            elif self.subscriber is None and who is not None and who not in told:
                who.tell(persisted)
                told.add(who)
        if self.subscriber is not None and advanced:
            self.subscriber.tell(persisted)

    def _save_hard_state(self, term: int, voted_for: str | None) -> HardStateSaved:
        assert self.hard_state is not None
        self._write_buffer()
        store = self.hard_state
        state = HardState(term, voted_for)
        self._io("save hard state", str(store.path), lambda: store.save(state))
        return HardStateSaved(term, voted_for)

    def _compact_through(self, index: int) -> LogCompacted:
        assert self.log is not None
        self._write_buffer()
        log = self.log
        if index > log.last_index:
            raise _Rejected(f"compact through {index}: the log ends at {log.last_index}")
        self._io("compact", str(log.directory), lambda: log.compact_through(index))
        return LogCompacted(log.first_index)

    def _reset(self, index: int, term: int) -> LogReset:
        assert self.log is not None
        log = self.log
        if index < log.base_index:
            raise _Rejected(f"reset to {index}: below the compaction base {log.base_index}")
        self.buffer.clear()
        self.buffer_configuration = False
        self._fail_waiting(WalError("the log was reset by a snapshot install"))
        self._io("reset", str(log.directory), lambda: log.reset(index, term))
        self._reset_positions(index)
        return LogReset(index, term)

    def _status(self) -> WriterStatus:
        assert self.log is not None
        log = self.log
        segments = log.segments()
        return WriterStatus(
            policy=self.policy.value,
            first_index=log.first_index,
            last_index=log.last_index,
            last_term=log.last_term,
            durable_index=log.durable_index,
            acknowledged_index=self.acknowledged,
            segments=len(segments),
            bytes=sum(segment.size for segment in segments),
            term=self.hard_state.current.current_term if self.hard_state else 0,
            voted_for=self.hard_state.current.voted_for if self.hard_state else None,
        )

    # -- key-value compaction in the background ------------------------------------------

    def _start_kv_compaction(self, request: CompactKeys) -> None:
        assert self.log is not None
        if self.compaction is not None:
            raise _Rejected("a key-value compaction is already running")
        self._write_buffer()
        plan = kv_compaction.plan(self.log, min(request.through_index, self.log.last_index))
        reply = self._take_reply()
        self_ref = self.ctx.self_ref
        key_of = self.config.key_of

        def run() -> None:
            try:
                rewritten = kv_compaction.rewrite(
                    plan,
                    now_ms=request.now_ms,
                    purge_deletes_older_than_ms=request.purge_deletes_older_than_ms,
                    key_of=key_of,
                )
            except Exception as exc:  # reported to the actor, which fails loudly
                self_ref.tell(_CompactionDone(None, exc, reply))
            else:
                self_ref.tell(_CompactionDone(rewritten, None, reply))

        self.compaction = threading.Thread(target=run, name="wal-kv-compaction", daemon=True)
        self.compaction.start()

    def _finish_kv_compaction(self, done: _CompactionDone) -> None:
        assert self.log is not None
        self.compaction = None
        if done.error is not None:
            # Its temporaries are debris that the next open removes; the log itself was not
            # written, so this is not a WalWriteFailed. Still loud: it read a bad segment or
            # could not write its temporary file.
            if done.reply is not None:
                done.reply.failure(done.error)
            raise WalError(f"kv compaction failed: {done.error}") from done.error
        assert done.rewritten is not None
        log = self.log
        result = self._io(
            "kv compaction swap",
            str(log.directory),
            lambda: kv_compaction.install(log, done.rewritten),
        )
        if done.reply is not None:
            done.reply.success(KeysCompacted(*dataclasses.astuple(result)))

    # -- helpers --------------------------------------------------------------------------

    def _take_reply(self) -> Reply | None:
        try:
            return self.ctx.deferred_reply()
        except RuntimeError:
            return None  # a tell: nobody waits for a reply

    def _io(self, operation: str, path: str, action: Callable[[], Any]) -> Any:
        """Run a file operation; an OSError or WalError is logged loudly and made fatal.

        A ValueError is the log refusing a request (the caller's bug): refused, not fatal.
        """
        try:
            return action()
        except ValueError as exc:
            raise _Rejected(str(exc)) from exc
        except (OSError, WalError) as exc:
            cause = exc if isinstance(exc, OSError) else exc.__cause__
            code = getattr(cause, "errno", None)
            self.ctx.log.error(
                "wal.writer_io_failed",
                operation=operation,
                path=getattr(cause, "filename", None) or path,
                errno=code,
                errno_name=errno.errorcode.get(code, None) if code is not None else None,
                error=str(exc),
            )
            failure = WalWriteFailed(f"{operation} failed on {path}: {exc}")
            # Asks waiting for an fsync are answered now: the actor is about to fail, and a
            # deferred reply would otherwise only ever time out.
            self._fail_waiting(failure)
            raise failure from exc

    def _fail_waiting(self, error: BaseException) -> None:
        for _last, _who, reply in self.waiting:
            if reply is not None:
                reply.failure(error)
        self.waiting.clear()


def _now_ms() -> float:
    return time.monotonic() * 1000.0
