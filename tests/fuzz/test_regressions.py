"""Findings of the fuzzers, kept as regression tests.

Nested-message bomb (found by test_fuzz_wire's hostile shapes, 2026-11): a registered
message nested inside a payload travels as msgpack ext type 1, and ``actors.wire._ext_hook``
decodes each level with a fresh ``msgpack.unpackb`` call that re-enters the hook. Python's
recursion limit does not see those C frames, and each ``unpackb`` keeps a large unpack
context on the C stack (some 40 KB a level), so a few hundred levels overflow the stack: 200
in a main thread with 8 MB, 500-1000 in a node's IO thread (a 2.4-4 KB frame). Any process
that can reach a node's port can send one (only the cluster id, which is not secret, has to
match): the node dies with SIGSEGV, no log line, no counter. Sent to every node it
takes the whole cluster down. Fixed in actors/wire.py: ``_ext_hook`` counts the nesting depth
(thread-local, around the inner ``unpackb``) and refuses the payload beyond
``MAX_NESTING`` levels as ``bad_payload``, dropped and counted like any bad input. The tests
run the decoder in a child process, since the failure is a crash of the interpreter.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import msgpack
import pytest
import zmq

from actors import wire
from tests.cluster.cluster import LocalCluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
DECODE_BOMB = """
import msgpack
from actors import wire
import consensus.messages  # registers raft.client_command
inner = msgpack.packb(["raft.client_command", "x", b""])
for _ in range({depth}):
    inner = msgpack.packb(msgpack.ExtType(wire.NESTED_EXT, inner))
payload = msgpack.packb(["r", msgpack.ExtType(wire.NESTED_EXT, inner)])
try:
    wire.decode_payload(wire.lookup_tag("raft.client_command"), payload)
except wire.FrameError as exc:
    print("refused", exc.reason)
"""


def nested_payload(depth: int) -> bytes:
    inner = msgpack.packb(["raft.client_command", "x", b""])
    for _ in range(depth):
        inner = msgpack.packb(msgpack.ExtType(wire.NESTED_EXT, inner))
    return msgpack.packb(["r", msgpack.ExtType(wire.NESTED_EXT, inner)])


def decode_in_child(depth: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DECODE_BOMB.format(depth=depth)],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_moderately_nested_payloads_are_refused_cleanly() -> None:
    # The control: below the crash depth the decoder refuses the payload as it should.
    child = decode_in_child(50)
    assert child.returncode == 0 and "refused bad_payload" in child.stdout


def test_deeply_nested_payload_is_refused_not_a_crash() -> None:
    child = decode_in_child(400)
    assert child.returncode == 0, f"decoder process died with {child.returncode}"
    assert "refused bad_payload" in child.stdout


@pytest.mark.process
def test_node_processes_survive_nested_message_bombs(tmp_path) -> None:
    # Whether a node's IO thread overflows before Python's recursion limit stops the decoder
    # varies from process to process (about 40% die per bomb volley, measured); so every
    # node gets a volley of bombs of several depths, dead ones are restarted, up to five
    # rounds, and the test stops at the first death. With the fix no node ever dies.
    cluster = LocalCluster(tmp_path, size=3, state_machine="tests.jepsen.kv_machine:KV")
    context = zmq.Context()
    dead: list[tuple[str, int | None]] = []
    try:
        for _round in range(5):
            for node in cluster.ids:
                if node not in cluster.procs:
                    cluster.start(node)
            for node in cluster.ids:
                deadline = time.monotonic() + 20
                while cluster.status(node, 0.5) is None and time.monotonic() < deadline:
                    time.sleep(0.1)
            for node in cluster.ids:
                sock = context.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 2000)
                sock.connect(f"tcp://{cluster.addresses[node]}")
                for depth in (600, 1000, 3000):
                    envelope = wire.encode_envelope(
                        "test",
                        "raft.client_command",
                        "",
                        f"coterie://_@{cluster.addresses[node]}/user/node",
                        0,
                        nested_payload(depth),
                    )
                    sock.send(wire.encode_frame([envelope]))
                sock.close()
            time.sleep(1.5)
            for node in list(cluster.procs):
                if cluster.procs[node].poll() is not None:
                    dead.append((node, cluster.procs.pop(node).returncode))
            if dead:
                break
        assert not dead, f"nodes killed by frames of at most 12 KB: {dead}"
    finally:
        context.term()
        cluster.close()
