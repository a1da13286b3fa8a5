"""``python -m coterie.jepsen check HISTORY.jsonl --model register|counter``: check a saved
history offline; exit status 0 if linearizable, 1 if not, 2 if the search gave up."""

from __future__ import annotations

import argparse
import sys

from coterie.jepsen.checker import check
from coterie.jepsen.history import HistoryError, load
from coterie.jepsen.models import MODELS, ModelError, by_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coterie.jepsen")
    sub = parser.add_subparsers(dest="command", required=True)
    checking = sub.add_parser("check", help="check a saved history for linearizability")
    checking.add_argument("history", help="a JSON-lines history written by coterie.jepsen.save")
    checking.add_argument("--model", choices=sorted(MODELS), default="register")
    checking.add_argument("--budget", type=int, default=5_000_000, help="search steps per key")
    args = parser.parse_args(argv)
    try:
        result = check(load(args.history), by_name(args.model), budget=args.budget)
    except (HistoryError, ModelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.explain())
    return {True: 0, False: 1, None: 2}[result.valid]


if __name__ == "__main__":
    sys.exit(main())
