"""A cluster member in its own OS process, for the membership process tests and benchmark.

Starts an actor system on 127.0.0.1 with a node supervisor (and its membership actor) at
``/user/node``, prints one JSON line ``{"address": ..., "node": ...}`` on stdout once the
membership actor exists, then serves until stdin closes or SIGTERM. Logs (JSON, warning and
up unless --log-level says otherwise) go to stderr.

Usage: python member_node.py [--name N] [--port P] [--seed ADDRESS ...] [--config JSON]
                             [--protocol gossip|rapid]
``--config`` holds MembershipConfig fields; its "detector" key holds DetectorConfig fields.
With ``--protocol rapid`` it holds RapidMembershipConfig fields instead, with RapidConfig
fields under "rapid" (and DetectorConfig fields under "rapid" -> "detector").
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from actors import ActorSystem, configure_logging
from membership import DetectorConfig, MembershipConfig, start_node
from membership.rapid import RapidConfig
from membership.rapid.actor import RapidMembershipConfig


def config_from_json(text: str, seeds: list[str]) -> MembershipConfig:
    fields = json.loads(text) if text else {}
    if not isinstance(fields, dict):
        raise SystemExit(f"--config must be a JSON object, got {text!r}")
    detector = fields.pop("detector", None)
    if detector is not None:
        fields["detector"] = DetectorConfig(**detector)
    return MembershipConfig(seeds=tuple(seeds), **fields)


def rapid_config_from_json(text: str, seeds: list[str]) -> RapidMembershipConfig:
    fields = json.loads(text) if text else {}
    if not isinstance(fields, dict):
        raise SystemExit(f"--config must be a JSON object, got {text!r}")
    rapid = dict(fields.pop("rapid", {}))
    detector = rapid.pop("detector", None)
    if detector is not None:
        rapid["detector"] = DetectorConfig(**detector)
    return RapidMembershipConfig(seeds=tuple(seeds), rapid=RapidConfig(**rapid), **fields)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="member")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", action="append", default=[])
    parser.add_argument("--config", default="")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--protocol", choices=("gossip", "rapid"), default="gossip")
    args = parser.parse_args()
    configure_logging(args.log_level, json=True)
    if args.protocol == "rapid":
        config: MembershipConfig | RapidMembershipConfig = rapid_config_from_json(
            args.config, args.seed
        )
    else:
        config = config_from_json(args.config, args.seed)
    system = ActorSystem(args.name, host="127.0.0.1", port=args.port)
    node = start_node(system, config).path.text
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"address": system.address.text, "node": node}), flush=True)
    stop.wait()
    system.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
