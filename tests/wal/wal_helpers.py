"""Helpers shared by the wal tests: building entries and poking at segment files."""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

from wal.entry import Entry, EntryKind


def make_entries(
    start: int, count: int, term: int = 1, *, size: int = 20, kind: int = EntryKind.COMMAND
) -> list[Entry]:
    """`count` entries from index `start`; each payload names its index so mixups show."""
    out = []
    for index in range(start, start + count):
        head = f"e{index}t{term}:".encode()
        payload = (head * (size // len(head) + 1))[:size] if size else b""
        out.append(Entry(index, term, kind, 1_000 + index, payload))
    return out


def segment_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(directory.glob("*.wal"))


def flip_byte(path: pathlib.Path, offset: int) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0x5A]))


def as_tuples(entries: Iterable[Entry]) -> list[tuple[int, int, int, int, bytes]]:
    return [(e.index, e.term, e.kind, e.timestamp, e.payload) for e in entries]
