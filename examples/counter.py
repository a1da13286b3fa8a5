"""The replicated counter: a state machine any coterie node can run, and a typed client.

Commands and queries are small msgpack arrays: ``["add", n]`` adds n (``["add", 1]`` is an
increment) and answers the new value; the query ``["get"]`` answers the value. The snapshot is
the value itself. A cluster's config names it as ``"examples.counter:Counter"``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from consensus.client import Client, ClientError
from consensus.shell.state_machine import EntryMeta


class Counter:
    """The state machine: one integer, changed only by committed commands."""

    def __init__(self) -> None:
        self.value = 0
        self.last_timestamp = 0

    def apply(self, command: bytes, meta: EntryMeta) -> Any:
        op = msgpack.unpackb(command)
        match op:
            case ["add", int(n)]:
                self.value += n
                self.last_timestamp = meta.timestamp
                return self.value
        raise ValueError(f"unknown counter command {op!r}")

    def query(self, payload: bytes) -> Any:
        op = msgpack.unpackb(payload)
        if op == ["get"]:
            return self.value
        raise ValueError(f"unknown counter query {op!r}")

    def snapshot(self) -> bytes:
        return msgpack.packb([self.value, self.last_timestamp])

    def restore(self, data: bytes) -> None:
        self.value, self.last_timestamp = msgpack.unpackb(data)


class CounterClient:
    """Typed access to a replicated counter, for Python services."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def add(self, n: int, timeout: float = 10.0) -> int:
        response = self.client.submit(msgpack.packb(["add", n]), timeout)
        if isinstance(response.result, dict) and response.result.get("error"):
            raise ClientError(f"add({n}) failed: {response.result}")
        return int(response.result)

    def increment(self, timeout: float = 10.0) -> int:
        return self.add(1, timeout)

    def get(self, *, stale: bool = False, timeout: float = 10.0) -> int:
        answer = self.client.query(msgpack.packb(["get"]), stale=stale, timeout=timeout)
        return int(answer.result)
