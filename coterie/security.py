"""The ``[security]`` section of the cluster config: CURVE on or off, and where the keys live.

::

    [security]
    curve = true                              # false runs without authentication or encryption
    secret_key_file = "keys/{id}.key_secret"  # each node's secret key; {id} is the node's id
    public_key_file = "keys/{id}.key"         # each node's public key, same pattern
    allowed_keys = ["keys/ops.key"]           # more public key files that may connect (clients)

The section is required: a cluster runs without CURVE only when its file says
``curve = false``. With CURVE every node has its own keypair (``coterie keygen --out
keys/n1``), a node admits the public keys of every node in the file plus ``allowed_keys``, and
dials each node only with that node's public key as the server key. Relative paths are relative
to the config file.

The section is checked when the file is parsed; key files are read only when a node or client
starts (a tool reading the file for node ids need not see any secret). A missing or bad key
raises :class:`~coterie.config.ConfigError` naming the key, the node and the file.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterable
from typing import Any

from actors.security import CurveConfig, KeyFileError, public_key_of, read_key_file

ID_PLACEHOLDER = "{id}"
_KEYS = {"curve", "secret_key_file", "public_key_file", "allowed_keys"}
MISSING_SECTION = (
    "missing: add a [security] table with curve = true and key files (make them with "
    "`coterie keygen`), or curve = false to run without authentication and encryption"
)


@dataclasses.dataclass(frozen=True)
class SecuritySettings:
    curve: bool
    base: pathlib.Path  # the folder of the config file
    secret_key_file: str = ""
    public_key_file: str = ""
    allowed_key_files: tuple[str, ...] = ()

    def secret_key_path(self, node_id: str) -> pathlib.Path:
        return self._resolve(self.secret_key_file.replace(ID_PLACEHOLDER, node_id))

    def public_key_path(self, node_id: str) -> pathlib.Path:
        return self._resolve(self.public_key_file.replace(ID_PLACEHOLDER, node_id))

    def _resolve(self, text: str) -> pathlib.Path:
        path = pathlib.Path(text).expanduser()
        return path if path.is_absolute() else self.base / path

    def node_curve(self, node_id: str, nodes: Iterable[tuple[str, str]]) -> CurveConfig | None:
        """The CURVE keys of node `node_id` given every (id, address); None with curve off.

        Raises KeyFileError naming the key, the node and the path.
        """
        if not self.curve:
            return None
        secret = read_key_file(
            self.secret_key_path(node_id),
            f"security.secret_key_file of node {node_id}",
            secret=True,
        )
        server_keys = self._node_public_keys(nodes)
        own = server_keys.get(_address_of(node_id, nodes))
        if own is not None and own != public_key_of(secret):
            raise KeyFileError(
                f"security.public_key_file of node {node_id} ({self.public_key_path(node_id)}): "
                f"does not match its secret key ({self.secret_key_path(node_id)})"
            )
        allowed = frozenset(server_keys.values()) | self._allowed_keys()
        return CurveConfig(secret, allowed, server_keys)

    def client_curve(
        self, secret_key_file: pathlib.Path, nodes: Iterable[tuple[str, str]]
    ) -> CurveConfig | None:
        """Keys for a client or tool talking to the nodes; its public key must be in
        ``allowed_keys``. None with curve off."""
        if not self.curve:
            return None
        secret = read_key_file(secret_key_file, "client secret key", secret=True)
        server_keys = self._node_public_keys(nodes)
        return CurveConfig(secret, frozenset(server_keys.values()), server_keys)

    def _node_public_keys(self, nodes: Iterable[tuple[str, str]]) -> dict[str, bytes]:
        keys = {}
        for node_id, address in nodes:
            path = self.public_key_path(node_id)
            keys[address] = read_key_file(
                path, f"security.public_key_file of node {node_id}", secret=False
            )
        return keys

    def _allowed_keys(self) -> frozenset[bytes]:
        return frozenset(
            read_key_file(self._resolve(text), f"security.allowed_keys[{n}]", secret=False)
            for n, text in enumerate(self.allowed_key_files)
        )


def _address_of(node_id: str, nodes: Iterable[tuple[str, str]]) -> str:
    return next((address for nid, address in nodes if nid == node_id), "")


def parse_security(
    raw: Any, config_path: pathlib.Path, fail: Callable[[str, str], Exception]
) -> SecuritySettings:
    """Check the [security] table (not the key files) and return its settings."""
    if raw is None:
        raise fail("security", MISSING_SECTION)
    if not isinstance(raw, dict):
        raise fail("security", "must be a table")
    for key in raw:
        if key not in _KEYS:
            raise fail(f"security.{key}", f"unknown key (known: {', '.join(sorted(_KEYS))})")
    curve = raw.get("curve", True)
    if not isinstance(curve, bool):
        raise fail("security.curve", f"must be true or false, got {curve!r}")
    base = config_path.parent
    if not curve:
        return SecuritySettings(False, base)
    files = []
    for key in ("secret_key_file", "public_key_file"):
        value = raw.get(key)
        if value is None:
            raise fail(f"security.{key}", "missing (required with curve = true)")
        if not isinstance(value, str) or not value:
            raise fail(f"security.{key}", f"must be a non-empty string, got {value!r}")
        if ID_PLACEHOLDER not in value:
            raise fail(
                f"security.{key}",
                f"{value!r} must contain {ID_PLACEHOLDER}: each node has its own keypair",
            )
        files.append(value)
    allowed = raw.get("allowed_keys", [])
    if not isinstance(allowed, list) or not all(isinstance(a, str) and a for a in allowed):
        raise fail("security.allowed_keys", f"must be a list of key file paths, got {allowed!r}")
    return SecuritySettings(True, base, files[0], files[1], tuple(allowed))
