"""Cluster benchmark: coterie against PySyncObj, the same workloads in the same run.

Both systems run 3 node processes on 127.0.0.1 replicating a counter; each workload is run on
coterie and on PySyncObj one after the other, on fresh clusters:

(a) **throughput**: increments with ``inflight`` requests outstanding (each completion issues
    the next), counted over ``seconds`` after a warm-up; best of two attempts (both reported);
(b) **sequential latency**: synchronous increments one after another, p50/p99;
(c) (a) and (b) again with disk persistence: coterie's WAL with ``always`` (fsync before every
    acknowledgement) and ``group`` (group commit, fsync at most every 2 ms, acknowledged after
    it) against PySyncObj's journal file (which writes every entry and never fsyncs);
(d) **failover**: a writer issuing synchronous increments with a 0.25 s attempt timeout; the
    leader is SIGKILLed; the time from the kill to the acknowledgement of the first write
    *started* after it (an answer the dying leader sent just before the kill does not count;
    this adds at most one write's latency to the recovery itself);
(e) **client sessions**: (a) and (b) in memory again with ``sessions=False`` (plain commands,
    no exactly-once), so the summary can say what sessions cost in the same run.

Where the load comes from differs, as the two APIs differ. coterie's load is a client
(``consensus.client.Client``) in this benchmark process: a fourth process, every request
crossing the network to the leader and back. PySyncObj has no client protocol: an application
calls a replicated method on its own node, so its load runs inside the leader's process
(``bench/pysyncobj_node.py``), its most favourable setting (no hop to reach the leader); its
failover writer runs in a follower, which forwards to the leader. PySyncObj runs with its
defaults (election timeout 0.4-1.4 s, batching on) except where a row says otherwise; its
sequential latency is measured with batching off too, its best case. coterie runs with its
defaults (election timeout 150-300 ms, heartbeat 50 ms; client batches of at most 1024
commands, 4 batches in flight).

The machine is shared: the load average before and after each run is recorded with it, and
CPU seconds per process are reported for the throughput runs (CPU per operation does not
depend on how busy the machine is as much as operations per second do).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = pathlib.Path(__file__).parent / "results"
PYSYNCOBJ_NODE = pathlib.Path(__file__).parent / "pysyncobj_node.py"
INFLIGHT = 10_000  # requests outstanding in the throughput runs (as in the baseline)
INCREMENT = msgpack.packb(["add", 1])


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles(latencies: list[float]) -> dict[str, Any]:
    if not latencies:
        return {"ops": 0}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {
        "ops": len(ordered),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------- coterie


class CoterieCluster:
    """Three ``coterie node`` processes with a counter, durability as given."""

    def __init__(self, directory: pathlib.Path, durability: str) -> None:
        from actors import ActorSystem  # lazily: importing the bench must not start anything

        self.directory = directory
        self.ids = ["n1", "n2", "n3"]
        ports = _free_ports(3)
        self.addresses = {n: f"127.0.0.1:{p}" for n, p in zip(self.ids, ports, strict=True)}
        lines = ['cluster_id = "bench"', 'state_machine = "examples.counter:Counter"', ""]
        for node in self.ids:
            lines += ["[[nodes]]", f'id = "{node}"', f'address = "{self.addresses[node]}"']
            lines += [f'data_dir = "{node}"', ""]
        lines += ["[wal]", f'durability = "{durability}"', "", "[security]", "curve = false"]
        self.config = directory / "cluster.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.command = [sys.executable, "-m", "coterie.cli", "node", "--config", str(self.config)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.system = ActorSystem("bench", host="127.0.0.1", cluster_id="bench")

    def start(self, node: str) -> None:
        log = (self.directory / f"{node}.log").open("ab")
        self.procs[node] = subprocess.Popen(
            [*self.command, "--id", node, "--log-level", "warning", "--json-logs"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )

    def client(self, **options: Any) -> Any:
        from consensus.client import Client

        return Client(self.system, list(self.addresses.values()), **options)

    def leader(self, timeout: float = 20.0) -> str:
        probe = self.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.ids:
                if node not in self.procs:
                    continue
                with contextlib.suppress(Exception):
                    if probe.status(self.addresses[node], 0.5).role == "leader":
                        return node
            time.sleep(0.05)
        raise RuntimeError(f"no coterie leader within {timeout}s; logs in {self.directory}")

    def kill(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        self.system.shutdown()


@contextlib.contextmanager
def coterie_cluster(durability: str) -> Iterator[CoterieCluster]:
    with tempfile.TemporaryDirectory(prefix="bench-coterie-") as directory:
        cluster = CoterieCluster(pathlib.Path(directory), durability)
        try:
            for node in cluster.ids:
                cluster.start(node)
            cluster.leader()
            yield cluster
        finally:
            cluster.close()


def coterie_throughput(
    durability: str, seconds: float, warmup: float, sessions: bool = True
) -> dict[str, Any]:
    with coterie_cluster(durability) as cluster:
        client = cluster.client(attempt_timeout=5.0, sessions=sessions)
        done = [0, 0]
        running = [True]

        def on_done(future: Any) -> None:
            done[0 if future.exception() is None else 1] += 1
            if running[0]:
                client.submit_async(INCREMENT, 30.0).add_done_callback(on_done)

        load_before = _load()
        for future in client.submit_many([INCREMENT] * INFLIGHT, 30.0):
            future.add_done_callback(on_done)
        time.sleep(warmup)
        pids = {node: proc.pid for node, proc in cluster.procs.items()}
        pids["client"] = os.getpid()
        cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        count, batches, started = done[0], client.batches_sent, time.monotonic()
        time.sleep(seconds)
        ops, elapsed = done[0] - count, time.monotonic() - started
        batches = client.batches_sent - batches
        cpu = {name: round(_cpu_seconds(pid) - cpu_before[name], 3) for name, pid in pids.items()}
        running[0] = False
        time.sleep(1.0)  # let the outstanding requests drain
        return {
            "ops_per_s": round(ops / elapsed),
            "ops": ops,
            "seconds": round(elapsed, 2),
            "errors": done[1],
            "inflight": INFLIGHT,
            "client_batches": batches,
            "commands_per_batch": round(ops / max(batches, 1), 1),
            "cpu_seconds": cpu,
            "cpu_us_per_op": round(sum(cpu.values()) / max(ops, 1) * 1e6, 2),
            "loadavg_before": load_before,
            "loadavg_after": _load(),
        }


def coterie_sequential(
    durability: str, seconds: float, max_ops: int, sessions: bool = True
) -> dict[str, Any]:
    with coterie_cluster(durability) as cluster:
        client = cluster.client(sessions=sessions)
        for _ in range(50):  # warm up: connections, leader known
            client.submit(INCREMENT)
        load_before = _load()
        latencies: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(latencies) < max_ops:
            started = time.perf_counter()
            client.submit(INCREMENT)
            latencies.append(time.perf_counter() - started)
        return {**_percentiles(latencies), "loadavg_before": load_before, "loadavg_after": _load()}


def coterie_failover(runs: int) -> dict[str, Any]:
    times: list[float] = []
    with coterie_cluster("never") as cluster:
        for _ in range(runs):
            client = cluster.client(attempt_timeout=0.25)
            acks: list[tuple[float, float]] = []  # (started, acknowledged)
            stop = threading.Event()

            def write(client: Any = client, acks: list = acks, stop: Any = stop) -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    with contextlib.suppress(Exception):
                        client.submit(INCREMENT, timeout=10.0)
                        acks.append((started, time.monotonic()))

            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            time.sleep(1.0)
            victim = cluster.leader()
            killed_at = time.monotonic()
            cluster.kill(victim)
            deadline = killed_at + 15
            while time.monotonic() < deadline and not any(s > killed_at for s, _ in acks):
                time.sleep(0.005)
            after = [done for started, done in acks if started > killed_at]
            stop.set()
            writer.join(15)
            if after:
                times.append(after[0] - killed_at)
            cluster.start(victim)  # back in, caught up, before the next round
            time.sleep(1.5)
    return _failover_summary(times, runs)


def _failover_summary(times: list[float], runs: int) -> dict[str, Any]:
    return {
        "runs": runs,
        "recovered": len(times),
        "seconds": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 3) if times else None,
        "max_s": round(max(times), 3) if times else None,
    }


# ---------------------------------------------------------------------------- PySyncObj


class PySyncObjCluster:
    def __init__(self, directory: pathlib.Path, journal: bool, batch: bool) -> None:
        self.directory = directory
        self.journal = journal
        self.batch = batch
        ports = _free_ports(3)
        self.addresses = [f"127.0.0.1:{p}" for p in ports]
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, address: str) -> None:
        partners = ",".join(a for a in self.addresses if a != address)
        command = [sys.executable, str(PYSYNCOBJ_NODE), "--self", address, "--partners", partners]
        if self.journal:
            journal = self.directory / f"journal-{address.rsplit(':', 1)[1]}"
            command += ["--journal", str(journal)]
        if not self.batch:
            command.append("--no-batch")
        log = (self.directory / f"node-{address.rsplit(':', 1)[1]}.log").open("a")
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=str(ROOT),
        )
        self.procs[address] = proc
        started = self._read(proc)
        if not started.get("started"):
            raise RuntimeError(f"pysyncobj node {address} did not start: {started}")

    def request(self, address: str, op: str, **fields: Any) -> dict[str, Any]:
        proc = self.procs[address]
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        proc.stdin.flush()
        answer = self._read(proc)
        if "error" in answer:
            raise RuntimeError(f"pysyncobj node {address}: {answer['error']}")
        return answer

    @staticmethod
    def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("a pysyncobj node exited; see its log")
        return dict(json.loads(line))

    def leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for address in list(self.procs):
                status = self.request(address, "status")
                if status["is_leader"] and status["ready"]:
                    return address
            time.sleep(0.05)
        raise RuntimeError(f"no PySyncObj leader within {timeout}s; logs in {self.directory}")

    def kill(self, address: str) -> None:
        proc = self.procs.pop(address)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write('{"op": "quit"}\n')
                proc.stdin.flush()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


@contextlib.contextmanager
def pysyncobj_cluster(*, journal: bool, batch: bool) -> Iterator[PySyncObjCluster]:
    with tempfile.TemporaryDirectory(prefix="bench-pysyncobj-") as directory:
        cluster = PySyncObjCluster(pathlib.Path(directory), journal, batch)
        try:
            for address in cluster.addresses:
                cluster.start(address)
            cluster.leader()
            yield cluster
        finally:
            cluster.close()


def pysyncobj_throughput(journal: bool, seconds: float, warmup: float) -> dict[str, Any]:
    with pysyncobj_cluster(journal=journal, batch=True) as cluster:
        leader = cluster.leader()
        pids = {address: proc.pid for address, proc in cluster.procs.items()}
        load_before = _load()
        cpu_before = {a: _cpu_seconds(pid) for a, pid in pids.items()}
        answer = cluster.request(
            leader, "throughput", seconds=seconds, warmup=warmup, inflight=INFLIGHT
        )
        cpu = {a: round(_cpu_seconds(pid) - cpu_before[a], 3) for a, pid in pids.items()}
        ops = answer["ops"]
        return {
            "ops_per_s": round(ops / answer["seconds"]),
            "ops": ops,
            "seconds": round(answer["seconds"], 2),
            "errors": answer["errors"],
            "error_reasons": answer["error_reasons"],
            "still_leader": answer["still_leader"],
            "inflight": INFLIGHT,
            # includes the warm-up and drain around the measured window: an upper bound
            "cpu_seconds_whole_run": cpu,
            "loadavg_before": load_before,
            "loadavg_after": _load(),
        }


def pysyncobj_sequential(journal: bool, batch: bool, seconds: float, max_ops: int) -> dict:
    with pysyncobj_cluster(journal=journal, batch=batch) as cluster:
        leader = cluster.leader()
        cluster.request(leader, "sequential", seconds=0.2, max_ops=20)  # warm up
        load_before = _load()
        answer = cluster.request(leader, "sequential", seconds=seconds, max_ops=max_ops)
        return {
            **_percentiles(answer["latencies_s"]),
            "errors": answer["errors"],
            "loadavg_before": load_before,
            "loadavg_after": _load(),
        }


def pysyncobj_failover(runs: int) -> dict[str, Any]:
    times: list[float] = []
    for _ in range(runs):  # a fresh cluster each time: a restarted node needs its state back
        with pysyncobj_cluster(journal=False, batch=True) as cluster:
            leader = cluster.leader()
            writer = next(a for a in cluster.addresses if a != leader)
            cluster.request(writer, "writer")
            time.sleep(1.0)
            killed_at = time.monotonic()
            cluster.kill(leader)
            deadline = killed_at + 20
            while time.monotonic() < deadline:
                first = cluster.request(writer, "first_ack_after", t=killed_at)["t"]
                if first is not None:
                    times.append(first - killed_at)
                    break
                time.sleep(0.01)
    return _failover_summary(times, runs)


# ---------------------------------------------------------------------------- the suite


def best_of(attempts: int, measure: Any, *args: Any) -> dict[str, Any]:
    """The attempt with the most operations per second, with every attempt's figure: the
    machine is shared, and one starved process (a PySyncObj leader missing its heartbeats
    and losing an election, say) should not stand for a system's throughput."""
    runs = [measure(*args) for _ in range(attempts)]
    best = max(runs, key=lambda r: r["ops_per_s"])
    return {**best, "attempts_ops_per_s": [r["ops_per_s"] for r in runs]}


