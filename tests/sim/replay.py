"""Replay one seed of the randomized simulation exactly:

    python -m tests.sim.replay SEED            # the outcome and the run's settings
    python -m tests.sim.replay SEED --trace    # plus the events (the last --tail of them)

Exit status 1 when the seed fails (an invariant or convergence), 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys

from .schedule import DEFAULT_DURATION, run_random, settings_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.replay")
    parser.add_argument("seed", type=int)
    parser.add_argument("--trace", action="store_true", help="print the event trace")
    parser.add_argument("--tail", type=int, default=400, help="trace lines to print (0: all)")
    parser.add_argument("--duration", type=int, default=DEFAULT_DURATION)
    args = parser.parse_args(argv)
    _, size, spares, config, net, disk = settings_for(args.seed)
    print(f"seed {args.seed}: {size} nodes + {spares} spares {config}\n  {net}\n  {disk}")
    try:
        result, cluster = run_random(args.seed, duration=args.duration, trace=args.trace)
    except AssertionError as exc:
        _print_trace(getattr(exc, "trace", None), args.tail)
        print(f"FAILED: {exc}")
        return 1
    _print_trace(cluster.trace, args.tail)
    print(f"ok: {result}")
    return 0


def _print_trace(trace: list[str] | None, tail: int) -> None:
    if trace:
        for line in trace[-tail:] if tail else trace:
            print(line)


if __name__ == "__main__":
    sys.exit(main())
