"""One nemesis run, and ``python -m tests.jepsen.run``: N seeded runs and their table.

A run: a 5-node cluster in network namespaces, clients reading and writing registers and
counters for ``seconds`` while the nemesis injects faults from the seed's schedule, then
the healing phase (everything undone) in which the cluster must serve a write and a
linearizable read again within ``recovery_timeout`` (liveness), a little more load, final
reads of every key, and the verdicts:

* the checker's, on the whole history (registers and counters, per key);
* acknowledged writes lost: every acknowledged write, compare-and-set and add must be in
  the per-key log of applied values (read linearizably from the leader after healing);
* replica divergence: once every node has applied as far as the leader's commit index, all
  digests of applied commands must be equal.

A run that finds anything keeps its directory (history as JSON lines, fault log, node
logs); a clean one is deleted unless ``keep`` is set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

import msgpack

from actors import configure_logging
from consensus.shell.protocol import ClientQuery
from coterie.jepsen import Counter, Recorder, Register, check, operations, save, summary
from tests.jepsen.nemesis import Nemesis, schedule
from tests.jepsen.netns import unavailable
from tests.jepsen.nscluster import NetnsCluster
from tests.jepsen.workload import Workload, WorkloadConfig


@dataclasses.dataclass
class RunResult:
    seed: int
    ops: int
    faults: list[str]
    counts: dict[str, int]
    verdict: str
    anomalies: list[str]
    lost: int
    divergent: bool
    recovery: float | None  # seconds from healing to a write and a read served
    seconds: float
    check_seconds: float  # the checker's share of ``seconds``
    directory: pathlib.Path | None
    nemesis_errors: list[str]

    @property
    def ok(self) -> bool:
        return (
            self.verdict == "linearizable"
            and self.lost == 0
            and not self.divergent
            and self.recovery is not None
            and not self.nemesis_errors  # a fault that could not be made was not tested
        )


def nemesis_run(
    seed: int,
    *,
    seconds: float = 20.0,
    base: pathlib.Path | None = None,
    keep: bool = False,
    workload: WorkloadConfig | None = None,
    recovery_timeout: float = 30.0,
    budget: int = 2_000_000,
) -> RunResult:
    started = time.monotonic()
    directory = pathlib.Path(tempfile.mkdtemp(prefix=f"jepsen-{seed}-", dir=base))
    cluster = NetnsCluster(directory)
    recorder = Recorder(processes=(workload or WorkloadConfig()).clients)
    load = Workload(cluster, recorder, seed, workload or WorkloadConfig())
    nemesis = Nemesis(cluster, schedule(seed, seconds, cluster.ids))
    try:
        cluster.start_all()
        cluster.wait_for_leader()
        load.start()
        nemesis.start()
        time.sleep(seconds)
        nemesis.stop()
        nemesis.heal()
        recovery = _recover(cluster, recovery_timeout)
        time.sleep(1.0)  # some load on the healed cluster
        load.stop()
        if recovery is not None:
            load.final_reads()
        lost, divergent = _durability(cluster, recorder, recovery is not None)
    finally:
        load.stopping.set()
        cluster.close()
    events = recorder.events()
    ops = operations(events)
    registers = [op for op in ops if op.key.startswith("r")]
    counters = [op for op in ops if op.key.startswith("c")]
    results = [
        check(registers, Register(), budget=budget),
        check(counters, Counter(), budget=budget),
    ]
    verdicts = {r.valid for r in results}
    verdict = (
        "NOT linearizable"
        if False in verdicts
        else "unknown"
        if None in verdicts
        else "linearizable"
    )
    anomalies = [k.explain() for r in results for k in r.anomalies + r.unknown]
    result = RunResult(
        seed=seed,
        ops=sum(1 for e in events if e.type == "invoke"),
        faults=[f.describe() for f in nemesis.done()],
        counts=summary(events),
        verdict=verdict,
        anomalies=anomalies,
        lost=lost,
        divergent=divergent,
        recovery=recovery,
        seconds=time.monotonic() - started,
        check_seconds=sum(r.seconds for r in results),
        directory=directory,
        nemesis_errors=nemesis.errors,
    )
    save(events, directory / "history.jsonl")
    (directory / "result.json").write_text(
        json.dumps(dataclasses.asdict(result), default=str, indent=1)
    )
    if result.ok and not keep:
        shutil.rmtree(directory, ignore_errors=True)
        result.directory = None
    return result


def _recover(cluster: NetnsCluster, timeout: float) -> float | None:
    """Seconds until the healed cluster commits a write and serves a linearizable read."""
    healed = time.monotonic()
    deadline = healed + timeout
    while time.monotonic() < deadline:
        try:
            left = max(0.5, deadline - time.monotonic())
            cluster.client.submit(msgpack.packb(["put", "probe", healed]), timeout=left)
            left = max(0.5, deadline - time.monotonic())
            cluster.client.query(msgpack.packb(["get", "probe"]), timeout=left)
            return time.monotonic() - healed
        except Exception:
            time.sleep(0.1)
    return None


def _durability(cluster: NetnsCluster, recorder: Recorder, live: bool) -> tuple[int, bool]:
    """(acknowledged writes missing from the applied logs, whether replicas diverged)."""
    if not live:
        return 0, False
    logs: dict[str, list[Any]] = cluster.client.query(msgpack.packb(["logs"]), timeout=20).result
    applied = {key: set(map(_hashable, values)) for key, values in logs.items()}
    lost = 0
    for op in operations(recorder.events()):
        if not op.known:
            continue
        written = None
        if op.f == "write":
            written = op.arg
        elif op.f == "cas" and op.result is True:
            written = op.arg[1]
        elif op.f == "add":
            written = op.result
        if written is not None and _hashable(written) not in applied.get(op.key, set()):
            lost += 1
    return lost, _diverged(cluster)


def _diverged(cluster: NetnsCluster, timeout: float = 20.0) -> bool:
    """Wait until every node applied as far as the leader committed, then compare digests."""
    leader = cluster.wait_for_leader()
    target = cluster.status(leader)
    deadline = time.monotonic() + timeout
    digests: dict[str, Any] = {}
    while time.monotonic() < deadline and target is not None:
        digests = {}
        for node in cluster.ids:
            status = cluster.status(node)
            if status is None or status.applied_index < target.commit_index:
                break
            ref = cluster.system.ref(f"coterie://_@{cluster.addresses[node]}/user/node")
            answer = ref.ask(
                ClientQuery(f"digest-{node}", msgpack.packb(["digest"]), True), timeout=5
            ).result(6)
            digests[node] = (answer.index, tuple(answer.result))
        if len(digests) == len(cluster.ids):
            break
        time.sleep(0.2)
    if len(digests) < len(cluster.ids):
        return True  # some node never caught up: reported as divergence
    # Nodes may have applied different amounts beyond the target; compare equal indexes only.
    by_index: dict[int, set[Any]] = {}
    for index, digest in digests.values():
        by_index.setdefault(index, set()).add(digest)
    return any(len(found) > 1 for found in by_index.values())


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# ---------------------------------------------------------------------- the table


def table(results: list[RunResult]) -> str:
    head = (
        f"{'seed':>6} {'ops':>6} {'faults':>6} {'ok':>6} {'fail':>5} {'info':>5} "
        f"{'verdict':<17} {'lost':>4} {'diverged':>8} {'recovery':>8} {'check':>6} {'time':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        recovery = f"{r.recovery:.2f}s" if r.recovery is not None else "NONE"
        lines.append(
            f"{r.seed:>6} {r.ops:>6} {len(r.faults):>6} {r.counts['ok']:>6} "
            f"{r.counts['fail']:>5} {r.counts['info']:>5} {r.verdict:<17} {r.lost:>4} "
            f"{'yes' if r.divergent else 'no':>8} {recovery:>8} {r.check_seconds:>5.1f}s "
            f"{r.seconds:>5.0f}s"
        )
    kinds: dict[str, int] = {}
    for r in results:
        for fault in r.faults:
            kinds[fault.split()[0]] = kinds.get(fault.split()[0], 0) + 1
    total_ops = sum(r.ops for r in results)
    recoveries = [r.recovery for r in results if r.recovery is not None]
    lines.append("-" * len(head))
    lines.append(
        f"{len(results)} runs, {total_ops} ops, faults: "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    )
    lines.append(
        f"anomalies {sum(1 for r in results if r.verdict == 'NOT linearizable')}, "
        f"unknown verdicts {sum(1 for r in results if r.verdict == 'unknown')}, "
        f"acknowledged writes lost {sum(r.lost for r in results)}, "
        f"diverged {sum(1 for r in results if r.divergent)}, "
        f"no recovery {sum(1 for r in results if r.recovery is None)}, "
        f"recovery max {max(recoveries, default=0):.2f}s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.jepsen.run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run")
    parser.add_argument("--seconds", type=float, default=20.0, help="fault phase per run")
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="where runs are kept")
    parser.add_argument("--keep", action="store_true", help="keep clean runs' directories")
    parser.add_argument(
        "--retrying-client",
        action="store_true",
        help="counter adds through consensus.client.Client (retries, exactly-once sessions)",
    )
    parser.add_argument(
        "--no-sessions",
        action="store_true",
        help="with --retrying-client: plain commands (negative control: a retry may apply twice)",
    )
    args = parser.parse_args(argv)
    configure_logging("warning")  # the test's own actor system; nodes log to their files
    reason = unavailable()
    if reason:
        print(f"jepsen: cannot run: {reason}", file=sys.stderr)
        return 2
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in range(args.seed, args.seed + args.runs):
        workload = WorkloadConfig(
            retrying_client=args.retrying_client, client_sessions=not args.no_sessions
        )
        result = nemesis_run(
            seed, seconds=args.seconds, base=args.dir, keep=args.keep, workload=workload
        )
        results.append(result)
        recovery = f"{result.recovery:.2f}s" if result.recovery is not None else "NONE"
        print(
            f"seed {seed}: {result.verdict}, {result.ops} ops, {len(result.faults)} faults, "
            f"lost {result.lost}, recovery {recovery}",
            flush=True,
        )
        for text in result.anomalies + result.nemesis_errors:
            print("  " + text.replace("\n", "\n  "), flush=True)
        if result.directory is not None:
            print(f"  kept in {result.directory}", flush=True)
    print()
    print(table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
