"""Entry point of the `coterie` console script.

Each tool lives in its own module exposing `register(subparsers)`; this module only assembles
them, so a broken tool cannot stop the others from loading.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from coterie.errors import CliError

# (subcommand module, help) in the order they appear in `coterie --help`.
TOOLS = [
    ("coterie.node", "run one node of a cluster"),
    ("coterie.nodetool", "inspect and steer a running cluster"),
    ("coterie.waltool", "inspect, verify, compare and compact write-ahead logs"),
    ("coterie.keygen", "make CURVE keypairs for nodes and clients"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coterie", description="coterie: actor-model consensus")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name, _help in TOOLS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            print(f"coterie: {module_name} is unavailable: {exc}", file=sys.stderr)
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"coterie {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
