"""The Raft paper's figure 8, staged in the simulator (5 nodes, one entry per message).

1. Leader A replicates entry X (index i, term a) to B only, then crashes.
2. N, among the other three, wins the next term, appends its no-op at index i (term n > a) and
   is cut off before anyone else gets it.
3. A restarts; M (A or B) wins a later term m. Its no-op (i + 1, term m) reaches the other of A
   and B (O); X reaches C, one of the two nodes that voted for N. X is now on a majority
   (A, B, C) but M's own-term entry is not: committing X now, by counting its replicas, is
   the figure-8 bug. M is cut off at that moment.
4. N (last term n > a) can win again with the votes of C and D, and overwrites X at index i.

A correct leader never commits X in step 3; a leader that counts old-term replicas does, and
N's victory in step 4 then breaks leader completeness (and loses an acknowledged write).
"""

from __future__ import annotations

from dataclasses import dataclass

from .cluster import SimCluster, SimNode

TIMEOUT = 5000


class StagingFailed(AssertionError):
    """The cluster did not reach a stage of the script (a timing assumption broke)."""


@dataclass
class Figure8:
    index: int  # i
    x_term: int  # a
    x_request: str
    a: str
    b: str
    n: str
    m: str
    c: str
    d: str
    x_replicas_when_m_cut: list[str]
    m_commit_when_cut: int


def _wait(cluster: SimCluster, what: str, predicate: object) -> None:
    if not cluster.run_until(predicate, TIMEOUT):  # type: ignore[arg-type]
        raise StagingFailed(f"seed {cluster.seed}: never reached: {what}")


def _leader_among(cluster: SimCluster, ids: list[str], above: int) -> SimNode | None:
    for node_id in ids:
        node = cluster.nodes[node_id]
        if node.core is not None and node.core.is_leader and node.core.term > above:
            return node
    return None


def stage_figure8(cluster: SimCluster) -> Figure8:
    """Run the script on a fresh 5-node cluster built with max_entries_per_message=1."""
    ids = list(cluster.ids)
    _wait(cluster, "a first leader", lambda: cluster.leader() is not None)
    leader = cluster.leader()
    assert leader is not None
    cluster.propose(count=3)
    _wait(cluster, "a common prefix", lambda: all(n.applied >= 4 for n in cluster.nodes.values()))
    a = leader.id
    b, *others = [x for x in ids if x != a]
    core_a = leader.core
    assert core_a is not None
    term_a = core_a.term

    # 1. X reaches B only; A crashes once both hold it durably.
    cluster.partition([a, b], others)
    (x_request,) = cluster.propose(a, 1)
    i = core_a.log.last_index
    nodes = cluster.nodes
    _wait(
        cluster,
        "X durable on A and B",
        lambda: nodes[a].storage.last_index >= i and nodes[b].storage.last_index >= i,
    )
    cluster.crash(a)

    # 2. N wins among the other three and is cut off at once; wait until its no-op is durable.
    _wait(cluster, "N elected", lambda: _leader_among(cluster, others, term_a) is not None)
    n_node = _leader_among(cluster, others, term_a)
    assert n_node is not None and n_node.core is not None
    n = n_node.id
    term_n = n_node.core.term
    cluster.isolate(n)
    _wait(cluster, "N's entry at i durable", lambda: nodes[n].storage.term_at(i) == term_n)
    c, d = [x for x in others if x != n]

    # 3. A restarts; M (A or B) wins with C; D never hears from A or B.
    cluster.heal()
    cluster.isolate(n)
    cluster.block(a, d)
    cluster.block(b, d)
    cluster.restart(a)
    _wait(cluster, "M elected", lambda: _leader_among(cluster, [a, b], term_n) is not None)
    m_node = _leader_among(cluster, [a, b], term_n)
    assert m_node is not None and m_node.core is not None
    m = m_node.id
    o = b if m == a else a
    m_core = m_node.core
    cluster.block(m, c)  # C waits until O holds M's no-op
    _wait(cluster, "O acknowledges M's no-op", lambda: m_core.role.progress[o].match >= i + 1)
    cluster.blocked.discard((m, c))
    _wait(cluster, "C acknowledges X", lambda: m_core.role.progress[c].match >= i)
    if m_core.role.progress[c].match != i:
        raise StagingFailed(f"seed {cluster.seed}: C got M's no-op too early")
    cluster.isolate(m)
    replicas = [x for x in ids if nodes[x].storage.term_at(i) == term_a]
    commit_when_cut = m_core.commit_index

    # 4. Only N, C and D can talk: N wins and overwrites index i.
    cluster.crash(o)
    cluster.heal()
    cluster.isolate(m)
    _wait(
        cluster,
        "N leads again and commits index i",
        lambda: (
            (node := _leader_among(cluster, [n], term_n)) is not None
            and node.core is not None
            and node.core.commit_index >= i
        ),
    )
    return Figure8(i, term_a, x_request, a, b, n, m, c, d, replicas, commit_when_cut)
