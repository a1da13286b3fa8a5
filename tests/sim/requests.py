"""What clients ask of a simulated cluster: plain writes, commands with a payload of their own
(session clients), membership changes and reads; and what happens to their answers (checked,
counted, handed to whoever asked).

A mixin of :class:`~tests.sim.cluster.SimCluster`, which holds the state it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from consensus.configuration import MembershipChange
from consensus.messages import ClientCommand, ClientResponse
from consensus.ready import ReadState

if TYPE_CHECKING:
    from .cluster import SimCluster, SimNode

    _Base = SimCluster
else:
    _Base = object


class ClientRequests(_Base):
    def propose(self, node_id: str | None = None, count: int = 1) -> list[str]:
        """Client commands to ``node_id`` (default: the leader, else any live node). Each
        command's payload is its request id."""
        node = self._target(node_id)
        if node is None:
            return []
        commands = []
        for _ in range(count):
            self._requests += 1
            request_id = f"w{self._requests}"
            commands.append(ClientCommand(request_id, request_id.encode()))
        assert node.core is not None
        self._carry_out(node, node.core.propose(commands, self.now))
        return [c.request_id for c in commands]

    def submit(
        self,
        payload: bytes,
        node_id: str | None = None,
        callback: Callable[[ClientResponse], None] | None = None,
    ) -> str | None:
        """One client command with ``payload`` (an entry payload: one command or a batch);
        ``callback`` gets the answer. None if no node is up to take it."""
        node = self._target(node_id)
        if node is None:
            return None
        self._requests += 1
        request_id = f"c{self._requests}"
        if callback is not None:
            self.callbacks[request_id] = callback
        self.payloads[request_id] = payload
        assert node.core is not None
        self._carry_out(node, node.core.propose([ClientCommand(request_id, payload)], self.now))
        return request_id

    def change(
        self,
        change: MembershipChange,
        node_id: str | None = None,
        callback: Callable[[ClientResponse], None] | None = None,
    ) -> str | None:
        """Ask the leader (or ``node_id``) for a membership change; the answer goes to
        ``callback`` and to ``change_results``."""
        node = self._target(node_id)
        if node is None or node.core is None:
            return None
        self._requests += 1
        request_id = f"m{self._requests}"
        if callback is not None:
            self.callbacks[request_id] = callback
        self.note(f"CHANGE {change} at {node.id}")
        self._carry_out(node, node.core.change_membership(request_id, change, self.now))
        return request_id

    def read(self, node_id: str | None = None, *, stale: bool = False) -> str | None:
        node = self._target(node_id)
        if node is None:
            return None
        self._requests += 1
        request_id = f"r{self._requests}"
        self.reads[request_id] = (node.id, self.checker.max_acked, stale)
        assert node.core is not None
        self._carry_out(node, node.core.read(request_id, self.now, stale=stale))
        return request_id

    def _target(self, node_id: str | None) -> SimNode | None:
        if node_id is not None:
            node = self.nodes[node_id]
            return node if node.core is not None else None
        leader = self.leader()
        if leader is not None:
            return leader
        up = self.up_nodes()
        return self.rng.choice(up) if up else None

    def _on_result(self, response: ClientResponse) -> None:
        request_id = response.request_id
        if request_id.startswith("m"):
            self.change_results[request_id] = response
        elif response.ok:
            payload = self.payloads.pop(request_id, None)
            self.checker.on_ack(
                request_id, response.index, payload if payload is not None else request_id.encode()
            )
            self.acked[request_id] = response.index
        else:
            self.payloads.pop(request_id, None)
            self.refused[response.error or "?"] += 1
        callback = self.callbacks.pop(request_id, None)
        if callback is not None:
            callback(response)

    def _on_read(self, node: SimNode, read: ReadState) -> None:
        self.read_results[read.request_id] = read
        info = self.reads.get(read.request_id)
        if info is None or not read.ok:
            return
        _, required, stale = info
        if not stale:
            self.checker.on_read(node.id, read, required, node.applied)
