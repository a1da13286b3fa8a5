"""A peer node for process tests: an actor system with a sink and an echo actor.

Prints one JSON line with its address on stdout, then serves until stdin closes or SIGTERM.
Usage: python peer_node.py [--name NAME] [--cluster ID] [--port N] [--advertise HOST]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

from actor_test_messages import Echo, Nested, Report, Seq, Slow, Stats

from actors import UNHANDLED, Actor, ActorRef, ActorSystem, configure_logging


class Sink(Actor):
    """Counts tells per stream and records any out-of-order or missing sequence number."""

    def __init__(self) -> None:
        self.next: dict[str, int] = {}
        self.count = 0
        self.violations: list[str] = []

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        match message:
            case Seq(stream, n):
                expected = self.next.get(stream, 0)
                if n != expected:
                    self.violations.append(f"{stream}: expected {expected}, got {n}")
                self.next[stream] = n + 1
                self.count += 1
                return None
            case Report():
                return {
                    "count": self.count,
                    "streams": self.next,
                    "violations": self.violations[:20],
                    "senders_seen": sender is not None,
                }
        return UNHANDLED


class EchoActor(Actor):
    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        match message:
            case Echo(payload):
                return Echo(payload)
            case Nested():
                return message
            case Stats():
                return self.ctx.system.stats()
            case Slow(seconds):
                time.sleep(seconds)
                return "slept"
        return UNHANDLED


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="peer")
    parser.add_argument("--cluster", default="coterie")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--advertise", default=None)
    args = parser.parse_args()
    configure_logging("warning", json=True)
    system = ActorSystem(
        args.name,
        host="127.0.0.1",
        port=args.port,
        cluster_id=args.cluster,
        advertised_host=args.advertise,
    )
    system.spawn(Sink, "sink")
    system.spawn(EchoActor, "echo")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"address": system.address.text}), flush=True)
    stop.wait()
    system.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
