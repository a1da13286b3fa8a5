"""One PySyncObj node holding a replicated counter: the baseline of ``bench_cluster``.

PySyncObj has no client protocol: an application calls a ``@replicated`` method on its own node
(a follower forwards the command to the leader). So the workloads run *inside* a node process,
driven by the benchmark over this process's stdin/stdout, one JSON object per line:

* ``{"op": "status"}`` -> ``{"ready", "is_leader", "leader"}``
* ``{"op": "throughput", "seconds", "warmup", "inflight"}``: keep ``inflight`` increments
  outstanding (each callback issues the next one), count completions over ``seconds`` after
  ``warmup`` -> ``{"ops", "seconds", "errors"}``
* ``{"op": "sequential", "seconds", "max_ops"}``: synchronous increments one after another
  -> ``{"latencies_s": [...], "errors"}``
* ``{"op": "writer"}``: start a background loop of synchronous increments (0.25 s timeout
  each) recording when each started and was acknowledged; ``{"op": "first_ack_after", "t":
  T}`` -> when the first write started after T was acknowledged (``time.monotonic()``, one
  clock for all processes on Linux)
* ``{"op": "value"}`` -> ``{"value"}``; ``{"op": "quit"}``.

Run: ``python bench/pysyncobj_node.py --self 127.0.0.1:7001 --partners 127.0.0.1:7002,...
[--journal FILE] [--no-batch]``. ``--journal`` turns on PySyncObj's journal file (it writes
every entry but never fsyncs); ``--no-batch`` sets ``appendEntriesUseBatch=False`` (each
command replicated at once: its lowest latency, lower throughput).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjException, replicated


class Counter(SyncObj):
    def __init__(self, self_address: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_address, partners, conf)
        self._value = 0

    @replicated
    def increment(self) -> int:
        self._value += 1
        return self._value

    def value(self) -> int:
        return self._value


class Driver:
    def __init__(self, node: Counter) -> None:
        self.node = node
        self.acks: list[tuple[float, float]] = []  # (started, acknowledged)
        self.writer: threading.Thread | None = None

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "status":
            leader = self.node._getLeader()
            return {
                "ready": self.node.isReady(),
                "is_leader": self.node._isLeader(),
                "leader": None if leader is None else str(leader),
            }
        if op == "throughput":
            return self.throughput(request["seconds"], request["warmup"], request["inflight"])
        if op == "sequential":
            return self.sequential(request["seconds"], request["max_ops"])
        if op == "writer":
            self.writer = threading.Thread(target=self._write_forever, daemon=True)
            self.writer.start()
            return {}
        if op == "first_ack_after":
            after = [done for started, done in list(self.acks) if started > request["t"]]
            return {"t": after[0] if after else None}
        if op == "value":
            return {"value": self.node.value()}
        raise ValueError(f"unknown op {op!r}")

    def throughput(self, seconds: float, warmup: float, inflight: int) -> dict[str, Any]:
        done = [0, 0]
        reasons: dict[str, int] = {}
        running = [True]
        node = self.node

        def on_result(_result: Any, error: int) -> None:
            if error == FAIL_REASON.SUCCESS:
                done[0] += 1
            else:
                done[1] += 1
                reasons[str(error)] = reasons.get(str(error), 0) + 1
            if running[0]:
                node.increment(callback=on_result)

        for _ in range(inflight):
            node.increment(callback=on_result)
        time.sleep(warmup)
        start_count, start = done[0], time.monotonic()
        time.sleep(seconds)
        ops, elapsed = done[0] - start_count, time.monotonic() - start
        running[0] = False
        time.sleep(0.5)  # let the outstanding requests drain before the next workload
        return {
            "ops": ops,
            "seconds": elapsed,
            "errors": done[1],
            "error_reasons": reasons,  # FAIL_REASON values: 3 = discarded, 5 = not leader ...
            "still_leader": node._isLeader(),
        }

    def sequential(self, seconds: float, max_ops: int) -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(latencies) < max_ops:
            started = time.perf_counter()
            try:
                self.node.increment(sync=True, timeout=5.0)
            except SyncObjException:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
        return {"latencies_s": latencies, "errors": errors}

    def _write_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.node.increment(sync=True, timeout=0.25)
            except SyncObjException:
                continue
            self.acks.append((started, time.monotonic()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--self", dest="self_address", required=True)
    parser.add_argument("--partners", required=True)
    parser.add_argument("--journal", default=None)
    parser.add_argument("--no-batch", action="store_true")
    args = parser.parse_args()
    conf = SyncObjConf(
        journalFile=args.journal,
        appendEntriesUseBatch=not args.no_batch,
        dynamicMembershipChange=False,
    )
    node = Counter(args.self_address, args.partners.split(","), conf)
    driver = Driver(node)
    print(json.dumps({"started": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            answer = driver.handle(request)
        except Exception as exc:  # reported to the benchmark, which fails loudly
            answer = {"error": repr(exc)}
        print(json.dumps(answer), flush=True)
    node.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
