"""The wire format: registered message types, the msgpack envelope and the frame codec.

Theory of operation
-------------------
A *message* is a frozen dataclass registered under a stable string tag with :func:`message`.
The tag, not the Python class name, goes on the wire, so classes can be renamed or moved freely.

An *envelope* is a msgpack array::

    [version, cluster_id, tag, sender, recipient, correlation, payload]

``payload`` is itself a msgpack ``bin`` holding the message's fields as an array (in field
order). Keeping the payload as opaque bytes lets a receiver check the header (version, cluster
id, recipient) before it pays for, or risks, decoding the body, and lets it answer an ask whose
body it cannot decode with an immediate error instead of a timeout. Nested registered messages
inside a payload travel as msgpack ext type 1 holding ``[tag, field...]``.

A *frame* (one ZeroMQ message) is a msgpack array of envelopes: the transport sends whatever
is queued for a peer in one frame, so batching is adaptive and costs no timer. The sender packs
each envelope once and the IO thread only prepends the array header; the receiver decodes a
frame with a single ``unpackb`` call.

Decoding never trusts the peer. Every field of an incoming message is checked against the
dataclass annotations (int, float, str, bytes, bool, None, unions, list, tuple, dict, nested
messages); anything else is a :class:`FrameError` whose ``reason`` is one of a small set of
counter names. The transport drops and counts such input; it never reaches an actor.
"""

from __future__ import annotations

import dataclasses
import operator
import threading
import types
import typing
from collections.abc import Callable
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
NESTED_EXT = 1

# Tags of the envelopes the runtime itself sends; user tags may not start with "coterie.".
REPLY_TAG = "coterie.reply"
FAILURE_TAG = "coterie.failure"
RESERVED_PREFIX = "coterie."


