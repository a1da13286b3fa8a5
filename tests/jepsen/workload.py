"""Concurrent clients for the nemesis runs: they read and write registers and counters in
the KV state machine and record every operation, Jepsen-style.

Each client thread is a *process* in the history. An operation is one request: a command
or a linearizable query (``ClientQuery`` with ``stale=False``) asked of one node. A definite
refusal (``not_leader``, ``leadership_transfer``, ``superseded``) means nothing was applied,
so the client may follow the leader hint and ask again within the same operation; anything
else that is not an answer (a timeout, an ask that failed, an unknown error) leaves a
command's outcome unknown: it is recorded as ``info`` and the thread continues as a fresh
process, because that command may still take effect later. A read that gets no answer
had no effect and is recorded as ``fail``. Nothing here retries a command whose outcome is
unknown, so a command is applied at most once and the checker sees exactly what happened.

Keys rotate (a fresh key every ``ops_per_key`` operations) so that each key's history stays
small enough for the checker however long the run (as Jepsen's independent keys).
Register writes carry unique values, so a read names the write it saw; compare-and-set
swaps the value this client last read for a fresh one; counter adds are small positive
deltas and answer the new total.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
import time
from typing import Any

import msgpack

from consensus.client import Client
from consensus.messages import ClientCommand
from consensus.shell.protocol import ClientQuery
from coterie.jepsen import Recorder
from tests.jepsen.nscluster import NetnsCluster

DEFINITE_REFUSALS = {"not_leader", "leadership_transfer", "superseded"}


@dataclasses.dataclass(frozen=True)
class WorkloadConfig:
    clients: int = 10
    counter_clients: int = 3  # of ``clients``, these work on counter keys
    ops_per_key: int = 150
    op_timeout: float = 1.0
    # Negative control only: reads with stale=True from a random node. Not linearizable
    # by design, so a run with it must be caught by the checker.
    stale_reads: bool = False
    # Counter adds through consensus.client.Client, which retries a command whose attempt
    # timed out, to any node, until its deadline: with its exactly-once session every add
    # must still take effect once. Off by default: the runs check the cluster, not a client.
    retrying_client: bool = False
    # Negative control only (with retrying_client): plain commands, no session, so a retry
    # after a lost answer can apply an add twice, and the counter model shows it.
    client_sessions: bool = True


class KeySpace:
    """The key each family works on now; advances after ``ops_per_key`` operations."""

    def __init__(self, prefix: str, ops_per_key: int) -> None:
        self.prefix = prefix
        self.ops_per_key = ops_per_key
        self.lock = threading.Lock()
        self.number = 0
        self.used = 0
        self.keys = [f"{prefix}0"]

    def next(self) -> str:
        with self.lock:
            if self.used >= self.ops_per_key:
                self.number, self.used = self.number + 1, 0
                self.keys.append(f"{self.prefix}{self.number}")
            self.used += 1
            return self.keys[-1]


class Workload:
    def __init__(
        self, cluster: NetnsCluster, recorder: Recorder, seed: int, config: WorkloadConfig
    ) -> None:
        self.cluster = cluster
        self.recorder = recorder
        self.config = config
        self.seed = seed
        self.registers = KeySpace("r", config.ops_per_key)
        self.counters = KeySpace("c", config.ops_per_key)
        self.values = itertools.count(1)
        self.requests = itertools.count(1)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.addresses = list(cluster.addresses.values())

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        for worker in range(self.config.clients):
            counter = worker >= self.config.clients - self.config.counter_clients
            thread = threading.Thread(
                target=self._work,
                args=(worker, counter, random.Random(self.seed * 1000 + worker)),
                name=f"jepsen-client-{worker}",
                daemon=True,
            )
            self.threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(self.config.op_timeout * 3 + 5)

    def _work(self, process: int, counter: bool, rng: random.Random) -> None:
        target = self.addresses[process % len(self.addresses)]
        client = None
        if counter and self.config.retrying_client:
            client = Client(
                self.cluster.system,
                self.addresses,
                attempt_timeout=0.5,
                rng=rng,
                sessions=self.config.client_sessions,
            )
        last_read: dict[str, Any] = {}
        while not self.stopping.is_set():
            if counter:
                key = self.counters.next()
                if rng.random() < 0.5:
                    f, arg = "add", rng.randint(1, 5)
                else:
                    f, arg = "read", None
            else:
                key = self.registers.next()
                roll = rng.random()
                if roll < 0.5:
                    f, arg = "read", None
                elif roll < 0.8:
                    f, arg = "write", next(self.values)
                else:
                    f, arg = "cas", (last_read.get(key), next(self.values))
            if f == "read" and self.config.stale_reads:
                target = rng.choice(self.addresses)
            if client is not None and f == "add":
                outcome, value = self._retrying_add(client, process, key, arg)
            else:
                outcome, value, target = self.operate(process, f, key, arg, target, rng)
            if f == "read" and outcome == "ok":
                last_read[key] = value
            if outcome == "info":
                process = self.recorder.crashed()
            elif outcome == "fail":
                time.sleep(rng.uniform(0, 0.02))

    # ------------------------------------------------------------------ one operation

    def operate(
        self, process: int, f: str, key: str, arg: Any, target: str, rng: random.Random
    ) -> tuple[str, Any, str]:
        """Run one operation, record it, and say how it ended and where to go next."""
        call = self.recorder.invoke(process, f, key, arg)
        outcome, value, target = self._attempt(f, key, arg, target, rng)
        if f == "cas" and outcome == "ok":
            value = bool(value)
        self.recorder.complete(call, outcome, value if outcome == "ok" else str(value))
        return outcome, value, target

    def _retrying_add(self, client: Client, process: int, key: str, delta: int) -> tuple[str, Any]:
        call = self.recorder.invoke(process, "add", key, delta)
        try:
            committed = client.submit(msgpack.packb(["add", key, delta]), timeout=3.0)
        except Exception as exc:  # gave up: it may still have been applied
            self.recorder.complete(call, "info", repr(exc))
            return "info", None
        self.recorder.complete(call, "ok", committed.result)
        return "ok", committed.result

    def _attempt(
        self, f: str, key: str, arg: Any, target: str, rng: random.Random
    ) -> tuple[str, Any, str]:
        is_read = f == "read"
        unknown = "fail" if is_read else "info"
        deadline = time.monotonic() + self.config.op_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "fail", "only refusals until the deadline", target
            message = self._message(f, key, arg)
            ref = self.cluster.system.ref(f"coterie://_@{target}/user/node")
            try:
                answer = ref.ask(message, timeout=remaining).result(remaining + 1.0)
            except Exception as exc:  # a timeout or a failed ask: the outcome is unknown
                return unknown, f"{target}: {type(exc).__name__}", self._other(target, rng)
            if answer.ok:
                return "ok", answer.result, target
            if answer.error not in DEFINITE_REFUSALS:
                return unknown, f"{target}: {answer.error}", self._other(target, rng)
            hint = answer.leader_hint
            if hint and hint != target and hint in self.addresses:
                target = hint
                continue
            target = self._other(target, rng)
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def _message(self, f: str, key: str, arg: Any) -> Any:
        request = f"j{self.seed}-{next(self.requests)}"
        if f == "read":
            # A counter that was never added to reads 0, as the counter model starts.
            query = ["get", key, 0] if key.startswith("c") else ["get", key]
            return ClientQuery(request, msgpack.packb(query), self.config.stale_reads)
        if f == "write":
            return ClientCommand(request, msgpack.packb(["put", key, arg]))
        if f == "cas":
            return ClientCommand(request, msgpack.packb(["cas", key, arg[0], arg[1]]))
        if f == "add":
            return ClientCommand(request, msgpack.packb(["add", key, arg]))
        raise ValueError(f)

    def _other(self, target: str, rng: random.Random) -> str:
        return rng.choice([a for a in self.addresses if a != target] or self.addresses)

    # ------------------------------------------------------------------ after the run

    def final_reads(self, timeout: float = 10.0) -> None:
        """One linearizable read of every key used, recorded (checked like the rest)."""
        process = self.recorder.crashed()
        rng = random.Random(self.seed)
        target = self.addresses[0]
        for key in self.registers.keys + self.counters.keys:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                outcome, _value, target = self.operate(process, "read", key, None, target, rng)
                if outcome == "ok":
                    break
