"""The path grammar: one strict parser, errors that name the bad part."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import ActorPath, Address, InvalidActorPath


def test_full_path_round_trips() -> None:
    text = "coterie://node-1@10.0.0.5:7100/user/node/leader"
    path = ActorPath.parse(text)
    assert str(path) == text
    assert path.address == Address("node-1", "10.0.0.5", 7100)
    assert path.elements == ("user", "node", "leader")
    assert path.key == "/user/node/leader"
    assert path.name == "leader"
    assert path.parent == ActorPath.parse("coterie://node-1@10.0.0.5:7100/user/node")
    assert path.address.endpoint == "10.0.0.5:7100"


def test_local_and_ipv6_and_hostname_forms() -> None:
    assert str(ActorPath.parse("coterie://sys/user/a")) == "coterie://sys/user/a"
    assert ActorPath.parse("coterie://s@[::1]:9/user/a").address.endpoint == "[::1]:9"
    assert ActorPath.parse("coterie://s@Node-3.Example.com:80/system/x").address.host == (
        "node-3.example.com"
    )


def test_paths_compare_by_value_not_instance() -> None:
    a = ActorPath.parse("coterie://s@h:1/user/a")
    b = ActorPath.parse("coterie://s@h:1/user/a")
    assert a == b and hash(a) == hash(b) and a is not b


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("akka.tcp://s@h:1/user/a", "scheme 'akka.tcp'"),
        ("coterie:/s@h:1/user/a", "scheme"),
        ("coterie://@h:1/user/a", "system name ''"),
        ("coterie://s p@h:1/user/a", "system name 's p'"),
        ("coterie://s@h/user/a", "address 'h'"),
        ("coterie://s@h:0/user/a", "port '0'"),
        ("coterie://s@h:70000/user/a", "port '70000'"),
        ("coterie://s@h:7x/user/a", "port '7x'"),
        ("coterie://s@:7/user/a", "host"),
        ("coterie://s@300.1.1.1:7/user/a", "host '300.1.1.1'"),
        ("coterie://s@bad_host:7/user/a", "host 'bad_host'"),
        ("coterie://s@[zz]:7/user/a", "host '[zz]'"),
        ("coterie://s@h:7", "path"),
        ("coterie://s@h:7/users/a", "guardian 'users'"),
        ("coterie://s@h:7/user//a", "element 1"),
        ("coterie://s@h:7/user/a/", "element 2"),
        ("coterie://s@h:7/user/..", "element '..'"),
        ("coterie://s@h:7/user/a b", "element 'a b'"),
    ],
)
def test_bad_paths_name_the_bad_part(text: str, part: str) -> None:
    with pytest.raises(InvalidActorPath) as info:
        ActorPath.parse(text)
    assert info.value.part.startswith(part), info.value.part
    assert part.split(" ", maxsplit=1)[0] in str(info.value)
    assert repr(text) in str(info.value)


def test_non_string_is_rejected_clearly() -> None:
    with pytest.raises(InvalidActorPath, match="expected str"):
        ActorPath.parse(42)  # type: ignore[arg-type]


def test_child_names_are_checked() -> None:
    root = ActorPath.parse("coterie://s/user")
    assert root.child("ok-name_1").key == "/user/ok-name_1"
    with pytest.raises(InvalidActorPath, match="actor name"):
        root.child("no/slash")


names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.~$-]{0,20}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)


@given(
    system=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True),
    port=st.integers(1, 65535),
    octets=st.tuples(*[st.integers(0, 255)] * 4),
    guardian=st.sampled_from(["user", "system", "temp"]),
    elements=st.lists(names, max_size=5),
)
def test_format_then_parse_is_identity(system, port, octets, guardian, elements) -> None:
    host = ".".join(map(str, octets))
    path = ActorPath(Address(system, host, port), (guardian, *elements))
    assert ActorPath.parse(str(path)) == path


@given(st.text(max_size=60))
def test_parser_never_fails_with_anything_but_invalid_path(text: str) -> None:
    with contextlib.suppress(InvalidActorPath):
        ActorPath.parse(text)
