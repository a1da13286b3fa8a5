"""Process-test support: a LocalCluster whose nodes serve /log, follower processes, a
round-robin HTTP proxy, continuous writers and the final comparisons."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgpack

from tests.cluster.cluster import ROOT, LocalCluster, free_ports


class FollowCluster(LocalCluster):
    """Three nodes serving /log, and followers f1, f2, ... declared in the same file."""

    def __init__(self, directory: pathlib.Path, followers: int = 2, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.follower_ids = [f"f{i + 1}" for i in range(followers)]
        ports = free_ports(len(self.ids) + followers)
        self.log_addresses = {
            node: f"127.0.0.1:{port}"
            for node, port in zip(self.ids + self.follower_ids, ports, strict=True)
        }
        lines = ["", "[follow.serve]"]
        lines += [f'{node} = "{address}"' for node, address in self.log_addresses.items()]
        for follower in self.follower_ids:
            lines += ["", "[[follow.followers]]", f'id = "{follower}"', f'data_dir = "{follower}"']
            lines += ["timeout_s = 2.0", "initial_window = 16", "max_window = 512"]
        with self.config.open("a") as config:
            config.write("\n".join(lines) + "\n")

    def uri(self, node: str) -> str:
        return f"http://{self.log_addresses[node]}"

    def start_follower(self, follower: str, uri: str, *, in_file: bool = True) -> None:
        """Start a follower; one not `in_file` gets its data directory and endpoint from the
        command line (``--data-dir``, ``--serve``), as read replicas added ad hoc would."""
        extra: list[str] = []
        if not in_file:
            if follower not in self.log_addresses:
                self.follower_ids.append(follower)
                self.log_addresses[follower] = f"127.0.0.1:{free_ports(1)[0]}"
            extra = ["--data-dir", str(self.directory / follower),
                     "--serve", self.log_addresses[follower]]  # fmt: skip
        log = (self.directory / f"{follower}.log").open("ab")
        self.procs[follower] = subprocess.Popen(
            [sys.executable, "-m", "coterie.cli", "node", "--config", str(self.config),
             "--id", follower, "--follow", uri, "--json-logs", *extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )  # fmt: skip

    def log_status(self, node: str) -> dict[str, Any] | None:
        try:
            return get_json(self.log_addresses[node], "/log/status")
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def follower_query(self, follower: str, query: list[Any]) -> dict[str, Any]:
        host, _, port = self.log_addresses[follower].rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("POST", "/query", body=msgpack.packb(query))
            response = conn.getresponse()
            assert response.status == 200, response.read()
            return msgpack.unpackb(response.read())  # type: ignore[no-any-return]
        finally:
            conn.close()

    def stop_all(self) -> None:
        """Followers cleanly, then nodes with SIGKILL: a node stopped with SIGTERM hands its
        leadership over, and the new leader's first entry would land in some logs after the
        comparison point; killed, every log stays as the settled cluster left it."""
        for follower in [name for name in self.procs if name in self.follower_ids]:
            self.kill(follower, signal.SIGTERM)
        for node in list(self.procs):
            self.kill(node, signal.SIGKILL)


def get_json(address: str, path: str) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
    finally:
        conn.close()


class Writer:
    """Submits numbered commands back to back until stopped; failures (elections) retried."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            futures = self.cluster.client.submit_many(
                [msgpack.packb(["w", n, k]) for k in range(20)], timeout=5.0
            )
            for future in futures:
                try:
                    future.result(15)
                    self.done += 1
                except Exception:
                    time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class RoundRobinProxy:
    """An HTTP proxy sending each request to the next backend in turn, streaming the answer
    (re-chunked) back; the client's connection is kept alive across backends."""

    def __init__(self, backends: list[str]) -> None:
        turn = itertools.cycle(backends)
        lock = threading.Lock()
        self.served: dict[str, int] = dict.fromkeys(backends, 0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with lock:
                    backend = next(turn)
                    proxy.served[backend] += 1
                host, _, port = backend.rpartition(":")
                upstream = http.client.HTTPConnection(host, int(port), timeout=5)
                try:
                    upstream.request("GET", self.path, headers={
                        "Accept": self.headers.get("Accept", "*/*")})  # fmt: skip
                    response = upstream.getresponse()
                except OSError as exc:
                    body = json.dumps({"error": f"backend {backend}: {exc}"}).encode()
                    self.send_response(502)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "date", "server", "keep-alive"):
                        self.send_header(name, value)
                self.end_headers()
                chunked = response.getheader("Transfer-Encoding", "") == "chunked"
                while data := response.read1(65536):
                    self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data) if chunked else data)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                upstream.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def waltool_diff(a: pathlib.Path, b: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coterie.cli", "waltool", "diff", str(a), str(b)],
        check=False, capture_output=True, text=True, cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60,
    )  # fmt: skip
