"""Batches at every hop: the entry payload format, the state machine applying a batch, and a
client whose concurrent commands travel as a few batches yet come back one by one, in order."""

from __future__ import annotations

import queue
import threading
from typing import Any

import msgpack
import pytest

from actors import Actor, ActorRef, ActorSystem, Props
from consensus.client import Client, ClientError
from consensus.messages import Entry, EntryKind
from consensus.shell.batching import (
    BATCH_MARK,
    MalformedBatch,
    decode_commands,
    encode_commands,
)
from consensus.shell.protocol import (
    Applied,
    Apply,
    ClientBatch,
    ClientBatchResponse,
    TransferLeadership,
)
from consensus.shell.state_machine import EntryMeta, StateMachineActor
from tests.cluster.test_shell import three_nodes, wait_for_leader  # noqa: F401  (fixture)
from wal.kv_compaction import encode_put, msgpack_kv_key


def test_a_single_command_stays_plain_and_a_batch_round_trips() -> None:
    put = encode_put("k", b"v")
    assert encode_commands([put]) == put  # an idle cluster's log holds plain commands
    assert msgpack_kv_key(encode_commands([put])) is not None
    batch = encode_commands([put, b"", b"\x00\xff"])
    assert batch[0] == BATCH_MARK
    assert decode_commands(batch) == [put, b"", b"\x00\xff"]
    # kv compaction reads the same layout: the puts of a batch are its keys
    assert msgpack_kv_key(batch) == [msgpack_kv_key(put)]
    # a lone command that starts with the mark is framed, so it cannot be misread
    tricky = bytes([BATCH_MARK]) + b"abc"
    assert encode_commands([tricky]) != tricky
    assert decode_commands(encode_commands([tricky])) == [tricky]
    assert decode_commands(b"") == [b""]


@pytest.mark.parametrize(
    "payload",
    [bytes([BATCH_MARK]), bytes([BATCH_MARK]) + b"\x93", bytes([BATCH_MARK]) + msgpack.packb([1])],
)
def test_a_malformed_batch_is_refused_by_name(payload: bytes) -> None:
    with pytest.raises(MalformedBatch):
        decode_commands(payload)


def test_meta_sequence_is_unique_and_increasing_in_apply_order() -> None:
    metas = [EntryMeta(7, 1, 0, p) for p in range(3)] + [EntryMeta(8, 1, 0, 0)]
    sequences = [m.sequence for m in metas]
    assert sequences == sorted(set(sequences))
    assert EntryMeta(3, 1, 10) == EntryMeta(3, 1, 10, 0)


class Sink(Actor):
    def __init__(self, seen: queue.Queue[Any]) -> None:
        self.seen = seen

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        self.seen.put(message)


class Adder:
    """Adds numbers; a command that is not a number fails (deterministically)."""

    def __init__(self) -> None:
        self.total = 0
        self.metas: list[EntryMeta] = []

    def apply(self, command: bytes, meta: EntryMeta) -> Any:
        self.metas.append(meta)
        self.total += int(command)
        return self.total

    def query(self, payload: bytes) -> Any:
        return self.total

    def snapshot(self) -> bytes:
        return str(self.total).encode()

    def restore(self, data: bytes) -> None:
        self.total = int(data)


def test_the_state_machine_applies_a_batch_and_answers_once() -> None:
    with ActorSystem("sm-test") as system:
        seen: queue.Queue[Any] = queue.Queue()
        sink = system.spawn(Props(Sink, seen), "sink")
        machine = Adder()
        actor = system.spawn(Props(StateMachineActor, machine, sink, 0), "sm")
        entries = [
            Entry(1, 1, int(EntryKind.NOOP), 5, b""),
            Entry(2, 1, int(EntryKind.COMMAND), 6, encode_commands([b"1", b"x", b"2"])),
            Entry(3, 1, int(EntryKind.COMMAND), 7, b"10"),
            Entry(4, 1, int(EntryKind.COMMAND), 8, bytes([BATCH_MARK]) + b"junk"),
        ]
        actor.tell(Apply(entries))
        applied = seen.get(timeout=5)
        assert isinstance(applied, Applied) and applied.index == 4
        assert applied.results[2][0] == 1
        assert applied.results[2][1]["error"] == "command_failed"  # alone: its neighbours ran
        assert applied.results[2][2] == 3
        assert applied.results[3] == [13]
        assert applied.results[4]["error"] == "command_failed"  # the whole malformed entry
        assert [(m.index, m.position) for m in machine.metas] == [(2, 0), (2, 1), (2, 2), (3, 0)]
        assert seen.empty()  # one Applied for the whole Apply


