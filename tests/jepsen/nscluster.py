"""A cluster of ``coterie node`` processes, each in its own network namespace (see netns).

Every node listens on ``<its ip>:7100``; the test's actor system listens on the bridge
address, so clients reach all nodes whatever the partition. Processes can be killed
(SIGKILL), paused (SIGSTOP) and resumed (SIGCONT) and restarted on the same data.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

from actors import ActorSystem
from consensus.client import Client
from consensus.shell.protocol import NodeStatus
from tests.jepsen.netns import Network

ROOT = pathlib.Path(__file__).resolve().parents[2]
PORT = 7100
RAFT = {
    "election_timeout_min_ms": 300,
    "election_timeout_max_ms": 600,
    "heartbeat_interval_ms": 50,
}


class NetnsCluster:
    def __init__(
        self,
        directory: pathlib.Path,
        size: int = 5,
        state_machine: str = "tests.jepsen.kv_machine:KV",
        durability: str = "always",
        raft: dict[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        self.ids = [f"n{i + 1}" for i in range(size)]
        self.network = Network(self.ids)
        self.network.setup()
        try:
            self.addresses = {node: f"{self.network.ips[node]}:{PORT}" for node in self.ids}
            lines = ['cluster_id = "jepsen"', f'state_machine = "{state_machine}"', ""]
            for node in self.ids:
                lines += [
                    "[[nodes]]",
                    f'id = "{node}"',
                    f'address = "{self.addresses[node]}"',
                    f'data_dir = "{node}"',
                    "",
                ]
            lines.append("[raft]")
            lines += [f"{key} = {value}" for key, value in (raft or RAFT).items()]
            lines += ["", "[wal]", f'durability = "{durability}"']
            lines += ["", "[security]", "curve = false"]  # CURVE is tested in tests/security
            self.config = directory / "cluster.toml"
            self.config.write_text("\n".join(lines) + "\n")
            self.procs: dict[str, subprocess.Popen[bytes]] = {}
            self.paused: set[str] = set()
            self.system = ActorSystem("jepsen", host=self.network.client_ip, cluster_id="jepsen")
            self.client = Client(self.system, list(self.addresses.values()))
        except BaseException:
            self.network.teardown()
            raise

    # ------------------------------------------------------------------ processes

    def start(self, node: str) -> None:
        if node in self.procs:
            raise RuntimeError(f"{node} is already running")
        log = (self.directory / f"{node}.log").open("ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        command = [sys.executable, "-m", "coterie.cli", "node", "--config", str(self.config)]
        command += ["--id", node, "--log-level", "info", "--json-logs"]
        self.procs[node] = subprocess.Popen(
            [*self.network.exec_prefix(node), *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env=env,
        )
        log.close()

    def start_all(self) -> None:
        for node in self.ids:
            self.start(node)

    def kill(self, node: str, signum: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(node)
        if node in self.paused:
            # A stopped process only acts on SIGKILL; anything else must find it running.
            self.paused.discard(node)
            if signum != signal.SIGKILL:
                proc.send_signal(signal.SIGCONT)
        proc.send_signal(signum)
        proc.wait(15)

    def kill_all_at_once(self) -> None:
        """SIGKILL every node with no pause in between, then reap them."""
        procs = list(self.procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait(15)
        self.procs.clear()
        self.paused.clear()

    def pause(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGSTOP)
        self.paused.add(node)

    def resume(self, node: str) -> None:
        if node in self.paused and node in self.procs:
            self.procs[node].send_signal(signal.SIGCONT)
        self.paused.discard(node)

    def running(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None and n not in self.paused]

    def exited(self) -> dict[str, int]:
        """Nodes whose process ended on its own (not killed by us): node -> exit code."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    # ------------------------------------------------------------------ observing

    def status(self, node: str, timeout: float = 1.0) -> NodeStatus | None:
        try:
            return self.client.status(self.addresses[node], timeout)
        except Exception:
            return None

    def leader(self, timeout: float = 0.5) -> str | None:
        """A node that says it leads (the one with the highest term if several do)."""
        best: tuple[int, str] | None = None
        for node in self.running():
            status = self.status(node, timeout)
            if (
                status is not None
                and status.role == "leader"
                and (best is None or status.term > best[0])
            ):
                best = (status.term, node)
        return best[1] if best else None

    def wait_for_leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.1)
        raise AssertionError(f"no leader within {timeout}s; logs in {self.directory}")

    def close(self) -> None:
        for node in list(self.procs):
            with contextlib.suppress(Exception):
                self.kill(node, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.system.shutdown()
        self.network.teardown()