def run(quick: bool) -> dict[str, Any]:
    from actors import configure_logging  # lazily: importing the bench must not start anything

    configure_logging("warning", json=False)
    attempts = 1 if quick else 2
    seconds, warmup = (2.0, 1.0) if quick else (10.0, 2.0)
    seq_seconds, seq_max = (1.5, 300) if quick else (6.0, 5000)
    failovers = 1 if quick else 5
    results: dict[str, Any] = {"coterie": {}, "pysyncobj": {}}
    ours, theirs = results["coterie"], results["pysyncobj"]

    def step(name: str) -> None:
        print(f"  {name} (load {_load()})", flush=True)

    step("throughput, in memory")
    ours["throughput_never"] = best_of(attempts, coterie_throughput, "never", seconds, warmup)
    theirs["throughput_memory"] = best_of(attempts, pysyncobj_throughput, False, seconds, warmup)
    step("sequential, in memory")
    ours["sequential_never"] = coterie_sequential("never", seq_seconds, seq_max)
    theirs["sequential_memory_batch_off"] = pysyncobj_sequential(False, False, seq_seconds, seq_max)
    theirs["sequential_memory_batch_on"] = pysyncobj_sequential(
        False, True, min(seq_seconds, 3.0), seq_max
    )
    step("in memory, without client sessions (their cost)")
    ours["throughput_never_no_sessions"] = best_of(
        attempts, coterie_throughput, "never", seconds, warmup, False
    )
    ours["sequential_never_no_sessions"] = coterie_sequential("never", seq_seconds, seq_max, False)
    step("with persistence")
    for policy in ("group", "always"):
        ours[f"throughput_{policy}"] = best_of(
            attempts, coterie_throughput, policy, seconds, warmup
        )
        ours[f"sequential_{policy}"] = coterie_sequential(policy, seq_seconds, seq_max)
    theirs["throughput_journal"] = best_of(attempts, pysyncobj_throughput, True, seconds, warmup)
    theirs["sequential_journal_batch_off"] = pysyncobj_sequential(True, False, seq_seconds, seq_max)
    step("failover")
    ours["failover"] = coterie_failover(failovers)
    theirs["failover"] = pysyncobj_failover(failovers)
    results["summary"] = summarize(results)
    results["cpus"] = os.cpu_count()
    try:
        write_chart(results, RESULTS / "cluster.png")
        results["chart"] = "bench/results/cluster.png"
    except ImportError as exc:  # matplotlib comes with the bench extra (make bench)
        results["chart"] = f"not drawn: {exc}"
    return results


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    ours, theirs = results["coterie"], results["pysyncobj"]
    base = theirs["throughput_memory"]["ops_per_s"]
    best_p50 = min(
        theirs["sequential_memory_batch_off"].get("p50_ms", float("inf")),
        theirs["sequential_memory_batch_on"].get("p50_ms", float("inf")),
    )
    return {
        "throughput_ratio_vs_pysyncobj": round(ours["throughput_never"]["ops_per_s"] / base, 2),
        "target_throughput_ratio": 5.0,
        "our_sequential_p99_ms": ours["sequential_never"].get("p99_ms"),
        "pysyncobj_best_sequential_p50_ms": best_p50,
        "group_commit_ops_per_s": ours["throughput_group"]["ops_per_s"],
        "pysyncobj_journal_ops_per_s": theirs["throughput_journal"]["ops_per_s"],
        "group_commit_at_least_journal": ours["throughput_group"]["ops_per_s"]
        >= theirs["throughput_journal"]["ops_per_s"],
        # Exactly-once sessions against plain commands, same run (1.0: free).
        "sessions_throughput_ratio": round(
            ours["throughput_never"]["ops_per_s"]
            / max(ours["throughput_never_no_sessions"]["ops_per_s"], 1),
            2,
        ),
        "sessions_sequential_p50_ratio": round(
            ours["sequential_never"].get("p50_ms", 0.0)
            / max(ours["sequential_never_no_sessions"].get("p50_ms", 0.0), 1e-9),
            2,
        ),
        "our_failover_median_s": ours["failover"]["median_s"],
        "pysyncobj_failover_median_s": theirs["failover"]["median_s"],
    }


