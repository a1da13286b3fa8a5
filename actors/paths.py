"""Actor addresses and paths: the one strict parser and formatter.

A path names an actor independently of any running instance::

    coterie://system@host:port/user/node/leader
    \\_____/  \\____/ \\_______/ \\______________/
    scheme   system  address    elements

The address part (``@host:port``) is absent for a system that does not listen on the network.
The first element is a guardian: ``user`` for actors spawned by user code, ``system`` for
coterie's own, ``temp`` for the reply slots of asks.

Refs are keyed by path, never by instance, so an actor restarted under the same path keeps every
ref to it valid (Sirius' stale ActorRefs with old ids were a source of confusion).

Every parse error is an :class:`InvalidActorPath` naming the part that is wrong and why: an
operator pasting an address into a tool learns what to fix (Sirius' nodetool rejected its own
addresses with an unhelpful message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SCHEME = "coterie"
GUARDIANS = ("user", "system", "temp")
# The system name that matches whichever system listens at the address: for clients and tools
# that know a node only by host:port. A system never takes this name itself.
ANY_SYSTEM = "_"

_SYSTEM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_ELEMENT_RE = re.compile(r"[A-Za-z0-9_~$][A-Za-z0-9_.~$-]{0,127}\Z")
_IPV4_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}\Z")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}\Z")


class InvalidActorPath(ValueError):
    """A path or address that does not parse; names the bad part and the reason."""

    def __init__(self, text: str, part: str, reason: str) -> None:
        self.text = text
        self.part = part
        self.reason = reason
        super().__init__(f"invalid actor path {text!r}: {part}: {reason}")


def _check_host(text: str, host: str) -> str:
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        if not inner or ":" not in inner or not _IPV6_RE.match(inner):
            raise InvalidActorPath(text, f"host {host!r}", "not a valid bracketed IPv6 address")
        return host
    if not host:
        raise InvalidActorPath(text, "host", "empty (expected system@host:port)")
    if _IPV4_RE.match(host):
        if any(int(octet) > 255 for octet in host.split(".")):
            raise InvalidActorPath(text, f"host {host!r}", "IPv4 octet above 255")
        return host
    if len(host) > 253:
        raise InvalidActorPath(text, f"host {host[:20]!r}...", "longer than 253 characters")
    for label in host.split("."):
        if not _LABEL_RE.match(label):
            raise InvalidActorPath(
                text, f"host {host!r}", f"label {label!r} is not a valid hostname label"
            )
    return host.lower()


def _check_port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not port_text.isascii():
        raise InvalidActorPath(text, f"port {port_text!r}", "not a decimal number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InvalidActorPath(text, f"port {port_text!r}", "must be between 1 and 65535")
    return port


@dataclass(frozen=True, slots=True)
class Address:
    """Where an actor system lives: its name and, when it listens, its host and port."""

    system: str
    host: str | None = None
    port: int | None = None
    text: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.host is None) != (self.port is None):
            raise ValueError("an address has both host and port, or neither")
        rendered = f"{SCHEME}://{self.system}"
        if self.host is not None:
            rendered += f"@{self.host}:{self.port}"
        object.__setattr__(self, "text", rendered)

    @property
    def endpoint(self) -> str | None:
        """`host:port`, the transport's key for a peer, or None for a local-only system."""
        return None if self.host is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse `coterie://system[@host:port]` (no path)."""
        prefix = f"{SCHEME}://"
        if not text.startswith(prefix):
            scheme = text.split("://", 1)[0] if "://" in text else text[:20]
            raise InvalidActorPath(text, f"scheme {scheme!r}", f"expected '{prefix}'")
        rest = text[len(prefix) :]
        if "/" in rest:
            raise InvalidActorPath(text, "address", "an address has no path part")
        return _parse_authority(text, rest)


def _parse_authority(text: str, authority: str) -> Address:
    if "@" not in authority:
        system, hostport = authority, None
    else:
        system, hostport = authority.split("@", 1)
    if system != ANY_SYSTEM and not _SYSTEM_RE.match(system):
        raise InvalidActorPath(
            text,
            f"system name {system!r}",
            "expected 1-64 letters, digits, '_' or '-', starting with a letter or digit",
        )
    if hostport is None:
        return Address(system)
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0 or hostport[close + 1 : close + 2] != ":":
            raise InvalidActorPath(text, f"address {hostport!r}", "expected [ipv6]:port")
        host_text, port_text = hostport[: close + 1], hostport[close + 2 :]
    else:
        if ":" not in hostport:
            raise InvalidActorPath(text, f"address {hostport!r}", "missing ':port'")
        host_text, port_text = hostport.rsplit(":", 1)
    return Address(system, _check_host(text, host_text), _check_port(text, port_text))


@dataclass(frozen=True, slots=True)
class ActorPath:
    """An actor's full name: an address plus elements under a guardian."""

    address: Address
    elements: tuple[str, ...]
    text: str = field(default="", compare=False, repr=False)
    key: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.elements or self.elements[0] not in GUARDIANS:
            raise ValueError(f"a path starts with one of {GUARDIANS}, got {self.elements!r}")
        for element in self.elements:
            if not _ELEMENT_RE.match(element) or element in (".", ".."):
                raise ValueError(f"invalid path element {element!r}")
        key = "/" + "/".join(self.elements)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "text", self.address.text + key)

    def __str__(self) -> str:
        return self.text

    @property
    def name(self) -> str:
        return self.elements[-1]

    @property
    def parent(self) -> ActorPath | None:
        if len(self.elements) == 1:
            return None
        return ActorPath(self.address, self.elements[:-1])

    def child(self, name: str) -> ActorPath:
        if not _ELEMENT_RE.match(name) or name in (".", ".."):
            raise InvalidActorPath(
                name, f"actor name {name!r}", "expected letters, digits and _.~$- (max 128)"
            )
        return ActorPath(self.address, (*self.elements, name))

    def with_address(self, address: Address) -> ActorPath:
        return ActorPath(address, self.elements)

    @classmethod
    def parse(cls, text: str) -> ActorPath:
        """Parse a full path; raises InvalidActorPath naming the bad part."""
        if not isinstance(text, str):
            raise InvalidActorPath(repr(text), "type", f"expected str, got {type(text).__name__}")
        prefix = f"{SCHEME}://"
        if not text.startswith(prefix):
            scheme = text.split("://", 1)[0] if "://" in text else text[:20]
            raise InvalidActorPath(text, f"scheme {scheme!r}", f"expected '{prefix}'")
        rest = text[len(prefix) :]
        slash = rest.find("/")
        if slash < 0:
            raise InvalidActorPath(text, "path", "missing, expected e.g. /user/name")
        address = _parse_authority(text, rest[:slash])
        elements = tuple(rest[slash + 1 :].split("/"))
        if elements[0] not in GUARDIANS:
            raise InvalidActorPath(
                text, f"guardian {elements[0]!r}", f"the path must start with one of {GUARDIANS}"
            )
        for position, element in enumerate(elements):
            if element == "":
                raise InvalidActorPath(text, f"element {position}", "empty (doubled or trailing /)")
            if not _ELEMENT_RE.match(element) or element in (".", ".."):
                raise InvalidActorPath(
                    text, f"element {element!r}", "expected letters, digits and _.~$- (max 128)"
                )
        return cls(address, elements)
