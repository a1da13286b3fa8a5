"""A CURVE-secured cluster of ``coterie node`` processes on 127.0.0.1 for the security tests.

Keys are made with the real ``coterie keygen`` command: one keypair per node, one for the
trusted test client (listed in ``allowed_keys``) and one for a rogue that is not listed.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

from actors import ActorSystem
from consensus.client import Client
from consensus.shell.protocol import NodeStatus
from coterie.cli import main
from coterie.config import load
from tests.cluster.cluster import ROOT, free_ports


def keygen(*bases: pathlib.Path) -> None:
    assert main(["keygen", *map(str, bases)]) == 0


class CurveCluster:
    def __init__(self, directory: pathlib.Path, size: int = 3) -> None:
        self.directory = directory
        self.ids = [f"n{i + 1}" for i in range(size)]
        ports = free_ports(size + 1)
        self.addresses = {n: f"127.0.0.1:{p}" for n, p in zip(self.ids, ports, strict=False)}
        self.metrics_address = f"127.0.0.1:{ports[-1]}"  # n1's Prometheus endpoint
        keys = directory / "keys"
        keygen(*(keys / name for name in (*self.ids, "client", "rogue")))
        lines = ['cluster_id = "secure"', 'state_machine = "examples.counter:Counter"', ""]
        for node in self.ids:
            lines += ["[[nodes]]", f'id = "{node}"', f'address = "{self.addresses[node]}"']
            lines.append(f'data_dir = "{node}"')
            if node == "n1":
                lines.append(f'metrics_address = "{self.metrics_address}"')
            lines.append("")
        lines += [
            "[raft]",
            "election_timeout_min_ms = 300",
            "election_timeout_max_ms = 600",
            "heartbeat_interval_ms = 50",
            "",
            "[security]",
            "curve = true",
            'secret_key_file = "keys/{id}.key_secret"',
            'public_key_file = "keys/{id}.key"',
            'allowed_keys = ["keys/client.key"]',
        ]
        self.config_path = directory / "cluster.toml"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.config = load(self.config_path)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.system = self.client_system("tester", keys / "client.key_secret")
        self.client = Client(self.system, list(self.addresses.values()))

    def client_system(
        self, name: str, secret_key_file: pathlib.Path, cluster_id: str = "secure"
    ) -> ActorSystem:
        curve = self.config.client_curve(secret_key_file)
        return ActorSystem(name, host="127.0.0.1", cluster_id=cluster_id, curve=curve)

    def log(self, node: str) -> str:
        return (self.directory / f"{node}.log").read_text(errors="replace")

    def start_all(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for node in self.ids:
            log = (self.directory / f"{node}.log").open("ab")
            command = [sys.executable, "-m", "coterie.cli", "node", "--config"]
            command += [str(self.config_path), "--id", node, "--json-logs"]
            self.procs[node] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env
            )

    def status(self, node: str, timeout: float = 1.0) -> NodeStatus | None:
        try:
            return self.client.status(self.addresses[node], timeout)
        except Exception:
            return None

    def wait_for_leader(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.ids:
                status = self.status(node)
                if status is not None and status.role == "leader":
                    return node
            time.sleep(0.05)
        raise AssertionError(f"no leader within {timeout}s; logs in {self.directory}")

    def scrape(self) -> str:
        url = f"http://{self.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.system.shutdown()


def metric(text: str, name: str, label: str) -> float:
    """The value of `name{...="label"}` in a Prometheus text exposition, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + "{") and f'"{label}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