def write_chart(results: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours, theirs = results["coterie"], results["pysyncobj"]
    fig, (tput, latency, failover) = plt.subplots(1, 3, figsize=(15, 4.8))
    names = [
        "coterie\nnever",
        "coterie\ngroup",
        "coterie\nalways",
        "PySyncObj\nmemory",
        "PySyncObj\njournal",
    ]
    values = [
        ours["throughput_never"]["ops_per_s"],
        ours["throughput_group"]["ops_per_s"],
        ours["throughput_always"]["ops_per_s"],
        theirs["throughput_memory"]["ops_per_s"],
        theirs["throughput_journal"]["ops_per_s"],
    ]
    colours = ["#2b6cb0"] * 3 + ["#c05621"] * 2
    tput.bar(names, values, color=colours)
    tput.tick_params(axis="x", labelsize=8)
    tput.set_title(f"(a, c) throughput, {INFLIGHT} requests in flight")
    tput.set_ylabel("increments / s")
    for x, v in enumerate(values):
        tput.text(x, v, f"{v:,}", ha="center", va="bottom", fontsize=8)
    rows = [
        ("coterie never", ours["sequential_never"]),
        ("coterie group", ours["sequential_group"]),
        ("coterie always", ours["sequential_always"]),
        ("PySyncObj mem, batch off", theirs["sequential_memory_batch_off"]),
        ("PySyncObj journal, batch off", theirs["sequential_journal_batch_off"]),
        ("PySyncObj mem, batch on", theirs["sequential_memory_batch_on"]),
    ]
    labels = [name for name, _ in rows]
    ys = range(len(rows))
    latency.barh([y + 0.2 for y in ys], [r.get("p50_ms", 0) for _, r in rows], 0.4, label="p50")
    latency.barh([y - 0.2 for y in ys], [r.get("p99_ms", 0) for _, r in rows], 0.4, label="p99")
    latency.set_yticks(list(ys), labels, fontsize=8)
    latency.set_xscale("log")
    latency.set_xlabel("ms (log scale)")
    latency.set_title("(b, c) sequential synchronous increments")
    latency.legend()
    fo_names = ["coterie", "PySyncObj"]
    fo = [ours["failover"], theirs["failover"]]
    for x, summary in enumerate(fo):
        failover.scatter([x] * len(summary["seconds"]), summary["seconds"], color="black")
        if summary["median_s"] is not None:
            failover.bar(x, summary["median_s"], color=["#2b6cb0", "#c05621"][x], alpha=0.6)
    failover.set_xticks([0, 1], fo_names)
    failover.set_ylabel("seconds")
    failover.set_title("(d) leader SIGKILL -> next acknowledged write")
    fig.suptitle(
        f"3 processes on 127.0.0.1, {os.cpu_count()} CPUs, replicated counter "
        "(bars: median/one run; dots: each failover)"
    )
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
