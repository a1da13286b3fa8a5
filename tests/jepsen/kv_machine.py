"""A key-value state machine for the nemesis runs (test-only; examples/ will get the real one).

Commands (msgpack arrays): ``["put", key, value]`` answers None; ``["cas", key, old, new]``
answers whether it swapped; ``["add", key, delta]`` treats the key as a counter (missing = 0)
and answers the new value.

Queries: ``["get", key]`` answers the value (None if missing; ``["get", key, default]``
answers ``default`` instead); ``["log", key]`` answers every value the key was given, in
apply order, and ``["logs"]`` all of them, so a run can tell whether an acknowledged write
was ever applied and whether replicas applied the same writes; ``["digest"]`` answers
(applied commands, sha256 of them) to compare replicas.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from consensus.shell.state_machine import EntryMeta


class KV:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.logs: dict[str, list[Any]] = {}
        self.applied = 0
        self.digest = hashlib.sha256()

    def apply(self, command: bytes, meta: EntryMeta) -> Any:
        self.applied += 1
        self.digest.update(command)
        match msgpack.unpackb(command):
            case ["put", str(key), value]:
                self._set(key, value)
                return None
            case ["cas", str(key), old, new]:
                if self.values.get(key) != old:
                    return False
                self._set(key, new)
                return True
            case ["add", str(key), int(delta)]:
                value = self.values.get(key, 0) + delta
                self._set(key, value)
                return value
            case other:
                raise ValueError(f"unknown kv command {other!r}")

    def _set(self, key: str, value: Any) -> None:
        self.values[key] = value
        self.logs.setdefault(key, []).append(value)

    def query(self, payload: bytes) -> Any:
        match msgpack.unpackb(payload):
            case ["get", str(key)]:
                return self.values.get(key)
            case ["get", str(key), default]:
                return self.values.get(key, default)
            case ["log", str(key)]:
                return self.logs.get(key, [])
            case ["logs"]:
                return self.logs
            case ["digest"]:
                return [self.applied, self.digest.hexdigest()]
            case other:
                raise ValueError(f"unknown kv query {other!r}")

    def snapshot(self) -> bytes:
        return msgpack.packb([self.values, self.logs, self.applied, self.digest.hexdigest()])

    def restore(self, data: bytes) -> None:
        self.values, self.logs, self.applied, _digest = msgpack.unpackb(data)
        # The running digest cannot be resumed from a hex string; restart it from the state.
        self.digest = hashlib.sha256(msgpack.packb([self.values, self.applied]))
