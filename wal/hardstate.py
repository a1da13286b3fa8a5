"""Durable storage of Raft's hard state: the current term and the vote cast in it.

Theory of operation
-------------------
The state lives in one small file replaced atomically (temporary file, fsync, rename, fsync
directory; see `wal.fsutil`), so after a crash the file holds either the previous or the new
state, whole. Saves are rare (a term change or a vote), so two fsyncs per save cost nothing
that matters, and unlike an in-place two-slot scheme there is no ambiguity between a torn save
and a damaged one: a file that does not check out is corruption, reported with its name.

The store also refuses the two updates that would break Raft's safety if a caller had a bug:
lowering the term, and changing the vote within a term.

Layout: magic "\\x89CTHS\\r\\n\\0" | version u16 | flags u16 (bit 0: has vote) | vote_len u32 |
term u64 | vote (utf-8) | crc32c of everything before u32.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import struct

from google_crc32c import value as crc32c

from wal.errors import WalCorruption
from wal.fsutil import atomic_write

HARDSTATE_MAGIC = b"\x89CTHS\r\n\0"
HARDSTATE_VERSION = 1
HEAD = struct.Struct("<8sHHIQ")
CRC = struct.Struct("<I")
FLAG_HAS_VOTE = 0x1
MAX_VOTE_BYTES = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class HardState:
    current_term: int = 0
    voted_for: str | None = None


class HardStateStore:
    """Load and save the hard state kept in the file at `path` (its directory must exist)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        self._current: HardState | None = None

    @property
    def current(self) -> HardState:
        """The state last loaded or saved (loaded on first use)."""
        return self._current if self._current is not None else self.load()

    def load(self) -> HardState:
        """The saved state; the initial state (term 0, no vote) if nothing was ever saved."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._current = HardState()
            return self._current
        self._current = decode_hardstate(data, self.path)
        return self._current

    def save(self, state: HardState) -> None:
        """Make `state` durable before returning."""
        current = self._current if self._current is not None else self.load()
        if state.current_term < current.current_term:
            raise ValueError(
                f"hard state term would go back from {current.current_term} to {state.current_term}"
            )
        if (
            state.current_term == current.current_term
            and current.voted_for is not None
            and state.voted_for != current.voted_for
        ):
            raise ValueError(
                f"term {state.current_term}: already voted for {current.voted_for!r}, "
                f"cannot change the vote to {state.voted_for!r}"
            )
        if state == current and self.path.exists():
            return
        atomic_write(self.path, encode_hardstate(state))
        self._current = state


def encode_hardstate(state: HardState) -> bytes:
    if not 0 <= state.current_term < 2**64:
        raise ValueError(f"term out of range: {state.current_term}")
    vote = b"" if state.voted_for is None else state.voted_for.encode()
    if len(vote) > MAX_VOTE_BYTES:
        raise ValueError(f"voted_for is {len(vote)} bytes; at most {MAX_VOTE_BYTES}")
    flags = FLAG_HAS_VOTE if state.voted_for is not None else 0
    body = HEAD.pack(HARDSTATE_MAGIC, HARDSTATE_VERSION, flags, len(vote), state.current_term)
    body += vote
    return body + CRC.pack(crc32c(body))


def decode_hardstate(data: bytes, path: str | os.PathLike[str]) -> HardState:
    if len(data) < HEAD.size + CRC.size:
        raise WalCorruption(path, len(data), f"hard-state file is only {len(data)} bytes")
    magic, version, flags, vote_len, term = HEAD.unpack_from(data)
    if magic != HARDSTATE_MAGIC:
        raise WalCorruption(path, 0, f"not a hard-state file (magic {magic!r})")
    end = HEAD.size + vote_len
    if len(data) != end + CRC.size:
        raise WalCorruption(path, HEAD.size, f"vote length {vote_len} does not match file size")
    if crc32c(data[:end]) != CRC.unpack_from(data, end)[0]:
        raise WalCorruption(path, end, "hard-state checksum mismatch")
    if version != HARDSTATE_VERSION:
        raise WalCorruption(path, 8, f"unsupported hard-state version {version}")
    try:
        vote = data[HEAD.size : end].decode() if flags & FLAG_HAS_VOTE else None
    except UnicodeDecodeError as exc:
        raise WalCorruption(path, HEAD.size + exc.start, "vote is not valid UTF-8") from None
    return HardState(term, vote)
