"""Cluster membership: who is in the cluster and who is alive.

Each node runs a node supervisor at ``/user/node`` with a membership actor below it at
``/user/node/membership``. Members are named by their supervisor paths; liveness pings go to
the supervisor and its pong names that same path, which keys every table (Sirius keyed pongs by
a child's path and re-resolved every peer every few seconds). A phi accrual failure detector
turns pong arrivals into suspicion; joins go through seeds, leaves are announced, and members
unreachable for too long are downed and removed. Subscribers get ``MemberUp``,
``MemberUnreachable``, ``MemberReachable`` and ``MemberRemoved``, in order::

    from membership import MembershipConfig, Subscribe, start_node, membership_path

    node = start_node(system, MembershipConfig(seeds=("coterie://a@10.0.0.1:7100",)))
    system.ref(membership_path(node.path.text)).tell(Subscribe(), sender=my_actor)

The protocol logic (:mod:`membership.core`, :mod:`membership.members`,
:mod:`membership.liveness`, :mod:`membership.join`, :mod:`membership.phi`) is sans-IO; the
actors (:mod:`membership.actor`, :mod:`membership.supervisor`) are thin shells around it.
"""

from membership.actor import MembershipActor
from membership.config import MembershipConfig, membership_path, supervisor_path
from membership.core import Membership
from membership.members import MemberState
from membership.messages import (
    GetMembershipStatus,
    LeaveCluster,
    LeaveResult,
    MemberReachable,
    MemberRemoved,
    MemberRow,
    MembershipStatus,
    MemberUnreachable,
    MemberUp,
    Subscribe,
    Unsubscribe,
)
from membership.phi import AKKA_DEFAULTS, DetectorConfig, PhiAccrualDetector, Verdict
from membership.supervisor import NodeSupervisor, PingResponder, new_incarnation, start_node

__all__ = [
    "AKKA_DEFAULTS",
    "DetectorConfig",
    "GetMembershipStatus",
    "LeaveCluster",
    "LeaveResult",
    "MemberReachable",
    "MemberRemoved",
    "MemberRow",
    "MemberState",
    "MemberUnreachable",
    "MemberUp",
    "Membership",
    "MembershipActor",
    "MembershipConfig",
    "MembershipStatus",
    "NodeSupervisor",
    "PhiAccrualDetector",
    "PingResponder",
    "Subscribe",
    "Unsubscribe",
    "Verdict",
    "membership_path",
    "new_incarnation",
    "start_node",
    "supervisor_path",
]
