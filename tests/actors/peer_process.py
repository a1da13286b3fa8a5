"""PeerProcess: a peer actor system in another OS process (tests/actors/peer_node.py).

Kept out of conftest.py so test modules can import it by a name no other test folder uses."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).parent


class PeerProcess:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "peer_node.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer node did not start (exit {self.proc.wait(5)})")
        self.address = json.loads(line)["address"]

    def path(self, name: str) -> str:
        return f"{self.address}/user/{name}"

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(5)
        return self.proc.returncode
