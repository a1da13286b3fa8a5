"""`make bench`: run every benchmark module (or those named on the command line) and write each
one's results as JSON under bench/results/."""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import platform
import sys
import time

SUITES = ["actors", "wal", "membership", "raft", "cluster", "snapshot", "follow"]
RESULTS = pathlib.Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("suites", nargs="*", default=SUITES, help=f"any of {SUITES}")
    parser.add_argument("--quick", action="store_true", help="smaller workloads (smoke test)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    for name in args.suites:
        if name not in SUITES:
            parser.error(f"unknown suite {name!r}; choose from {SUITES}")
        module = importlib.import_module(f"bench.bench_{name}")
        started = time.time()
        print(f"== bench {name}", flush=True)
        result = module.run(quick=args.quick)
        result["_meta"] = {
            "suite": name,
            "started": started,
            "seconds": round(time.time() - started, 2),
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "quick": args.quick,
        }
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(json.dumps(result, indent=2, sort_keys=True))
        print(f"-> {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
