"""Membership at scale, after Rapid (Suresh et al., USENIX ATC 2018): every member is watched by
K observers on an expander graph of K rings, a multi-node cut detector acts only on clear
cuts (H of K observers agree, nobody stuck between L and H), and the whole cluster moves to
the next configuration in one agreed step (a Fast Paxos fast round, classic Paxos when
proposals differ). Members behind on the view are caught up by anti-entropy.

The protocol is sans-IO (:class:`RapidNode` and the modules it composes: topology,
cut_detector, consensus, gossip, view, monitor, join); :mod:`membership.rapid.sim` runs
thousands of them in one process over a simulated network and clock::

    from membership.rapid import RapidConfig
    from membership.rapid.sim import RapidSim

    sim = RapidSim(RapidConfig(), seed=7)
    sim.start_static(1000)
    sim.run_for(5.0)
    sim.crash(sim.names[:10])
    sim.run_while_not(lambda: sim.agreed(set(sim.names[10:])), limit=60.0)

In a real node, :mod:`membership.rapid.actor` runs the same core as the membership actor;
a node supervisor given a ``RapidMembershipConfig`` spawns it instead of the gossip one
(:func:`membership.supervisor.membership_props`).
"""

from membership.rapid.config import RAPID_DETECTOR, RapidConfig
from membership.rapid.messages import (
    GetRapidStatus,
    RapidStatus,
    RemovedFromCluster,
    ViewChange,
)
from membership.rapid.node import RapidNode, State
from membership.rapid.topology import Configuration, ConfigurationCache

__all__ = [
    "RAPID_DETECTOR",
    "Configuration",
    "ConfigurationCache",
    "GetRapidStatus",
    "RapidConfig",
    "RapidNode",
    "RapidStatus",
    "RemovedFromCluster",
    "State",
    "ViewChange",
]
