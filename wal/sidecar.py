"""The sidecar index of a sealed segment: ``<first index>.idx`` next to ``<first index>.wal``.

Theory of operation
-------------------
Opening a log must not read every sealed segment, so when a segment is sealed its offset
index and term runs are written beside it (temporary file, fsync, rename). The sidecar is
derived data: if it is missing, stale or damaged, the segment is scanned and the sidecar
rewritten; it can never make the log lose or invent an entry.

Layout (little-endian)::

    head   magic "\\x89CTIDX\\r\\n" | version u16 | flags u16 | n_runs u32 | first_index u64 |
           last_index u64 | count u64 | data_end u64 | header_crc u32 | last_commit_crc u32 |
           arrays_crc u32 | head_crc u32
    runs   n_runs x (start u64, term u64)
    arrays count x offset u64, then (flag SPARSE only) count x index u64

``head_crc`` covers the head fields before it plus the runs, so opening reads and checks only
the head and runs; ``arrays_crc`` covers the arrays, which are loaded on first use.
``header_crc`` and ``last_commit_crc`` are the checksums stored in the segment's header and in
its last commit record, and ``data_end`` its size: together they tie the sidecar to one
exact version of the segment (kv compaction and truncation rewrite segments in place).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import sys
from array import array

from google_crc32c import extend as crc32c_extend
from google_crc32c import value as crc32c

from wal.fsutil import atomic_write

SIDECAR_SUFFIX = ".idx"
SIDECAR_MAGIC = b"\x89CTIDX\r\n"
SIDECAR_VERSION = 1
FLAG_SPARSE = 0x1
HEAD = struct.Struct("<8sHHIQQQQIII")
HEAD_CRC = struct.Struct("<I")
HEAD_SIZE = HEAD.size + HEAD_CRC.size
RUN = struct.Struct("<QQ")


class StaleSidecar(Exception):
    """The sidecar cannot be used; the caller rebuilds the index by scanning the segment."""


@dataclasses.dataclass(frozen=True)
class SidecarHead:
    first_index: int
    last_index: int
    count: int
    data_end: int
    sparse: bool
    header_crc: int
    last_commit_crc: int
    run_starts: array
    run_terms: array
    arrays_offset: int
    arrays_crc: int


def encode_sidecar(
    *,
    first_index: int,
    last_index: int,
    data_end: int,
    header_crc: int,
    last_commit_crc: int,
    offsets: array,
    indexes: array | None,
    run_starts: array,
    run_terms: array,
) -> bytes:
    runs = b"".join(RUN.pack(s, t) for s, t in zip(run_starts, run_terms, strict=True))
    arrays = _le_bytes(offsets) + (_le_bytes(indexes) if indexes is not None else b"")
    head = HEAD.pack(
        SIDECAR_MAGIC,
        SIDECAR_VERSION,
        FLAG_SPARSE if indexes is not None else 0,
        len(run_starts),
        first_index,
        last_index,
        len(offsets),
        data_end,
        header_crc,
        last_commit_crc,
        crc32c(arrays),
    )
    head_crc = crc32c_extend(crc32c(head), runs)
    return head + HEAD_CRC.pack(head_crc) + runs + arrays


def write_sidecar(path: str | os.PathLike[str], data: bytes) -> None:
    # The directory fsync is left to the caller, which batches it with the next rename.
    atomic_write(path, data, sync_dir=False)


def read_sidecar_head(path: str | os.PathLike[str]) -> SidecarHead:
    try:
        with open(path, "rb") as file:
            head = file.read(HEAD_SIZE)
            if len(head) < HEAD_SIZE:
                raise StaleSidecar(f"{path}: truncated head")
            (magic, version, flags, n_runs, first, last, count, data_end, header_crc, commit_crc,
             arrays_crc) = HEAD.unpack_from(head)  # fmt: skip
            if magic != SIDECAR_MAGIC or version != SIDECAR_VERSION:
                raise StaleSidecar(f"{path}: not a version {SIDECAR_VERSION} sidecar")
            runs = file.read(n_runs * RUN.size)
    except FileNotFoundError:
        raise StaleSidecar(f"{path}: missing") from None
    (stored,) = HEAD_CRC.unpack_from(head, HEAD.size)
    if len(runs) != n_runs * RUN.size or crc32c_extend(crc32c(head[: HEAD.size]), runs) != stored:
        raise StaleSidecar(f"{path}: head checksum mismatch")
    pairs = _le_array(runs)
    return SidecarHead(
        first_index=first,
        last_index=last,
        count=count,
        data_end=data_end,
        sparse=bool(flags & FLAG_SPARSE),
        header_crc=header_crc,
        last_commit_crc=commit_crc,
        run_starts=pairs[0::2],
        run_terms=pairs[1::2],
        arrays_offset=HEAD_SIZE + len(runs),
        arrays_crc=arrays_crc,
    )


def read_sidecar_arrays(
    path: str | os.PathLike[str], head: SidecarHead
) -> tuple[array, array | None]:
    width = array("Q").itemsize
    size = head.count * width * (2 if head.sparse else 1)
    try:
        with open(path, "rb") as file:
            file.seek(head.arrays_offset)
            data = file.read(size)
    except FileNotFoundError:
        raise StaleSidecar(f"{path}: missing") from None
    if len(data) != size or crc32c(data) != head.arrays_crc:
        raise StaleSidecar(f"{path}: arrays checksum mismatch")
    offsets = _le_array(data[: head.count * width])
    indexes = _le_array(data[head.count * width :]) if head.sparse else None
    return offsets, indexes


# array("Q") is native-endian; the file format is little-endian.
def _le_bytes(values: array) -> bytes:
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("Q", values)
    swapped.byteswap()
    return swapped.tobytes()


def _le_array(data: bytes) -> array:
    values = array("Q", data)
    if sys.byteorder != "little":
        values.byteswap()
    return values
