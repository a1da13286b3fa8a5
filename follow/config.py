"""The ``[follow]`` table of the cluster file: who serves ``/log`` where, and the followers.

::

    [follow.serve]                    # opt-in: node or follower id -> host:port of its
    n1 = "127.0.0.1:8101"             # /log, /log/status, /snapshot/latest (and, on a
    f1 = "127.0.0.1:8201"             # follower, POST /query) endpoint

    [[follow.followers]]              # follower-only nodes: never vote, not in Raft's
    id = "f1"                         # configuration
    data_dir = "data/f1"              # relative to the cluster file
    source = "http://127.0.0.1:8101"  # any node, follower or load balancer serving /log
    timeout_s = 5.0                   # optional: a request that stalls this long times out
    initial_window = 64               # optional: entries asked for at first
    max_window = 16384                # optional: the window never grows past this
    snapshot_every_entries = 0        # optional: snapshot + compact every N entries (0: never)

``coterie node --config FILE --id f1`` runs follower ``f1``; ``--follow URI`` overrides its
``source`` (a follower named only on the command line needs ``--follow``). The table is
parsed here, against the nodes of the already-validated file; a bad value raises
``ConfigError`` naming the key (``follow.followers[0].source: ...``).
"""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
from typing import Any

from follow.client import parse_uri

_FOLLOW = {"serve", "followers"}
_FOLLOWER = {
    "id",
    "data_dir",
    "source",
    "timeout_s",
    "initial_window",
    "max_window",
    "snapshot_every_entries",
}


class FollowConfigError(ValueError):
    """A bad ``[follow]`` value; the message starts with the file and the key."""


@dataclasses.dataclass(frozen=True)
class FollowerEntry:
    id: str
    data_dir: pathlib.Path
    source: str | None
    timeout_s: float = 5.0
    initial_window: int = 64
    max_window: int = 16384
    snapshot_every_entries: int = 0


@dataclasses.dataclass(frozen=True)
class FollowConfig:
    serve: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> host:port
    followers: dict[str, FollowerEntry] = dataclasses.field(default_factory=dict)


def load(path: pathlib.Path, node_ids: set[str], taken: set[str]) -> FollowConfig:
    """The ``[follow]`` table of the (already validated) cluster file at `path`. `node_ids`
    are the Raft nodes' ids, `taken` the host:port endpoints the nodes already use."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FollowConfigError(f"{path}: {exc}") from exc
    return parse(data.get("follow", {}), path, node_ids, taken)


def parse(raw: Any, path: pathlib.Path, node_ids: set[str], taken: set[str]) -> FollowConfig:
    def fail(key: str, reason: str) -> FollowConfigError:
        return FollowConfigError(f"{path}: follow{key}: {reason}")

    if not isinstance(raw, dict):
        raise fail("", "must be a table")
    for key in raw:
        if key not in _FOLLOW:
            raise fail(f".{key}", f"unknown key (known: {', '.join(sorted(_FOLLOW))})")
    followers: dict[str, FollowerEntry] = {}
    raw_followers = raw.get("followers", [])
    if not isinstance(raw_followers, list):
        raise fail(".followers", "must be an array of tables ([[follow.followers]])")
    for n, item in enumerate(raw_followers):
        entry = _follower(item, f".followers[{n}]", path, fail)
        if entry.id in node_ids or entry.id in followers:
            raise fail(f".followers[{n}].id", f"{entry.id!r} is already a node or follower id")
        followers[entry.id] = entry
    serve_raw = raw.get("serve", {})
    if not isinstance(serve_raw, dict):
        raise fail(".serve", 'must be a table of id = "host:port"')
    serve: dict[str, str] = {}
    used = set(taken)
    for node_id, address in serve_raw.items():
        key = f".serve.{node_id}"
        if node_id not in node_ids and node_id not in followers:
            raise fail(key, "not the id of a node or a follower")
        if not isinstance(address, str) or not _is_host_port(address):
            raise fail(key, f"{address!r} is not host:port")
        if address in used:
            raise fail(key, f"{address!r} is already in use by another endpoint")
        used.add(address)
        serve[node_id] = address
    return FollowConfig(serve, followers)


def _follower(item: Any, where: str, path: pathlib.Path, fail: Any) -> FollowerEntry:
    if not isinstance(item, dict):
        raise fail(where, "must be a table")
    for key in item:
        if key not in _FOLLOWER:
            raise fail(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(_FOLLOWER))})")
    follower_id = item.get("id")
    if not isinstance(follower_id, str) or not follower_id:
        raise fail(f"{where}.id", "missing or not a non-empty string")
    data_dir_text = item.get("data_dir")
    if not isinstance(data_dir_text, str) or not data_dir_text:
        raise fail(f"{where}.data_dir", "missing or not a non-empty string")
    data_dir = pathlib.Path(data_dir_text)
    if not data_dir.is_absolute():
        data_dir = path.parent / data_dir
    source = item.get("source")
    if source is not None:
        if not isinstance(source, str):
            raise fail(f"{where}.source", f"must be a string, got {source!r}")
        try:
            parse_uri(source)
        except ValueError as exc:
            raise fail(f"{where}.source", str(exc)) from exc
    timeout = item.get("timeout_s", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise fail(f"{where}.timeout_s", f"must be a positive number, got {timeout!r}")
    windows = {}
    for key, default in (("initial_window", 64), ("max_window", 16384)):
        value = item.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(f"{where}.{key}", f"must be a positive integer, got {value!r}")
        windows[key] = value
    every = item.get("snapshot_every_entries", 0)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise fail(f"{where}.snapshot_every_entries", f"must be 0 or more, got {every!r}")
    if windows["initial_window"] > windows["max_window"]:
        raise fail(f"{where}.initial_window", "is above max_window")
    return FollowerEntry(
        follower_id, data_dir, source, float(timeout), windows["initial_window"],
        windows["max_window"], every,
    )  # fmt: skip


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536
