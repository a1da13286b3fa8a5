"""Raft consensus: sans-IO role behaviours (follower, candidate, leader), the role actors that
host them, client sessions and snapshots. Built on `actors` and `wal`; never touches a socket or
a file directly."""
