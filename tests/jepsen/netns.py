"""A private network for a cluster: each node in its own network namespace, joined by veth
pairs to a bridge in the root namespace, and faults made with iptables inside each
namespace. Clients run in the root namespace and reach every node through the bridge, so
only node-to-node links are ever cut: the real ZeroMQ/TCP path, no hook in the transport.

Layout for a cluster tagged ``cj<pid>x<n>`` on subnet ``10.213.K.0/24``::

    root ns:  bridge cj..b (10.213.K.1, the clients' address)
    ns cj..-n1: eth0 10.213.K.11  <- veth cj..v1 on the bridge
    ns cj..-n2: eth0 10.213.K.12  ...

Each namespace has two chains, CJIN (from INPUT) and CJOUT (from OUTPUT). A cut link
between a and b is a DROP of b's address both ways in a's namespace and of a's in b's:
packets vanish silently, as in a real partition (no RST, no ICMP). Message loss is a
random DROP of a fraction of the packets arriving from other nodes (TCP turns it into
retransmissions: jitter and stalls). Healing flushes the chains.

Needs root, ``ip`` (iproute2) and ``iptables``; :func:`unavailable` says what is missing.
Subnets are handed out under a file lock, and namespaces left behind by a dead process
(``cj<pid>...`` with no such pid) are removed on the next setup.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable

LOCK_FILE = "/run/lock/coterie-jepsen.lock"
_SEQ = itertools.count()
_STALE = re.compile(r"^cj(\d+)x\d+")


class NetworkError(RuntimeError):
    """A network command failed; the message has the command and its output."""


def unavailable() -> str | None:
    """Why namespaced networks cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables", "iptables-restore"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make jepsen installs iptables)"
    probe = f"cjprobe{os.getpid()}"
    try:
        run(["ip", "netns", "add", probe])
        run(["ip", "netns", "exec", probe, "iptables", "-w", "-L", "-n"])
    except NetworkError as exc:
        return f"cannot make a network namespace with iptables here: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def run(command: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetworkError(f"{' '.join(command)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class Network:
    """The namespaces, bridge and fault rules of one cluster."""

    def __init__(self, nodes: Iterable[str]) -> None:
        self.nodes = list(nodes)
        if len(self.nodes) > 200:
            raise ValueError("at most 200 nodes per network")
        self.tag = f"cj{os.getpid()}x{next(_SEQ)}"
        self.bridge = f"{self.tag}b"
        self.subnet: str | None = None
        self.namespaces = {node: f"{self.tag}-{node}" for node in self.nodes}
        self.ips: dict[str, str] = {}
        self.client_ip = ""
        self.cut: set[frozenset[str]] = set()
        self.loss = 0.0
        self._up = False

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        _remove_stale()
        with open(LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = run(["ip", "-4", "-o", "addr", "show"])
            third = next((k for k in range(1, 255) if f" 10.213.{k}." not in used), None)
            if third is None:
                raise NetworkError("no free 10.213.K.0/24 subnet")
            self.subnet = f"10.213.{third}.0/24"
            self.client_ip = f"10.213.{third}.1"
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            self._up = True
            run(["ip", "addr", "add", f"{self.client_ip}/24", "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])
        for n, node in enumerate(self.nodes, 1):
            ns, veth = self.namespaces[node], f"{self.tag}v{n}"
            self.ips[node] = f"10.213.{third}.{10 + n}"
            run(["ip", "netns", "add", ns])
            run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            run(["ip", "link", "set", veth, "master", self.bridge, "up"])
            run(["ip", "-n", ns, "addr", "add", f"{self.ips[node]}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            self._restore(
                node,
                [":CJIN - [0:0]", ":CJOUT - [0:0]", "-A INPUT -j CJIN", "-A OUTPUT -j CJOUT"],
            )

    def teardown(self) -> None:
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        if self._up:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
            self._up = False

    def exec_prefix(self, node: str) -> list[str]:
        """Run a command inside ``node``'s namespace (``ip netns exec`` execs it, so the
        process started is the command itself and signals reach it directly)."""
        return ["ip", "netns", "exec", self.namespaces[node]]

    # ------------------------------------------------------------------ faults

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Nodes talk only within their group (a node in no group is isolated)."""
        members = [set(g) for g in groups]
        side = {node: n for n, group in enumerate(members) for node in group}
        cut = set()
        for a, b in itertools.combinations(self.nodes, 2):
            if a not in side or b not in side or side[a] != side[b]:
                cut.add(frozenset((a, b)))
        self.apply(cut, self.loss)

    def cut_links(self, links: Iterable[tuple[str, str]]) -> None:
        """Cut exactly these links (e.g. a bridge topology), keeping the rest."""
        self.apply({frozenset(link) for link in links}, self.loss)

    def lose(self, fraction: float) -> None:
        """Drop ``fraction`` of the packets between nodes, on every link."""
        self.apply(self.cut, fraction)

    def heal(self) -> None:
        self.apply(set(), 0.0)

    def apply(self, cut: set[frozenset[str]], loss: float) -> None:
        for node in self.nodes:
            rules = ["-F CJIN", "-F CJOUT"]
            for link in sorted(cut, key=sorted):
                if node in link:
                    (peer,) = link - {node}
                    rules.append(f"-A CJIN -s {self.ips[peer]} -j DROP")
                    rules.append(f"-A CJOUT -d {self.ips[peer]} -j DROP")
            if loss > 0:
                # Clients' packets are spared: loss is between nodes only.
                rules.append(f"-A CJIN -s {self.client_ip} -j RETURN")
                rules.append(
                    f"-A CJIN -s {self.subnet} -m statistic "
                    f"--mode random --probability {loss:.3f} -j DROP"
                )
            self._restore(node, rules)
        self.cut, self.loss = set(cut), loss

    def _restore(self, node: str, rules: list[str]) -> None:
        script = "\n".join(["*filter", *rules, "COMMIT", ""])
        run([*self.exec_prefix(node), "iptables-restore", "-w", "--noflush"], stdin=script)


def _remove_stale() -> None:
    """Namespaces and bridges of runs whose process is gone (a killed test run)."""
    with contextlib.suppress(NetworkError):
        for line in run(["ip", "netns", "list"]).splitlines():
            name = line.split()[0] if line.split() else ""
            match = _STALE.match(name)
            if match and not _pid_alive(int(match.group(1))):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        for line in run(["ip", "-o", "link", "show", "type", "bridge"]).splitlines():
            name = line.split(":")[1].strip() if ":" in line else ""
            match = _STALE.match(name)
            if match and not _pid_alive(int(match.group(1))):
                subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
