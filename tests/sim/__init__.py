"""The deterministic Raft simulator: many sans-IO cores in one process over a simulated
network, disk and clock, with Raft's safety invariants checked after every step.

* ``cluster``: :class:`SimCluster`, the event loop, network, disk, hosts and clients;
* ``checker``: :class:`Checker`, the invariants;
* ``schedule``: :func:`run_random`, one randomized faulty run from a seed;
* ``replay``: ``python -m tests.sim.replay SEED`` replays a seed (with ``--trace``, the events).
"""
