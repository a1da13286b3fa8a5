"""The randomized simulation: SEEDS seeded faulty schedules (env SEEDS, default 2000; SEED_START
shifts the range), each checked at every step and required to converge after healing.

``make sim SEEDS=100000`` runs a long sweep. Seeds are spread over the machine's cores (env
SIM_WORKERS overrides); a run's outcome depends only on its seed, never on the worker. A
failure prints its seed; ``python -m tests.sim.replay SEED --trace`` (or ``--sim-seed SEED`` /
``SIM_SEED=SEED``) replays it exactly.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time

from .checker import InvariantViolation
from .schedule import DidNotConverge, run_random

MAX_REPORTED = 5


def run_seeds(seeds: list[int]) -> tuple[list[str], dict[str, int]]:
    """Run ``seeds``; return the failures (their messages) and totals for the summary."""
    failures: list[str] = []
    totals = dict.fromkeys(
        (
            "runs",
            "events",
            "acked",
            "reads",
            "leaders",
            "crashes",
            "snapshots",
            "installs",
            "config_changes",
            "session_acks",
        ),
        0,
    )
    for seed in seeds:
        try:
            result, _ = run_random(seed)
        except (InvariantViolation, DidNotConverge) as exc:
            failures.append(str(exc))
            if len(failures) >= MAX_REPORTED:
                break
            continue
        totals["runs"] += 1
        totals["events"] += result.events
        totals["acked"] += result.acked
        totals["reads"] += result.reads_checked
        totals["leaders"] += result.leaders
        totals["crashes"] += result.crashes
        totals["snapshots"] += result.snapshots
        totals["installs"] += result.installs
        totals["config_changes"] += result.config_changes
        totals["session_acks"] += result.session_acks
    return failures, totals


def test_random_schedules(sim_seed: int | None) -> None:
    if sim_seed is not None:
        seeds = [sim_seed]
    else:
        start = int(os.environ.get("SEED_START", "0"))
        seeds = list(range(start, start + int(os.environ.get("SEEDS", "2000"))))
    workers = int(os.environ.get("SIM_WORKERS", str(os.cpu_count() or 1)))
    began = time.perf_counter()
    if workers > 1 and len(seeds) >= 100:
        # Interleaved slices keep the workers' loads even; spawn avoids forking a process
        # that may hold other tests' threads.
        slices = [seeds[i::workers] for i in range(workers)]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            outcomes = list(pool.map(run_seeds, slices))
    else:
        outcomes = [run_seeds(seeds)]
    failures = [f for failed, _ in outcomes for f in failed]
    totals = {k: sum(t[k] for _, t in outcomes) for k in outcomes[0][1]}
    print(
        f"\nsim: {len(seeds)} seeds from {seeds[0]} in {time.perf_counter() - began:.1f} s "
        f"({workers} workers): {totals}"
    )
    assert not failures, "\n\n".join(failures[:MAX_REPORTED])
    assert totals["runs"] == len(seeds)
    if len(seeds) >= 100:
        # The schedules are not vacuous: writes acknowledged, reads checked, leaders changed.
        assert totals["acked"] > 20 * len(seeds)
        assert totals["reads"] > len(seeds)
        assert totals["leaders"] > 1.5 * len(seeds)
        # ... and snapshots, installs, membership changes and session retries happen in them.
        assert totals["snapshots"] > len(seeds)
        assert totals["installs"] > len(seeds) // 10
        assert totals["config_changes"] > len(seeds) // 2
        assert totals["session_acks"] > 5 * len(seeds)
