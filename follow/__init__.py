"""Following over HTTP: catching up on a cluster's committed log in one direction, no Raft.

A node serves ranges of its committed log (``GET /log``), its log's bounds (``GET
/log/status``) and its latest snapshot (``GET /snapshot/latest``) on an HTTP port of its own
(:mod:`follow.server`). A *follower* (:mod:`follow.follower`) never votes and is not in the
Raft configuration: it pulls ranges from a URI (a node, another follower, or a load balancer
in front of any of them), checks every entry (:mod:`follow.checker`), appends it to its own
WAL and applies it to its own state machine, in order. It serves ``/log`` itself, so
followers chain, and answers reads of its state with the sequence number they reflect.

Protocol logic is sans-IO: the window (:mod:`follow.window`), the gap checker
(:mod:`follow.checker`) and the record codec (:mod:`follow.records`) take bytes and numbers
and return decisions; sockets and threads live in :mod:`follow.server`, :mod:`follow.client`
and :mod:`follow.follower`.
"""