class FrameError(Exception):
    """Input from the network that must be dropped. `reason` is a stable counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class UnknownMessageType(FrameError):
    """A well-formed envelope whose tag no message class is registered under."""

    def __init__(self, tag: str) -> None:
        super().__init__("unknown_tag", f"no message type registered under {tag!r}")
        self.tag = tag


Checker = Callable[[Any], Any]


@dataclasses.dataclass(slots=True)
class MessageType:
    """What the codec knows about one registered message class."""

    tag: str
    cls: type
    field_names: tuple[str, ...]
    get_fields: Callable[[Any], tuple[Any, ...]]
    checkers: list[Checker] | None = None  # compiled lazily: annotations may name later classes

    def compile(self) -> list[Checker]:
        if self.checkers is None:
            hints = typing.get_type_hints(self.cls)
            self.checkers = [_checker_for(hints.get(name, Any)) for name in self.field_names]
        return self.checkers


_BY_TAG: dict[str, MessageType] = {}
_BY_CLASS: dict[type, MessageType] = {}


def message(tag: str, *, _internal: bool = False) -> Callable[[type], type]:
    """Class decorator: make `cls` a frozen, slotted dataclass sent on the wire as `tag`.

    Tags are stable identifiers ("raft.append_entries"); registering one tag twice for
    different classes is an error, since a peer could not tell them apart.
    """
    if not isinstance(tag, str) or not tag or len(tag) > 128:
        raise ValueError(f"a message tag is a non-empty string of at most 128 chars: {tag!r}")
    if tag.startswith(RESERVED_PREFIX) and not _internal:
        raise ValueError(f"tags starting with {RESERVED_PREFIX!r} are reserved: {tag!r}")

    def register(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            cls = dataclasses.dataclass(frozen=True, slots=True)(cls)
        existing = _BY_TAG.get(tag)
        if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"tag {tag!r} already registered for {existing.cls.__qualname__}")
        names = tuple(f.name for f in dataclasses.fields(cls))
        if len(names) == 0:
            getter: Callable[[Any], tuple[Any, ...]] = lambda _m: ()  # noqa: E731
        elif len(names) == 1:
            one = operator.attrgetter(names[0])
            getter = lambda m: (one(m),)  # noqa: E731
        else:
            getter = operator.attrgetter(*names)
        mtype = MessageType(tag, cls, names, getter)
        _BY_TAG[tag] = mtype
        _BY_CLASS[cls] = mtype
        cls.__coterie_tag__ = tag  # type: ignore[attr-defined]
        return cls

    return register


def message_type_of(obj: Any) -> MessageType:
    mtype = _BY_CLASS.get(type(obj))
    if mtype is None:
        raise TypeError(
            f"{type(obj).__qualname__} is not a registered message; decorate it with "
            "@actors.message('some.tag') to send it to another process"
        )
    return mtype


def lookup_tag(tag: str) -> MessageType:
    mtype = _BY_TAG.get(tag)
    if mtype is None:
        raise UnknownMessageType(tag)
    return mtype


# ---------------------------------------------------------------------------- field checking


def _fail(expected: str, value: Any) -> FrameError:
    return FrameError("bad_payload", f"expected {expected}, got {type(value).__name__}")


def _scalar(kind: type, name: str) -> Checker:
    def check(value: Any) -> Any:
        if type(value) is kind:
            return value
        raise _fail(name, value)

    return check


def _check_float(value: Any) -> Any:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise _fail("float", value)


def _check_int(value: Any) -> Any:
    if type(value) is int:
        return value
    raise _fail("int", value)


def _check_any(value: Any) -> Any:
    return value


def _check_none(value: Any) -> Any:
    if value is None:
        return value
    raise _fail("None", value)


def _checker_for(hint: Any) -> Checker:
    """Compile an annotation into a function that validates (and normalises) a decoded value."""
    if hint is Any or hint is object:
        return _check_any
    if hint is type(None) or hint is None:
        return _check_none
    if hint is int:
        return _check_int
    if hint is float:
        return _check_float
    if hint is bool:
        return _scalar(bool, "bool")
    if hint is str:
        return _scalar(str, "str")
    if hint is bytes:
        return _scalar(bytes, "bytes")
    if isinstance(hint, type) and hint in _BY_CLASS:
        cls = hint

        def check_nested(value: Any) -> Any:
            if type(value) is cls:
                return value
            raise _fail(cls.__qualname__, value)

        return check_nested
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_checker_for(arg) for arg in args]

        def check_union(value: Any) -> Any:
            for option in options:
                try:
                    return option(value)
                except FrameError:
                    continue
            raise _fail(str(hint), value)

        return check_union
    if origin is list and args:
        item = _checker_for(args[0])

        def check_list(value: Any) -> Any:
            if type(value) is not list:
                raise _fail("list", value)
            return [item(v) for v in value]

        return check_list
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _checker_for(args[0])

            def check_var_tuple(value: Any) -> Any:
                if type(value) not in (list, tuple):
                    raise _fail("tuple", value)
                return tuple(item(v) for v in value)

            return check_var_tuple
        items = [_checker_for(a) for a in args]

        def check_fixed_tuple(value: Any) -> Any:
            if type(value) not in (list, tuple) or len(value) != len(items):
                raise _fail(f"tuple of {len(items)}", value)
            return tuple(c(v) for c, v in zip(items, value, strict=True))

        return check_fixed_tuple
    if origin is dict and args:
        key_check, value_check = _checker_for(args[0]), _checker_for(args[1])

        def check_dict(value: Any) -> Any:
            if type(value) is not dict:
                raise _fail("dict", value)
            return {key_check(k): value_check(v) for k, v in value.items()}

        return check_dict
    if origin in (list, tuple, dict) or hint in (list, tuple, dict):
        container = origin or hint

        def check_container(value: Any) -> Any:
            if container is tuple and type(value) is list:
                return tuple(value)
            if type(value) is not container:
                raise _fail(container.__name__, value)
            return value

        return check_container
    # An annotation we do not model (a Protocol, a TypeVar...): accept, the actor must cope.
    return _check_any


# ---------------------------------------------------------------------------- encoding


def _default(obj: Any) -> Any:
    mtype = _BY_CLASS.get(type(obj))
    if mtype is not None:
        return msgpack.ExtType(
            NESTED_EXT, msgpack.packb([mtype.tag, *mtype.get_fields(obj)], default=_default)
        )
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot send a {type(obj).__qualname__} on the wire; register it as a message")


def _build(mtype: MessageType, fields: Any) -> Any:
    if type(fields) is not list:
        raise FrameError("bad_payload", f"{mtype.tag}: fields are not an array")
    checkers = mtype.compile()
    if len(fields) != len(checkers):
        raise FrameError(
            "bad_payload", f"{mtype.tag}: expected {len(checkers)} fields, got {len(fields)}"
        )
    try:
        return mtype.cls(*[check(v) for check, v in zip(checkers, fields, strict=True)])
    except FrameError:
        raise
    except Exception as exc:  # a __post_init__ of the message rejected the values
        raise FrameError("bad_payload", f"{mtype.tag}: {exc}") from exc


# Each nested message is decoded by a fresh unpackb that re-enters this hook, keeping a large
# unpack context on the C stack per level where Python's recursion limit cannot see it: a few
# KB of hostile nesting would overflow the stack and kill the process (found by fuzzing). No
# coterie message nests more than a couple of levels.
MAX_NESTING = 16
_nesting = threading.local()


def _ext_hook(code: int, data: bytes) -> Any:
    if code != NESTED_EXT:
        raise FrameError("bad_payload", f"unknown msgpack ext type {code}")
    depth = getattr(_nesting, "depth", 0)
    if depth >= MAX_NESTING:
        raise FrameError("bad_payload", f"messages nested deeper than {MAX_NESTING} levels")
    _nesting.depth = depth + 1
    try:
        inner = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    finally:
        _nesting.depth = depth
    if type(inner) is not list or not inner or type(inner[0]) is not str:
        raise FrameError("bad_payload", "nested message is not [tag, fields...]")
    return _build(lookup_tag(inner[0]), inner[1:])


def encode_payload(obj: Any) -> bytes:
    """The payload bytes of a registered message."""
    mtype = message_type_of(obj)
    return msgpack.packb(mtype.get_fields(obj), default=_default)


def encode_value(value: Any) -> bytes:
    """Payload bytes for an ask reply: any msgpack-able value or registered message."""
    return msgpack.packb([value], default=_default)


def decode_payload(mtype: MessageType, payload: bytes) -> Any:
    fields = _unpack(payload)
    return _build(mtype, fields)


def decode_value(payload: bytes) -> Any:
    value = _unpack(payload)
    if type(value) is not list or len(value) != 1:
        raise FrameError("bad_payload", "a reply payload is a one-element array")
    return value[0]


def _unpack(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except FrameError:
        raise
    except Exception as exc:
        raise FrameError("bad_payload", f"payload does not decode: {exc}") from exc


def encode_envelope(
    cluster_id: str, tag: str, sender: str, recipient: str, correlation: int, payload: bytes
) -> bytes:
    return msgpack.packb(
        [PROTOCOL_VERSION, cluster_id, tag, sender, recipient, correlation, payload]
    )


@dataclasses.dataclass(slots=True)
class Envelope:
    """A decoded envelope header; the payload is decoded by the receiver when it is wanted."""

    tag: str
    sender: str
    recipient: str
    correlation: int
    payload: bytes


def encode_frame(envelopes: list[bytes]) -> bytes:
    """A frame: the msgpack array header for `len(envelopes)`, then the packed envelopes.

    The envelopes are packed once, by the sending thread; the IO thread only joins bytes.
    """
    count = len(envelopes)
    if count < 16:
        header = bytes((0x90 | count,))
    elif count < 0x10000:
        header = b"\xdc" + count.to_bytes(2, "big")
    else:
        header = b"\xdd" + count.to_bytes(4, "big")
    return header + b"".join(envelopes)


def decode_frame(frame: bytes, cluster_id: str) -> tuple[list[Envelope], list[FrameError]]:
    """Split a frame into good envelopes and the errors of the bad ones.

    A frame that is not one whole msgpack array of arrays is rejected entirely (raises). Once
    the framing is sound, each envelope stands alone: a bad one is reported, its neighbours
    are still delivered.
    """
    try:
        items = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack's own errors: ExtraData, FormatError, StackError...
        raise FrameError("malformed", f"frame does not decode: {type(exc).__name__}") from exc
    if type(items) is not list:
        raise FrameError("malformed", "a frame is an array of envelopes")
    good: list[Envelope] = []
    bad: list[FrameError] = []
    for item in items:
        if type(item) is not list or len(item) != 7:
            bad.append(FrameError("malformed", "envelope is not a 7-element array"))
            continue
        version, cluster, tag, sender, recipient, correlation, payload = item
        if version != PROTOCOL_VERSION:
            bad.append(FrameError("bad_version", f"protocol version {version!r}"))
        elif cluster != cluster_id:
            bad.append(FrameError("wrong_cluster", f"cluster id {cluster!r}"))
        elif (
            type(tag) is not str
            or type(sender) is not str
            or type(recipient) is not str
            or type(correlation) is not int
            or type(payload) is not bytes
        ):
            bad.append(FrameError("malformed", "envelope header fields have the wrong types"))
        else:
            good.append(Envelope(tag, sender, recipient, correlation, payload))
    return good, bad
