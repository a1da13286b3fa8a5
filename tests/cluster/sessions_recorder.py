"""A state machine for session process tests: the Recorder, plus every session close it was
told of (session id, expired?, log index), kept in its snapshot, so a test can check that all
replicas closed the same sessions at the same entries."""

from __future__ import annotations

from typing import Any

import msgpack

from consensus.shell.state_machine import EntryMeta
from tests.cluster.recorder import Recorder


class SessionRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.closed: list[list[Any]] = []

    def session_closed(self, session: int, expired: bool, meta: EntryMeta) -> None:
        self.closed.append([session, expired, meta.index])

    def query(self, payload: bytes) -> Any:
        if msgpack.unpackb(payload) == ["closed"]:
            return self.closed
        return super().query(payload)

    def snapshot(self) -> bytes:
        return msgpack.packb([super().snapshot(), self.closed])

    def restore(self, data: bytes) -> None:
        recorded, self.closed = msgpack.unpackb(data)
        super().restore(recorded)
