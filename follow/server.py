"""The HTTP endpoint a node (or a follower) serves its committed log on, from its own port.

``GET /log?from=SEQ[&to=SEQ][&wait=MS]``
    Committed entries ``from``..``to`` (inclusive; without ``to``, up to what was committed
    when the request arrived), chunked, as :mod:`follow.records` (msgpack unless ``Accept``
    asks for ``application/jsonl``). With ``wait``, a request for entries not committed yet
    waits up to that many milliseconds for them (long polling) instead of answering empty.
    ``from`` below the log's first index answers **410** with JSON naming
    ``/snapshot/latest``. Bad parameters answer **400** with a message naming them.
``GET /log/status``
    JSON ``{"first", "last", "commit", "snapshot": {"index", "term", "size"} | null}``.
``GET /snapshot/latest``
    The latest snapshot's content, streamed (``Content-Length``; index, term and crc32c in
    ``X-Snapshot-Index``, ``X-Snapshot-Term``, ``X-Snapshot-Crc``); 404 if there is none.
``POST /query``
    Only where a query handler is given (followers): the body is a query in the state
    machine's encoding; the answer is msgpack (or JSON on ``Accept: application/json``)
    ``{"applied": SEQ, "result": ...}``, ``applied`` being the sequence the state reflects.

Entries are read in batches under the log's lock and written after it is released
(:mod:`follow.source`): a client that disconnects mid-stream ends its own handler thread on
the next write and costs nothing else. Handler threads are daemons of a
``ThreadingHTTPServer``; :meth:`LogServer.close` stops accepting and closes the socket.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgpack
import structlog

from follow.records import Encoder, ErrorRecord, Header, Trailer, choose_format
from follow.source import SourceUnavailable, WalSource
from wal.errors import WalError

log = structlog.get_logger(__name__)

READ_BATCH = 1024  # entries read under the lock at once, then written as one chunk
MAX_WAIT_MS = 30_000
POLL_SECONDS = 0.005
MAX_QUERY_BYTES = 1 << 20

QueryHandler = Callable[[bytes], tuple[int, Any]]


class BadRequest(ValueError):
    """A request this endpoint refuses with 400; the message names the parameter."""


def parse_log_params(query: str) -> tuple[int, int | None, int]:
    """(from, to, wait_ms) of a ``/log`` query string; BadRequest naming what is wrong."""
    try:
        params = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise BadRequest(f"query string: {exc}") from exc
    unknown = sorted(set(params) - {"from", "to", "wait"})
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r} (known: from, to, wait)")
    for name, values in params.items():
        if len(values) > 1:
            raise BadRequest(f"parameter {name!r} given {len(values)} times")
    if "from" not in params:
        raise BadRequest("parameter 'from' is required")
    start = _number(params, "from", 1)
    assert start is not None
    stop = _number(params, "to", 0)
    if stop is not None and stop < start:
        raise BadRequest(f"parameter 'to' ({stop}) is before 'from' ({start})")
    wait = _number(params, "wait", 0) or 0
    if wait > MAX_WAIT_MS:
        raise BadRequest(f"parameter 'wait' ({wait}) is above {MAX_WAIT_MS} ms")
    return start, stop, wait


def _number(params: dict[str, list[str]], name: str, minimum: int) -> int | None:
    if name not in params:
        return None
    text = params[name][0]
    if not text.isdigit() or len(text) > 20:
        raise BadRequest(f"parameter {name!r}: {text[:40]!r} is not a non-negative integer")
    value = int(text)
    if value < minimum or value >= 1 << 64:
        raise BadRequest(f"parameter {name!r}: {value} is out of range (at least {minimum})")
    return value


class LogServer:
    """Serves one :class:`WalSource` over HTTP on ``host:port`` from daemon threads."""

    def __init__(self, address: str, source: WalSource, query: QueryHandler | None = None) -> None:
        host, _, port = address.rpartition(":")
        self.source = source
        self.query = query
        self.counters: dict[str, int] = {"requests": 0, "entries": 0, "disconnects": 0}
        # More fields for /log/status (a follower adds its own progress and counters).
        self.extra_status: Callable[[], dict[str, Any]] | None = None
        server = ThreadingHTTPServer((host, int(port)), _Handler)
        server.daemon_threads = True
        server.log_server = self  # type: ignore[attr-defined]
        self._server = server
        self.address = f"{host}:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"follow-server-{self.address}",
        )  # fmt: skip
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "coterie-follow/1"

    def setup(self) -> None:
        super().setup()
        # A range is written as several chunks, the last ones small (the trailer, the end of
        # the body): with Nagle on, each would wait for the client's delayed ACK (~40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def owner(self) -> LogServer:
        return self.server.log_server  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the access log would drown the node's own; errors are logged where they occur

    def do_GET(self) -> None:
        self.owner.count("requests")
        url = urllib.parse.urlsplit(self.path)
        try:
            if url.path == "/log":
                self._log(url.query)
            elif url.path == "/log/status":
                self._status()
            elif url.path == "/snapshot/latest":
                self._snapshot()
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such resource {url.path!r}"})
        except BadRequest as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except SourceUnavailable as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            self.owner.count("disconnects")
            self.close_connection = True

    def do_POST(self) -> None:
        self.owner.count("requests")
        url = urllib.parse.urlsplit(self.path)
        length_text = self.headers.get("Content-Length", "")
        if url.path != "/query" or self.owner.query is None:
            self._drain(length_text)
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such resource {url.path!r}"})
            return
        if not length_text.isdigit() or int(length_text) > MAX_QUERY_BYTES:
            self.close_connection = True
            self._json(
                HTTPStatus.BAD_REQUEST,
                {"error": f"Content-Length must be 0..{MAX_QUERY_BYTES}, got {length_text!r}"},
            )
            return
        payload = self.rfile.read(int(length_text))
        try:
            applied, result = self.owner.query(payload)
        except Exception as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"query failed: {exc!r}"})
            return
        answer = {"applied": applied, "result": result}
        accept = self.headers.get("Accept", "")
        try:
            if "application/json" in accept:
                body, kind = json.dumps(answer).encode(), "application/json"
            else:
                body, kind = msgpack.packb(answer, use_bin_type=True), "application/msgpack"
        except (TypeError, ValueError) as exc:
            self._json(HTTPStatus.NOT_ACCEPTABLE, {"error": f"result not encodable: {exc}"})
            return
        self._send(HTTPStatus.OK, kind, body, {"X-Applied-Seq": str(applied)})

    # ------------------------------------------------------------------ resources

    def _log(self, query: str) -> None:
        start, to, wait_ms = parse_log_params(query)
        fmt = choose_format(self.headers.get("Accept"))
        if fmt is None:
            self._json(
                HTTPStatus.NOT_ACCEPTABLE,
                {"error": "Accept application/msgpack or application/jsonl"},
            )
            return
        source = self.owner.source
        bounds = source.bounds()
        if start < bounds.first:
            self._compacted(start, bounds.first)
            return
        deadline = time.monotonic() + wait_ms / 1000.0
        while bounds.commit < start and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            bounds = source.bounds()
        commit = bounds.commit
        stop = commit + 1 if to is None else min(to, commit) + 1
        encoder = Encoder(fmt)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", fmt)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Commit", str(commit))
        self.end_headers()
        prev_term = source.term_at(start - 1) if start - 1 <= commit else None
        if prev_term is None:  # nothing to serve from there (yet): no header, no entries
            self._chunk(encoder.record(Trailer(start, commit)))
            self._end_chunks()
            return
        self._chunk(encoder.record(Header(start - 1, prev_term, commit)))
        position = start
        ending = Trailer(stop, commit)
        while position < stop:
            try:
                frames = source.read_frames(position, stop, READ_BATCH)
            except (IndexError, WalError) as exc:  # compacted or cut while being read
                ending = ErrorRecord(f"stopped at {position}: {exc}")
                break
            if not frames:
                ending = ErrorRecord(f"stopped at {position}: the log holds no more")
                break
            if frames[0][0] != position or frames[-1][0] != position + len(frames) - 1:
                # A log compacted by key has holes; never let a follower think it has all.
                ending = ErrorRecord(f"stopped at {position}: the log has a hole here")
                frames = [(i, f) for n, (i, f) in enumerate(frames) if i == position + n]
            frame = encoder.frame
            self._chunk(b"".join([frame(raw) for _index, raw in frames]))
            self.owner.count("entries", len(frames))
            position += len(frames)
            if isinstance(ending, ErrorRecord):
                break
        self._chunk(encoder.record(ending))
        self._end_chunks()

    def _compacted(self, start: int, first: int) -> None:
        latest = self.owner.source.latest_snapshot()
        body: dict[str, Any] = {
            "error": "compacted",
            "detail": f"entries below {first} were compacted; restore from the snapshot",
            "from": start,
            "first": first,
            "snapshot": "/snapshot/latest",
        }
        if latest is not None:
            body["snapshot_index"] = latest[1].index
            body["snapshot_term"] = latest[1].term
        self._json(HTTPStatus.GONE, body)

    def _status(self) -> None:
        bounds = self.owner.source.bounds()
        latest = self.owner.source.latest_snapshot()
        snapshot = None
        if latest is not None:
            meta = latest[1]
            snapshot = {"index": meta.index, "term": meta.term, "size": meta.size}
        body: dict[str, Any] = {
            "first": bounds.first,
            "last": bounds.last,
            "commit": bounds.commit,
            "snapshot": snapshot,
            "served": dict(self.owner.counters),
        }
        if self.owner.extra_status is not None:
            body["follower"] = self.owner.extra_status()
        self._json(HTTPStatus.OK, body)

    def _snapshot(self) -> None:
        try:
            latest = self.owner.source.latest_snapshot()
        except WalError as exc:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"snapshot store: {exc}"})
            return
        if latest is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "this node has no snapshot"})
            return
        store, meta = latest
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(meta.size))
        self.send_header("X-Snapshot-Index", str(meta.index))
        self.send_header("X-Snapshot-Term", str(meta.term))
        self.send_header("X-Snapshot-Crc", str(meta.crc))
        self.end_headers()
        try:
            for chunk in store.read(meta):
                self.wfile.write(chunk)
        except (OSError, WalError) as exc:
            if isinstance(exc, BrokenPipeError | ConnectionResetError):
                raise
            # Headers are out: all that is left is to cut the body short, which the client
            # sees as a short read and retries.
            log.warning("follow.snapshot_send_failed", path=str(meta.path), error=str(exc))
            self.close_connection = True

    # ------------------------------------------------------------------ plumbing

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(body).encode() + b"\n")

    def _send(
        self, status: HTTPStatus, kind: str, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _drain(self, length_text: str) -> None:
        if length_text.isdigit() and int(length_text) <= MAX_QUERY_BYTES:
            self.rfile.read(int(length_text))
        else:
            self.close_connection = True
