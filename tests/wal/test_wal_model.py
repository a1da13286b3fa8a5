"""Property test: random appends, truncations, compactions, resets and reopens of a real log
always agree with a list in memory."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wal import Entry, EntryKind, SegmentedLog

SEGMENT_SIZE = 700  # small, so that a few appends already span several segments


class LogModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="wal-model-")
        self.log = SegmentedLog.open(self.directory, segment_size=SEGMENT_SIZE)
        self.base_index = 0
        self.base_term = 0
        self.entries: list[Entry] = []  # the entries after the base, in order

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def last_index(self) -> int:
        return self.base_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.base_term

    @rule(
        count=st.integers(1, 6),
        term_step=st.integers(0, 2),
        sizes=st.lists(st.integers(0, 90), min_size=6, max_size=6),
        configuration=st.booleans(),
        sync=st.booleans(),
    )
    def append(
        self, count: int, term_step: int, sizes: list[int], configuration: bool, sync: bool
    ) -> None:
        term = self.last_term + term_step
        start = self.last_index + 1
        batch = [
            Entry(
                start + n,
                term,
                EntryKind.CONFIGURATION if configuration and n == 0 else EntryKind.COMMAND,
                start + n,
                bytes([(start + n) % 256]) * sizes[n],
            )
            for n in range(count)
        ]
        self.log.append(batch, sync=sync)
        self.entries.extend(batch)
        if configuration or sync:
            assert self.log.durable_index == self.last_index

    @precondition(lambda self: self.entries)
    @rule(data=st.data())
    def truncate_after(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.base_index, self.last_index - 1), label="index")
        self.log.truncate_after(index)
        del self.entries[index - self.base_index :]

    @precondition(lambda self: self.entries)
    @rule(data=st.data())
    def compact_through(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.base_index + 1, self.last_index), label="index")
        self.log.compact_through(index)
        kept = index - self.base_index
        self.base_term = self.entries[kept - 1].term
        self.base_index = index
        del self.entries[:kept]

    @rule(ahead=st.integers(-3, 5), term_step=st.integers(0, 2))
    def reset(self, ahead: int, term_step: int) -> None:
        index = max(self.base_index, self.last_index + ahead)
        term = self.last_term + term_step
        self.log.reset(index, term)
        self.base_index, self.base_term, self.entries = index, term, []

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = SegmentedLog.open(self.directory, segment_size=SEGMENT_SIZE)
        assert self.log.tail_damage is None

    @rule(data=st.data())
    def read_some(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(self.base_index + 1, self.last_index + 2), label="start")
        stop = data.draw(st.integers(start, self.last_index + 3), label="stop")
        expected = self.entries[start - self.base_index - 1 : stop - self.base_index - 1]
        assert list(self.log.read_range(start, stop)) == expected
        if self.base_index < start <= self.last_index:
            assert self.log.get(start) == self.entries[start - self.base_index - 1]

    @invariant()
    def positions_agree(self) -> None:
        log = self.log
        assert log.first_index == self.base_index + 1
        assert log.last_index == self.last_index
        assert log.last_term == self.last_term
        assert log.term_at(self.base_index) == self.base_term
        for entry in self.entries[-3:]:
            assert log.term_at(entry.index) == entry.term

    def check_everything(self) -> None:
        assert list(self.log.read_range(self.base_index + 1, self.last_index + 1)) == self.entries
        assert [self.log.term_at(e.index) for e in self.entries] == [e.term for e in self.entries]


class LogModelWithFullCheck(LogModel):
    def teardown(self) -> None:
        try:
            self.check_everything()
            self.log.close()
            self.log = SegmentedLog.open(self.directory, segment_size=SEGMENT_SIZE)
            self.check_everything()
        finally:
            super().teardown()


LogModelWithFullCheck.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_log_matches_the_model = LogModelWithFullCheck.TestCase
