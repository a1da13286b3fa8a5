"""A local cluster of node processes (``coterie node``) on 127.0.0.1 for process tests."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from actors import ActorSystem
from consensus.client import Client
from consensus.shell.protocol import NodeStatus

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


class LocalCluster:
    def __init__(
        self,
        directory: pathlib.Path,
        size: int = 3,
        state_machine: str = "tests.cluster.recorder:Recorder",
        durability: str = "always",
        raft: dict[str, Any] | None = None,
        metrics: bool = False,
        joiners: int = 0,
        membership_protocol: str | None = None,
    ) -> None:
        self.directory = directory
        # The first ``size`` nodes form the cluster; the ``joiners`` after them are listed
        # with ``join = true`` and wait, once started, to be added (nodetool add).
        self.ids = [f"n{i + 1}" for i in range(size + joiners)]
        self.joiners = self.ids[size:]
        size = len(self.ids)
        ports = free_ports(2 * size if metrics else size)
        self.addresses = {
            node: f"127.0.0.1:{port}" for node, port in zip(self.ids, ports, strict=False)
        }
        # node id -> host:port of its Prometheus endpoint, when asked for
        self.metrics_addresses = {
            node: f"127.0.0.1:{port}" for node, port in zip(self.ids, ports[size:], strict=False)
        }
        raft = raft or {
            "election_timeout_min_ms": 300,
            "election_timeout_max_ms": 600,
            "heartbeat_interval_ms": 50,
        }
        lines = ['cluster_id = "test"', f'state_machine = "{state_machine}"', ""]
        for node in self.ids:
            lines += [
                "[[nodes]]",
                f'id = "{node}"',
                f'address = "{self.addresses[node]}"',
                f'data_dir = "{node}"',
            ]
            if node in self.metrics_addresses:
                lines.append(f'metrics_address = "{self.metrics_addresses[node]}"')
            if node in self.joiners:
                lines.append("join = true")
            lines.append("")
        lines.append("[raft]")
        lines += [f"{key} = {value}" for key, value in raft.items()]
        lines += ["", "[wal]", f'durability = "{durability}"']
        if membership_protocol is not None:
            lines += ["", "[membership]", f'protocol = "{membership_protocol}"']
        # Plain ZeroMQ by explicit choice: CURVE has its own tests (tests/security).
        lines += ["", "[security]", "curve = false"]
        self.config = directory / "cluster.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.system = ActorSystem("tester", host="127.0.0.1", cluster_id="test")
        self.client = Client(self.system, list(self.addresses.values()))

    def start(self, node: str) -> None:
        log = (self.directory / f"{node}.log").open("ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.procs[node] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coterie.cli",
                "node",
                "--config",
                str(self.config),
                "--id",
                node,
                "--log-level",
                "info",
                "--json-logs",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env=env,
        )

    def start_all(self) -> None:
        for node in self.ids:
            self.start(node)

    def kill(self, node: str, signum: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signum)
        proc.wait(15)

    def alive(self) -> list[str]:
        return [node for node, proc in self.procs.items() if proc.poll() is None]

    def status(self, node: str, timeout: float = 1.0) -> NodeStatus | None:
        try:
            return self.client.status(self.addresses[node], timeout)
        except Exception:
            return None

    def wait_for_leader(self, timeout: float = 20.0, among: list[str] | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in among or self.alive():
                status = self.status(node)
                if status is not None and status.role == "leader":
                    return node
            time.sleep(0.1)
        raise AssertionError(f"no leader within {timeout}s; logs in {self.directory}")

    def close(self) -> None:
        for node in list(self.procs):
            with contextlib.suppress(Exception):
                self.kill(node, signal.SIGTERM)
        self.system.shutdown()
