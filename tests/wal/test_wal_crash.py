"""Process crash test: a child appends under `always` and prints each acknowledged index;
SIGKILL at a random moment never loses an acknowledged entry.

SIGKILL kills the process, not the machine: the page cache survives it, so this test proves
that acknowledgements never run ahead of the writes and that recovery keeps every whole batch
(a power cut is what the byte-level cut tests in test_wal_recovery model).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import signal
import subprocess
import sys

import pytest
from wal_crash_child import payload

from wal import SegmentedLog

HERE = pathlib.Path(__file__).parent


def kill_at_random(directory: pathlib.Path, mode: str, rng: random.Random) -> tuple[int, int]:
    """Run the child, SIGKILL it after a random delay; (index it started at, highest ack)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, str(HERE / "wal_crash_child.py"), str(directory), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        first = child.stdout.readline()
        assert first.startswith(b"ready "), f"child did not start: {first!r}"
        started = int(first.split()[1])
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(rng.uniform(0.01, 0.15))
        assert child.returncode is None, "the child exited by itself"
        child.send_signal(signal.SIGKILL)
        output = child.stdout.read()
    finally:
        child.kill()
        child.wait()
    acked = [int(line) for line in output.splitlines() if line.strip().isdigit()]
    return started, max(acked, default=started)


def check_log(directory: pathlib.Path, acked: int) -> int:
    with SegmentedLog.open(directory, segment_size=64 << 10) as log:
        assert log.last_index >= acked, f"acknowledged {acked} but the log ends at {log.last_index}"
        count = 0
        for entry in log.read_range(1, log.last_index + 1):
            count += 1
            assert entry.index == count and entry.payload == payload(entry.index)
        assert count == log.last_index
        return log.last_index


@pytest.mark.process
@pytest.mark.parametrize(("mode", "runs"), [("actor", 20), ("log", 10)])
def test_sigkill_never_loses_an_acknowledged_entry(
    tmp_path: pathlib.Path, mode: str, runs: int
) -> None:
    rng = random.Random(f"{mode}-{runs}")
    total_acked = 0
    last = 0
    for _ in range(runs):
        started, acked = kill_at_random(tmp_path, mode, rng)
        assert started == last  # the previous run's whole log was recovered
        total_acked += acked - started
        last = check_log(tmp_path, acked)
    assert total_acked > runs  # the children did make progress before being killed
