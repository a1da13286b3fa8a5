"""The far end of the actor benchmarks, run as its own OS process.

`raw` mode is the baseline: a bare pyzmq ROUTER that msgpack-decodes each frame, counts tells
and echoes pings. `coterie` mode is an actor system with a counting sink and an echo actor;
`coterie-curve` is the same with CURVE on (its secret key and the one client key it admits
come in the environment: COTERIE_BENCH_SECRET_KEY, COTERIE_BENCH_CLIENT_KEY).
Either prints one JSON line with its endpoint and serves until stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import msgpack
import zmq

from actors import UNHANDLED, Actor, ActorRef, ActorSystem, Reply, configure_logging, message
from actors.security import CurveConfig


@message("bench.seq")
class Seq:
    stream: str
    n: int


@message("bench.ping")
class Ping:
    payload: bytes


@message("bench.await")
class AwaitCount:
    """Answered once the sink has counted `count` tells."""

    count: int


class Sink(Actor):
    def __init__(self) -> None:
        self.count = 0
        self.waiting: list[tuple[int, Reply]] = []

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if type(message) is Seq:
            self.count += 1
            if self.waiting:
                self._release()
            return None
        if type(message) is Ping:
            return message
        if type(message) is AwaitCount:
            self.waiting.append((message.count, self.ctx.deferred_reply()))
            self._release()
            return None
        return UNHANDLED

    def _release(self) -> None:
        # Each await consumes its count, so consecutive benchmark rounds start from zero.
        while self.waiting and self.count >= self.waiting[0][0]:
            target, reply = self.waiting.pop(0)
            self.count -= target
            reply.success(target)


def serve_raw() -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    print(json.dumps({"endpoint": f"127.0.0.1:{port}"}), flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    count, target = 0, None
    while not stop.is_set():
        if not router.poll(200):
            continue
        identity, frame = router.recv_multipart()
        msg = msgpack.unpackb(frame)
        kind = msg[0]
        if kind == "seq":
            count += 1
            if target is not None and count >= target:
                router.send_multipart([identity, msgpack.packb(["done", count])])
                count, target = 0, None
        elif kind == "ping":
            router.send_multipart([identity, frame])
        elif kind == "await":
            target = msg[1]
            if count >= target:
                router.send_multipart([identity, msgpack.packb(["done", count])])
                count, target = 0, None
    router.close()
    context.term()


def serve_coterie(curve: bool) -> None:
    configure_logging("warning", json=True)
    keys = None
    if curve:
        secret = os.environb[b"COTERIE_BENCH_SECRET_KEY"]
        keys = CurveConfig(secret, frozenset({os.environb[b"COTERIE_BENCH_CLIENT_KEY"]}), {})
    system = ActorSystem("bench-peer", host="127.0.0.1", curve=keys)
    system.spawn(Sink, "sink")
    print(
        json.dumps({"endpoint": system.address.endpoint, "address": system.address.text}),
        flush=True,
    )
    sys.stdin.read()
    system.shutdown()


if __name__ == "__main__":
    serve_raw() if sys.argv[1] == "raw" else serve_coterie(sys.argv[1] == "coterie-curve")
