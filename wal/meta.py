"""``wal.meta``: the small file that makes a directory a log and remembers its compaction base.

After a prefix of the log is compacted away (a snapshot covers it), the log must still know the
index and term of the last compacted entry: Raft checks the term of the entry just before the
ones it appends, and an empty log after a snapshot answers ``last_index``/``last_term`` from it.
That pair cannot live in segment headers, since compaction deletes whole segments, so it lives
here, replaced atomically (temporary file, fsync, rename, fsync directory).

Layout: magic "\\x89CTLOG\\r\\n" | version u16 | reserved u16 | reserved u32 |
base_index u64 | base_term u64 | crc32c of the previous 32 bytes u32.
"""

from __future__ import annotations

import dataclasses
import pathlib
import struct

from google_crc32c import value as crc32c

from wal.errors import WalCorruption
from wal.fsutil import atomic_write

META_NAME = "wal.meta"
META_MAGIC = b"\x89CTLOG\r\n"
META_VERSION = 1
META = struct.Struct("<8sHHIQQ")
META_CRC = struct.Struct("<I")


@dataclasses.dataclass(frozen=True)
class LogMeta:
    base_index: int  # last compacted index: the log holds entries after it
    base_term: int  # term of that entry (0 for a log that never compacted)


def read_meta(directory: pathlib.Path) -> LogMeta | None:
    """The log's metadata, or None if the directory holds none."""
    path = directory / META_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) != META.size + META_CRC.size:
        raise WalCorruption(
            path, 0, f"metadata file is {len(data)} bytes, expected {META.size + 4}"
        )
    magic, version, _r1, _r2, base_index, base_term = META.unpack_from(data)
    if magic != META_MAGIC:
        raise WalCorruption(path, 0, f"bad metadata magic {magic!r}")
    if crc32c(data[: META.size]) != META_CRC.unpack_from(data, META.size)[0]:
        raise WalCorruption(path, META.size, "metadata checksum mismatch")
    if version != META_VERSION:
        raise WalCorruption(path, 8, f"unsupported metadata version {version}")
    return LogMeta(base_index, base_term)


def write_meta(directory: pathlib.Path, meta: LogMeta) -> None:
    body = META.pack(META_MAGIC, META_VERSION, 0, 0, meta.base_index, meta.base_term)
    atomic_write(directory / META_NAME, body + META_CRC.pack(crc32c(body)))
