"""Child process for the SIGKILL tests: appends forever and prints each acknowledged index.

Usage: wal_crash_child.py DIR log|actor

``log``: calls SegmentedLog.append(sync=True) and prints the batch's last index once it
returns. ``actor``: sends AppendBatch to a log-writer actor under the ``always`` policy and
prints ``up_to_index`` of each Persisted it receives. Either way a printed index is a promise
that the entries up to it survive a crash. Payloads are derived from (index, term) so that the
parent can check every byte it reads back.
"""

from __future__ import annotations

import pathlib
import queue
import sys

from wal import Entry, SegmentedLog


def payload(index: int) -> bytes:
    return (b"%d|" % index) * (1 + index % 7)


def batch(start: int, count: int) -> list[Entry]:
    return [Entry(i, 1, 0, i, payload(i)) for i in range(start, start + count)]


def run_log(directory: pathlib.Path) -> None:
    with SegmentedLog.open(directory, segment_size=64 << 10) as log:
        print(f"ready {log.last_index}", flush=True)
        n = 0
        while True:
            n += 1
            appended = log.append(batch(log.last_index + 1, 1 + n % 5), sync=True)
            print(appended.last_index, flush=True)


def run_actor(directory: pathlib.Path) -> None:
    from actors import Actor, ActorSystem, Props
    from wal.writer_actor import LogWriter, WriterConfig
    from wal.writer_messages import AppendBatch, Persisted, StatusRequest

    acks: queue.SimpleQueue[int] = queue.SimpleQueue()

    class Printer(Actor):
        def receive(self, message: object, sender: object) -> None:
            if isinstance(message, Persisted):
                acks.put(message.up_to_index)

    with ActorSystem("crash-child") as system:
        printer = system.spawn(Printer, "printer")
        config = WriterConfig(directory=str(directory), policy="always", segment_size=64 << 10)
        writer = system.spawn(Props(LogWriter, config, subscriber=printer), "writer")
        last = writer.ask(StatusRequest(), timeout=10).result().last_index
        print(f"ready {last}", flush=True)
        n = 0
        while True:
            # Keep a few batches in flight so the writer coalesces them.
            for _ in range(3):
                n += 1
                count = 1 + n % 5
                writer.tell(AppendBatch(batch(last + 1, count), None))
                last += count
            while True:
                acked = acks.get()
                print(acked, flush=True)
                if acked >= last - 5:
                    break


if __name__ == "__main__":
    import structlog

    # stdout carries the acknowledgements only.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    target = pathlib.Path(sys.argv[1])
    (run_actor if sys.argv[2] == "actor" else run_log)(target)
