"""A state machine for tests that remembers every command it applied, in order, so a test can
compare the histories of all replicas."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from consensus.shell.state_machine import EntryMeta


class Recorder:
    def __init__(self) -> None:
        self.applied: list[bytes] = []
        self.indexes: list[int] = []
        self.digest = hashlib.sha256()

    def apply(self, command: bytes, meta: EntryMeta) -> Any:
        self.applied.append(command)
        self.indexes.append(meta.index)
        self.digest.update(command)
        return len(self.applied)

    def query(self, payload: bytes) -> Any:
        match msgpack.unpackb(payload):
            case ["digest"]:
                return [len(self.applied), self.digest.hexdigest()]
            case ["all"]:
                return [self.applied, self.indexes]
        raise ValueError("unknown query")

    def snapshot(self) -> bytes:
        return msgpack.packb([self.applied, self.indexes])

    def restore(self, data: bytes) -> None:
        self.applied, self.indexes = msgpack.unpackb(data)
        self.digest = hashlib.sha256(b"".join(self.applied))
