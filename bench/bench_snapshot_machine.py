"""A state machine for the snapshot benchmark: one command fills it with ``mb`` MiB of
pseudo-random (incompressible) bytes from a seed, so a 100 MB state costs one small log entry;
other commands only count. The snapshot is the count and the bytes; a restore keeps the
buffer it is given (no copy), so a node's memory shows the state once."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgpack


class Blob:
    def __init__(self) -> None:
        self.count = 0
        self.blob: bytes | memoryview = b""

    def apply(self, command: bytes, meta: Any) -> Any:
        match msgpack.unpackb(command):
            case ["fill", int(mb), int(seed)]:
                self.blob = random.Random(seed).randbytes(mb << 20)
            case ["count"]:
                pass
            case other:
                raise ValueError(f"unknown blob command {other!r}")
        self.count += 1
        return self.count

    def query(self, payload: bytes) -> Any:
        if msgpack.unpackb(payload) == ["digest"]:
            return [self.count, len(self.blob), hashlib.sha256(self.blob).hexdigest()]
        raise ValueError("unknown blob query")

    def snapshot(self) -> bytes:
        return b"".join((self.count.to_bytes(8, "little"), self.blob))  # one copy

    def restore(self, data: bytes) -> None:
        view = memoryview(data)
        self.count = int.from_bytes(view[:8], "little")
        self.blob = view[8:]
