"""`python -m examples.actors_demo`: two OS processes talking through coterie actors over
ZeroMQ on 127.0.0.1.

Process B hosts a Counter actor; this process (A) drives it through a ref built from its path.
The demo shows location-transparent asks and tells, behaviour switching, an unhandled message
failing fast, supervision restarting a crashed actor, and a ref that keeps working after the
remote process is SIGKILLed and restarted on the same address (refs are paths, not instances).

`make run` runs the 3-node replicated counter instead (examples/cluster_demo.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

from actors import ActorError, ActorSystem, configure_logging
from examples.counter_actor import Add, Counter, Crash, Get, Pause, Resume

HOST = "127.0.0.1"


def serve(port: int) -> None:
    """Process B: a system with one counter, until SIGTERM or stdin closes."""
    configure_logging("warning", json=False)
    system = ActorSystem("counter-node", host=HOST, port=port)
    system.spawn(Counter, "counter")
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    with contextlib.suppress(ValueError):
        sys.stdin.read()
    system.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_b(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.actors_demo", "serve", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit("process B did not start")
    return proc


def say(text: str) -> None:
    print(f"[A] {text}", flush=True)


def main() -> None:  # noqa: PLR0915  (a linear script, read top to bottom)
    configure_logging("warning", json=False)
    port = free_port()
    b = start_b(port)
    say(f"started process B (pid {b.pid}) with a Counter actor on {HOST}:{port}")
    system = ActorSystem("driver", host=HOST)
    try:
        counter = system.ref(f"coterie://counter-node@{HOST}:{port}/user/counter")
        say(f"ref by path: {counter.path}")
        for n in (1, 2, 3):
            counter.tell(Add(n))
        value = counter.ask(Get()).result(timeout=5)
        say(f"told Add(1), Add(2), Add(3); ask Get -> {value.value} (behaviour {value.behaviour})")

        value = counter.ask(Pause()).result(timeout=5)
        say(f"become: Pause -> behaviour is now {value.behaviour!r}")
        try:
            counter.ask(Add(10)).result(timeout=5)
        except ActorError as exc:
            say(f"Add while paused fails fast: {type(exc).__name__}: {exc}")
        value = counter.ask(Resume()).result(timeout=5)
        say(f"unbecome: Resume -> behaviour {value.behaviour!r}, value still {value.value}")

        try:
            counter.ask(Crash()).result(timeout=5)
        except ActorError as exc:
            say(f"Crash -> {type(exc).__name__}; the supervisor restarts the counter")
        value = counter.ask(Add(5)).result(timeout=5)
        say(f"same ref after the restart: Add(5) -> {value.value} (a fresh instance)")

        os.kill(b.pid, signal.SIGKILL)
        b.wait()
        say(f"SIGKILLed process B (pid {b.pid})")
        started = time.monotonic()
        try:
            counter.ask(Get(), timeout=1).result()
        except ActorError as exc:
            say(f"while B is down an ask fails after its timeout: {type(exc).__name__}")
        b = start_b(port)
        say(f"restarted process B (pid {b.pid}) on the same address")
        while True:
            try:
                value = counter.ask(Get(), timeout=1).result()
                break
            except ActorError:
                time.sleep(0.1)
        say(
            f"the old ref reaches the new process: Get -> {value.value} "
            f"({time.monotonic() - started:.1f}s after the kill; ZeroMQ reconnected by itself)"
        )
        stats = system.stats()
        say(
            f"transport counters: sent {stats.get('transport_envelopes_out', 0)} envelopes in "
            f"{stats.get('transport_frames_out', 0)} frames, "
            f"received {stats.get('transport_envelopes_in', 0)}"
        )
    finally:
        system.shutdown()
        if b.poll() is None:
            assert b.stdin is not None
            b.stdin.close()
            b.wait(10)
    say("done: both processes shut down cleanly")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        main()
