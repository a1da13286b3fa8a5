"""A replicated key-value store (Sirius-style put/get/delete) and its typed client.

Commands are msgpack arrays ``["put", key, value]`` and ``["delete", key]``: the encoding the
WAL's key-value compaction understands, so a log of them can be compacted to the newest entry
per key. Handlers receive each command's metadata: its sequence number (``meta.sequence``:
unique per command, increasing, equal on every replica, even for commands batched in one log
entry) and the leader's timestamp, the same on every replica (Sirius' request-with-metadata
handler). Override :meth:`KeyValueStore.on_put` / :meth:`KeyValueStore.on_delete` to react
to changes, e.g. to keep an index or publish events.

Config: ``state_machine = "examples.kv:KeyValueStore"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from consensus.client import Client, ClientError
from consensus.shell.state_machine import EntryMeta


@dataclasses.dataclass(frozen=True, slots=True)
class Versioned:
    value: bytes
    sequence: int  # the put's sequence number: unique, increasing, equal on every replica
    timestamp: int  # the leader's clock (ms) when that put was accepted


class KeyValueStore:
    def __init__(self) -> None:
        self.data: dict[str, Versioned] = {}

    # ---------------------------------------------------------------- handlers to override

    def on_put(self, key: str, value: bytes, meta: EntryMeta) -> None:
        """Called after ``key`` was set; ``meta`` says where and when in the log."""

    def on_delete(self, key: str, existed: bool, meta: EntryMeta) -> None:
        """Called after ``key`` was deleted (``existed`` False if it was not there)."""

    # ---------------------------------------------------------------- the state machine

    def apply(self, command: bytes, meta: EntryMeta) -> Any:
        match msgpack.unpackb(command):
            case ["put", str(key), bytes(value)]:
                self.data[key] = Versioned(value, meta.sequence, meta.timestamp)
                self.on_put(key, value, meta)
                return meta.sequence
            case ["delete", str(key)]:
                existed = self.data.pop(key, None) is not None
                self.on_delete(key, existed, meta)
                return existed
            case other:
                raise ValueError(f"unknown kv command {other!r}")

    def query(self, payload: bytes) -> Any:
        match msgpack.unpackb(payload):
            case ["get", str(key)]:
                found = self.data.get(key)
                return None if found is None else [found.value, found.sequence, found.timestamp]
            case ["keys"]:
                return sorted(self.data)
            case other:
                raise ValueError(f"unknown kv query {other!r}")

    def snapshot(self) -> bytes:
        return msgpack.packb(
            {key: [v.value, v.sequence, v.timestamp] for key, v in self.data.items()}
        )

    def restore(self, data: bytes) -> None:
        self.data = {key: Versioned(*row) for key, row in msgpack.unpackb(data).items()}


class KeyValueClient:
    """Typed access for Python services: ``put`` returns the write's sequence number."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def put(self, key: str, value: bytes, timeout: float = 10.0) -> int:
        return int(self._submit(["put", key, value], timeout))

    def delete(self, key: str, timeout: float = 10.0) -> bool:
        return bool(self._submit(["delete", key], timeout))

    def get(self, key: str, *, stale: bool = False, timeout: float = 10.0) -> Versioned | None:
        answer = self.client.query(msgpack.packb(["get", key]), stale=stale, timeout=timeout)
        if not answer.ok:
            raise ClientError(f"get({key!r}) failed: {answer.error}")
        return None if answer.result is None else Versioned(*answer.result)

    def keys(self, *, stale: bool = False, timeout: float = 10.0) -> list[str]:
        answer = self.client.query(msgpack.packb(["keys"]), stale=stale, timeout=timeout)
        return list(answer.result)

    def _submit(self, command: list[Any], timeout: float) -> Any:
        response = self.client.submit(msgpack.packb(command), timeout)
        result = response.result
        if isinstance(result, dict) and result.get("error"):
            raise ClientError(f"{command[0]} failed: {result}")
        return result
