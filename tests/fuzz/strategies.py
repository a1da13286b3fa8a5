"""Hypothesis strategies for coterie's wire: instances of every registered message type
built from their annotations (with hostile edge values), envelopes, frames, and byte
mutations of valid encodings."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import msgpack
from hypothesis import strategies as st

import consensus.configuration
import consensus.messages
import consensus.shell.protocol
import membership.messages
import membership.rapid.messages
import wal.writer_messages
from actors import wire

# The modules are imported for their registrations; keep the names used.
REGISTERING_MODULES = (
    consensus.configuration,
    consensus.messages,
    consensus.shell.protocol,
    membership.messages,
    membership.rapid.messages,
    wal.writer_messages,
)

EDGE_INTS = [0, 1, -1, 2**31 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(2**63), 2**64 - 1))

# msgpack-able values that survive a round trip unchanged (lists, not tuples; no NaN).
plain = st.recursive(
    st.none()
    | st.booleans()
    | ints
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=24),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


def registered_types() -> list[wire.MessageType]:
    """Every message type the node processes know, the runtime's own included."""
    return sorted(
        (m for m in wire._BY_TAG.values() if not m.tag.startswith("test.")),
        key=lambda m: m.tag,
    )


def for_hint(hint: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of the annotated type (what a well-typed, possibly hostile, peer sends)."""
    if hint is Any or hint is object:
        return plain
    if hint is type(None) or hint is None:
        return st.none()
    if hint is bool:
        return st.booleans()
    if hint is int:
        return ints
    if hint is float:
        return st.floats(allow_nan=False)
    if hint is str:
        return st.text(max_size=24) | st.sampled_from(["n1", "n2", "n3", ""])
    if hint is bytes:
        return st.binary(max_size=48)
    if isinstance(hint, type) and hint in wire._BY_CLASS:
        return instances(wire._BY_CLASS[hint], depth + 1)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[for_hint(arg, depth) for arg in args])
    if origin is list and args:
        return st.lists(for_hint(args[0], depth), max_size=3 if depth < 2 else 0)
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(for_hint(args[0], depth), max_size=3).map(tuple)
        return st.tuples(*[for_hint(a, depth) for a in args])
    if origin is dict and args:
        return st.dictionaries(for_hint(args[0], depth), for_hint(args[1], depth), max_size=3)
    if hint in (list, tuple, dict):
        return st.builds(hint)
    return st.none()


def instances(mtype: wire.MessageType, depth: int = 0) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(mtype.cls)
    fields = [for_hint(hints.get(f.name, Any), depth) for f in dataclasses.fields(mtype.cls)]

    def build(values: tuple[Any, ...]) -> Any:
        try:
            return mtype.cls(*values)
        except Exception:  # a __post_init__ refused the values: not a message anyone sends
            return None

    return st.tuples(*fields).map(build).filter(lambda m: m is not None)


any_message = st.sampled_from(registered_types()).flatmap(instances)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte flips, a cut, an insertion or a duplicated slice."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "set"]))
        if not out:
            out += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "repeat":
            out[at:at] = out[at : at + draw(st.integers(1, 16))]
        else:
            out[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xDC, 0xDD, 0xFF]))
    return bytes(out)


def envelope_bytes(message: Any, cluster_id: str, recipient: str, correlation: int = 0) -> bytes:
    mtype = wire.message_type_of(message)
    return wire.encode_envelope(
        cluster_id,
        mtype.tag,
        "coterie://fuzzer@10.0.0.1:1/user/fuzz",
        recipient,
        correlation,
        wire.encode_payload(message),
    )


def packb(value: Any) -> bytes:
    return msgpack.packb(value)