def test_concurrent_commands_travel_in_few_batches_and_answer_in_order(three_nodes) -> None:  # noqa: F811
    _systems, addresses = three_nodes
    system = ActorSystem("client", host="127.0.0.1", cluster_id="t")
    try:
        nodes = {n: system.ref(f"coterie://{n}@{a}/user/node") for n, a in addresses.items()}
        wait_for_leader(nodes)
        client = Client(system, list(addresses.values()), max_inflight_batches=2)
        total = 3000
        futures = client.submit_many([msgpack.packb([0, n]) for n in range(total)], timeout=30)
        outcomes = [f.result(40) for f in futures]
        assert all(o.ok for o in outcomes)
        # the Recorder answers how many commands it has applied: submission order is kept
        counts = [o.result for o in outcomes]
        assert counts == sorted(counts) and len(set(counts)) == total
        assert client.batches_sent <= total // 100, client.batches_sent
        # entries carried several commands each
        assert len({o.index for o in outcomes}) < total // 10

        # many threads at once, each waiting for its own answers, one by one
        answers: dict[int, list[int]] = {}

        def worker(w: int) -> None:
            answers[w] = [client.submit(msgpack.packb([w, n]), 20).result for n in range(50)]

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for got in answers.values():
            assert got == sorted(got) and len(got) == 50
    finally:
        system.shutdown()


def test_a_follower_refuses_a_batch_with_a_hint_and_oversized_batches_fail(three_nodes) -> None:  # noqa: F811
    _systems, addresses = three_nodes
    system = ActorSystem("client", host="127.0.0.1", cluster_id="t")
    try:
        nodes = {n: system.ref(f"coterie://{n}@{a}/user/node") for n, a in addresses.items()}
        leader = wait_for_leader(nodes)
        follower = next(n for n in nodes if n != leader)
        answer = nodes[follower].ask(ClientBatch([b"a", b"b"]), timeout=5).result(6)
        assert isinstance(answer, ClientBatchResponse)
        assert not answer.ok and answer.error == "not_leader"
        assert answer.leader_hint == addresses[leader]
        big = nodes[leader].ask(ClientBatch([b"x"] * 5000), timeout=5).result(6)
        assert not big.ok and big.error.startswith("batch_too_large")
        client = Client(system, [addresses[follower]], max_batch=5000)
        with pytest.raises(ClientError, match="batch_too_large"):
            client.submit_many([b"x"] * 5000, timeout=10)[0].result(15)
        # a client given only a follower finds the leader through the hint
        assert client.submit(msgpack.packb(["hello"]), timeout=10).ok
        assert client.leader == addresses[leader]
    finally:
        system.shutdown()


def test_one_clients_answers_keep_their_order_across_leader_changes(three_nodes) -> None:  # noqa: F811
    _systems, addresses = three_nodes
    system = ActorSystem("client", host="127.0.0.1", cluster_id="t")
    try:
        nodes = {n: system.ref(f"coterie://{n}@{a}/user/node") for n, a in addresses.items()}
        leader = wait_for_leader(nodes)
        client = Client(system, list(addresses.values()), max_batch=200, attempt_timeout=5.0)
        futures = []
        for round_ in range(3):
            futures += client.submit_many(
                [msgpack.packb([round_, n]) for n in range(1500)], timeout=60
            )
            target = next(n for n in nodes if n != leader)
            nodes[leader].ask(TransferLeadership(target), timeout=5).result(6)
            leader = wait_for_leader(nodes, not_this=leader)
        counts = [f.result(70).result for f in futures]
        assert counts == sorted(counts), "a client's answers came out of submission order"
        assert client.batches_retried > 0  # the transfers did turn batches away
        assert len(set(counts)) == len(counts)
    finally:
        system.shutdown()
