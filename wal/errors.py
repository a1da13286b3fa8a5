"""The exceptions of the `wal` package.

Two families, kept apart on purpose (h11's local-vs-remote split): a caller's misuse of the API
(appending a non-contiguous index, reading a compacted entry) raises the built-in `ValueError` or
`IndexError` with a message saying what was expected; a problem with the *bytes on disk* raises a
:class:`WalError`. The bytes are the "remote peer" here: they come from a previous process, a
crash or a failing disk, and the caller cannot fix them by calling differently.
"""

from __future__ import annotations

import os


class WalError(Exception):
    """Something is wrong with a log's files or the log can no longer be used."""


class NotAWal(WalError):
    """A directory that does not hold a coterie write-ahead log."""


class LogInUse(WalError):
    """Another process holds the write lock of the log directory."""


class CorruptRecord(WalError):
    """The record decoder met bytes that are not a valid record (bad checksum, garbage).

    Raised by the pure decoders, which know a buffer offset but not the file; readers turn it
    into a :class:`WalCorruption` naming the file.
    """

    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt record at offset {offset}: {reason}")


class WalCorruption(WalError):
    """Corruption that recovery must not repair silently. The message names file and offset."""

    def __init__(self, path: str | os.PathLike[str], offset: int, reason: str) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.reason = reason
        super().__init__(f"{self.path}: corrupt at byte offset {offset}: {reason}")
