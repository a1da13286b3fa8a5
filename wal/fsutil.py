"""Crash-safe file primitives shared by the log, the hard-state store and the snapshot store.

The rules they encode: a file's *contents* are durable only after fsync of the file; its *name*
(creation, rename, unlink) is durable only after fsync of the directory holding it; and a
rename over an existing name is atomic, so "write a temporary, fsync it, rename it, fsync the
directory" replaces a file so that a crash leaves either the old or the new version whole.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
from collections.abc import Sequence

TMP_SUFFIX = ".tmp"

# fdatasync skips metadata that is not needed to read the data back (timestamps); on
# platforms without it, fsync does the same job more slowly.
datasync = getattr(os, "fdatasync", os.fsync)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, chunks: Sequence[bytes], offset: int) -> int:
    """Write `chunks` contiguously at `offset` (one pwritev unless the kernel writes short)."""
    total = sum(len(chunk) for chunk in chunks)
    written = os.pwritev(fd, chunks, offset)
    if written < total:
        # A short write to a regular file is rare (a signal, a nearly full disk); finish it
        # from a joined copy rather than track partial chunks.
        rest = memoryview(b"".join(chunks))[written:]
        while rest:
            count = os.pwrite(fd, rest, offset + written)
            if count == 0:
                raise OSError(errno.EIO, "pwrite wrote nothing")
            written += count
            rest = rest[count:]
    return total


def read_exact(fd: int, size: int, offset: int) -> bytes:
    """Read up to `size` bytes at `offset`; fewer only at end of file."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def preallocate(fd: int, size: int) -> bool:
    """Reserve `size` bytes of disk for the file; False where the filesystem cannot."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return False
        raise
    return True


def atomic_write(path: str | os.PathLike[str], data: bytes, *, sync_dir: bool = True) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new contents whole."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, [data], 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


def remove_if_exists(path: str | os.PathLike[str]) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


class DirectoryLock:
    """An exclusive advisory lock (flock) on a file in a directory, held while open."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
