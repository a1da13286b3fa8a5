"""Cluster membership: who is in the cluster and who is alive (ping/pong liveness keyed on the
supervisor's path, phi accrual failure detection, member states and events)."""
