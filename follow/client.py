"""The follower's side of the HTTP protocol: one keep-alive connection to the source URI.

The URI may name a node, another follower or a load balancer; nothing here assumes requests
reach the same server twice, so every request says where it starts. Responses are read as
they arrive and decoded record by record (:class:`~follow.records.RecordDecoder`), so a
large range never sits in memory. Any transport trouble closes the connection; the next
request opens a new one.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

from follow.records import MSGPACK, Record, RecordDecoder

READ_SIZE = 256 << 10


class SourceError(Exception):
    """The source answered something unusable, or could not be reached."""


class SourceTimeout(SourceError):
    """The source did not answer (or stopped sending) within the timeout."""


class Compacted(SourceError):
    """The range asked for was compacted at the source; restore from its snapshot."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("detail", "compacted"))
        self.body = body


class SnapshotHead:
    def __init__(self, index: int, term: int, size: int, crc: int) -> None:
        self.index, self.term, self.size, self.crc = index, term, size, crc


def parse_uri(uri: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of an ``http://host:port[/prefix]`` URI; ValueError if not."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"follow URI {uri!r}: expected http://host:port")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise ValueError(f"follow URI {uri!r}: {exc}") from exc
    return parts.hostname, port, parts.path.rstrip("/")


class SourceClient:
    def __init__(self, uri: str, timeout: float = 5.0) -> None:
        self.host, self.port, self.prefix = parse_uri(uri)
        self.uri = uri
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def status(self) -> dict[str, Any]:
        response = self._request("GET", "/log/status")
        body = self._read_json(response)
        if response.status != 200:
            raise SourceError(f"/log/status answered {response.status}: {body}")
        return body

    def log(self, start: int, to: int | None, wait_ms: int = 0) -> Iterator[Record]:
        """The records of ``GET /log`` from `start` to `to`, decoded as they arrive."""
        query = f"from={start}" + (f"&to={to}" if to is not None else "")
        if wait_ms:
            query += f"&wait={wait_ms}"
        response = self._request("GET", f"/log?{query}", {"Accept": MSGPACK})
        if response.status == 410:
            raise Compacted(self._read_json(response))
        if response.status != 200:
            raise SourceError(f"/log answered {response.status}: {self._read_json(response)}")
        decoder = RecordDecoder(response.getheader("Content-Type", MSGPACK))
        return self._records(response, decoder)

    def _records(
        self, response: http.client.HTTPResponse, decoder: RecordDecoder
    ) -> Iterator[Record]:
        try:
            while True:
                data = self._guarded(response.read1, READ_SIZE)
                if not data:
                    break
                yield from decoder.feed(data)
            decoder.finish()
        except BaseException:
            self.close()  # the rest of the body was not read: the connection is unusable
            raise

    def snapshot(self) -> tuple[SnapshotHead, Iterator[bytes]]:
        """The source's latest snapshot: its head, then its content in chunks."""
        response = self._request("GET", "/snapshot/latest")
        if response.status != 200:
            raise SourceError(f"/snapshot/latest answered {response.status}: "
                              f"{self._read_json(response)}")  # fmt: skip
        try:
            head = SnapshotHead(
                int(response.getheader("X-Snapshot-Index", "")),
                int(response.getheader("X-Snapshot-Term", "")),
                int(response.getheader("Content-Length", "")),
                int(response.getheader("X-Snapshot-Crc", "")),
            )
        except ValueError as exc:
            self.close()
            raise SourceError(f"/snapshot/latest: bad headers: {exc}") from exc
        return head, self._chunks(response, head.size)

    def _chunks(self, response: http.client.HTTPResponse, size: int) -> Iterator[bytes]:
        got = 0
        try:
            while got < size:
                data = self._guarded(response.read1, min(READ_SIZE, size - got))
                if not data:
                    raise SourceError(f"/snapshot/latest: body ended at {got} of {size} bytes")
                got += len(data)
                yield data
        except BaseException:
            self.close()
            raise

    def _request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> http.client.HTTPResponse:
        for attempt in (0, 1):
            fresh = self._conn is None
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                try:
                    self._conn.connect()
                    # Requests are small writes; never hold one back waiting for an ACK.
                    self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as exc:
                    self.close()
                    if isinstance(exc, TimeoutError):
                        raise SourceTimeout(
                            f"{self.uri}: no connection in {self.timeout}s"
                        ) from exc
                    raise SourceError(f"{self.uri}{path}: {exc!r}") from exc
            try:
                self._conn.request(method, self.prefix + path, headers=headers or {})
                return self._conn.getresponse()
            except TimeoutError as exc:
                self.close()
                raise SourceTimeout(f"{self.uri}{path}: no answer in {self.timeout}s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A kept-alive connection the server closed meanwhile: one retry on a new one.
                if fresh or attempt:
                    raise SourceError(f"{self.uri}{path}: {exc!r}") from exc
        raise AssertionError("unreachable")

    def _guarded(self, read: Any, size: int) -> bytes:
        try:
            return bytes(read(size))
        except TimeoutError as exc:
            raise SourceTimeout(f"{self.uri}: stalled for {self.timeout}s mid-response") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(f"{self.uri}: {exc!r}") from exc

    def _read_json(self, response: http.client.HTTPResponse) -> dict[str, Any]:
        raw = self._guarded(response.read, 1 << 20)
        try:
            body = json.loads(raw)
        except ValueError:
            return {"error": raw[:200].decode("utf-8", "replace")}
        return body if isinstance(body, dict) else {"error": str(body)[:200]}
