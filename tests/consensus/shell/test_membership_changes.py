"""The shell's membership pieces on a real core: requests become core changes (or are refused
naming the bad field), answers reach the asker when the entry is applied, configuration
entries carry every member's address, the address book follows them, a removed node knows
when its removal is applied (and a joining node is never taken for removed), and the leader
tells a removed server that its removal committed."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from consensus.configuration import (
    AddLearner,
    Membership,
    PromoteLearner,
    RemoveServer,
    apply_change,
)
from consensus.log import MemoryLog
from consensus.messages import AppendEntries, ClientResponse, Entry, EntryKind
from consensus.shell import membership_changes as changes
from consensus.shell.book import Book, Waiter
from consensus.shell.protocol import (
    ChangeMembership,
    ClientBatch,
    ClientBatchResponse,
    MembershipChangeResponse,
    NodeStatus,
    QueryResponse,
    StatusRequest,
)
from consensus.shell.wiring import SteadyClock, Wiring
from coterie.cli import main
from coterie.config import load
from tests.consensus.raft_helpers import (
    LATE,
    VOTERS3,
    append_from,
    follower_ack,
    make_leader,
    make_node,
    of,
    persist,
)


class Answers:
    """A reply handle that records what it was given (the role actor's ``Reply``)."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    def success(self, value: Any) -> None:
        self.got.append(value)

    def failure(self, exc: BaseException) -> None:
        self.got.append(exc)


class Refs:
    """The one thing follow_membership asks of an actor system: a ref for a path."""

    def ref(self, path: str) -> str:
        return f"ref:{path}"


def wiring(node_id: str = "n1", addresses: dict[str, str] | None = None) -> Wiring:
    return Wiring(
        node_id=node_id,
        supervisor=None,  # type: ignore[arg-type]
        writer=None,  # type: ignore[arg-type]
        state_machine=None,  # type: ignore[arg-type]
        peers={},
        addresses=dict(addresses or {"n1": "h:1", "n2": "h:2", "n3": "h:3"}),
        clock=SteadyClock(),
    )


def committed_leader(**config: Any):  # type: ignore[no-untyped-def]
    leader, log, _ = make_leader(**config)
    for peer in leader.config.peers:
        follower_ack(leader, peer, 1, LATE)
    return leader, log


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ChangeMembership("r", "add_voter", "n4", "h:4"), "kind: 'add_voter'"),
        (ChangeMembership("r", "add_learner", "n 4", "h:4"), "node_id: 'n 4'"),
        (ChangeMembership("r", "add_learner", "n4", "h"), "address: 'h' is not host:port"),
        (ChangeMembership("r", "add_learner", "n4", "h:70000"), "address: 'h:70000'"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(request_: ChangeMembership, field: str) -> None:
    leader, _ = committed_leader()
    book, reply = Book(leader), Answers()
    assert changes.request_change(book, wiring(), request_, reply, LATE) is None  # type: ignore[arg-type]
    (answer,) = reply.got
    assert isinstance(answer, MembershipChangeResponse)
    assert not answer.ok and answer.error == "bad_request" and field in answer.detail
    assert book.changes == {}


def test_an_add_carries_every_members_address_and_is_answered_when_applied() -> None:
    leader, log = committed_leader(auto_promote=False)
    book, reply, w = Book(leader), Answers(), wiring()
    # "e1" is also the book's id of its first entry: the two must never be confused.
    request = ChangeMembership("e1", "add_learner", "n4", "h:4")
    ready = changes.request_change(book, w, request, reply, LATE)  # type: ignore[arg-type]
    assert ready is not None and ready.membership is not None
    assert ready.membership.addresses == (
        ("n1", "h:1"),
        ("n2", "h:2"),
        ("n3", "h:3"),
        ("n4", "h:4"),
    )
    # The same request id again, while the first waits: refused, the first still waits.
    again = changes.request_change(book, w, request, reply, LATE)  # type: ignore[arg-type]
    assert again is None and reply.got[-1].error == "duplicate_request"
    reply.got.clear()
    (entry,) = ready.entries
    persist(leader, ready, log, LATE)
    ready = follower_ack(leader, "n2", entry.index, LATE)
    assert leader.commit_index == entry.index
    ready = leader.applied(entry.index, {}, LATE)
    for response in ready.results:
        assert changes.answer_change(book, w, response)
    (answer,) = reply.got
    assert answer.ok and answer.index == entry.index and answer.learners == ("n4",)
    assert answer.request_id == "e1"
    assert not changes.answer_change(book, w, ClientResponse("e1", True, 1, None, None, None))


def test_a_follower_refuses_with_the_leaders_address() -> None:
    follower = make_node("n2")
    follower.step(append_from("n1", 1, 0, 0, []), LATE)
    book, reply, w = Book(follower), Answers(), wiring("n2")
    ready = changes.request_change(book, w, ChangeMembership("r", "remove", "n3"), reply, LATE)  # type: ignore[arg-type]
    assert ready is not None
    for response in ready.results:
        changes.answer_change(book, w, response)
    (answer,) = reply.got
    assert answer.error == "not_leader" and answer.leader_hint == "h:1"


def test_member_addresses_fill_only_what_is_missing() -> None:
    current = Membership(VOTERS3, (), (("n2", "old:2"),))
    new = apply_change(
        current, AddLearner("n4", "h:4", (("n1", "h:1"), ("n2", "h:2"), ("x", "h:9")))
    )
    assert new.addresses == (("n1", "h:1"), ("n2", "old:2"), ("n4", "h:4"))
    assert Membership.decode(new.encode()) == new
    assert apply_change(new, PromoteLearner("n4")).addresses == new.addresses
    assert apply_change(new, RemoveServer("n1")).address_of("n1") is None


def test_the_address_book_follows_the_configuration() -> None:
    w = wiring("n4", {"n4": "h:4"})
    membership = Membership(VOTERS3, ("n4",), (("n1", "h:1"), ("n2", "h:2"), ("n4", "h:4")))
    assert changes.follow_membership(w, Refs(), membership) == ["n1", "n2"]  # type: ignore[arg-type]
    assert w.peers["n1"] == "ref:coterie://n1@h:1/user/node"
    assert w.address_of("n2") == "h:2" and "n4" not in w.peers
    assert changes.follow_membership(w, Refs(), membership) == []  # type: ignore[arg-type]
    # A peer with no address yet is reachable through the ref its messages came from.
    assert changes.learn_sender(w, append_from("n3", 1, 0, 0, []), "sender-ref")  # type: ignore[arg-type]
    assert w.peers["n3"] == "sender-ref"
    assert not changes.learn_sender(w, append_from("n1", 1, 0, 0, []), "other")  # type: ignore[arg-type]
    assert not changes.learn_sender(w, StatusRequest(), "other")  # type: ignore[arg-type]


def test_a_joining_node_is_not_taken_for_removed() -> None:
    joiner = make_node("n4", VOTERS3)
    watch = changes.RemovalWatch(joiner)
    assert not watch.seen_member
    joiner.step(append_from("n1", 1, 0, 0, [], commit=0), LATE)
    assert not watch.removed(joiner)


def test_a_removed_server_learns_the_commit_and_knows_it_is_removed() -> None:
    leader, log = committed_leader()
    removed = make_node("n3", VOTERS3)
    watch = changes.RemovalWatch(removed)
    assert watch.seen_member
    ready = leader.change_membership("m", RemoveServer("n3"), LATE)
    (entry,) = ready.entries
    persist(leader, ready, log, LATE)
    # n3 gets the log up to and including its removal, but not yet the commit.
    removed.step(
        append_from(
            "n1", leader.term, 0, 0, list(log.entries(1, entry.index + 1, 1 << 30)), commit=1
        ),
        LATE,
    )
    watch.saw(removed.membership)
    assert "n3" not in removed.membership.members and not watch.removed(removed)
    # n2 acknowledges: the removal commits and the leader sends n3 a parting AppendEntries.
    ready = follower_ack(leader, "n2", entry.index, LATE)
    (parting,) = of(ready, AppendEntries, "n3")
    assert parting.leader_commit >= entry.index
    assert "n3" not in leader.role.progress  # type: ignore[union-attr]
    removed.step(parting, LATE)
    assert removed.commit_index >= entry.index
    assert not watch.removed(removed)  # committed, not yet applied
    removed.applied(entry.index, {}, LATE)
    assert watch.removed(removed)
    assert not watch.removed(removed)  # said once


def test_a_removed_node_answers_and_releases_its_waiters() -> None:
    leader, _ = committed_leader()
    status = NodeStatus("n1", "leader", "p", 3, "h:1", 1, 9, 9, 9, VOTERS3, (), (("n2", 9),))
    gone = changes.removed_status(status)
    assert gone.role == "removed" and gone.leader is None and gone.matches == ()
    assert gone.last_index == 9 and gone.voters == VOTERS3
    assert changes.answer_removed(StatusRequest(), gone) is gone
    refused = changes.answer_removed(ClientBatch([b"x"]), gone)
    assert isinstance(refused, ClientBatchResponse) and refused.error == "not_leader"
    assert changes.answer_removed(object(), gone) is None
    book = Book(leader)
    batch, read, change = Answers(), Answers(), Answers()
    book.proposals.append(Waiter(batch, [b"a", b"b"]))  # type: ignore[arg-type]
    book.reads["q"] = (read, b"")  # type: ignore[assignment]
    book.changes["m:c"] = change  # type: ignore[assignment]
    assert changes.release_waiters(book) == 3
    assert batch.got[0].error == "not_leader"
    assert isinstance(read.got[0], QueryResponse) and read.got[0].error == "not_leader"
    assert change.got[0].error == "not_leader" and change.got[0].request_id == "c"
    assert not (book.proposals or book.reads or book.changes)


GOOD = """
cluster_id = "c"
state_machine = "examples.counter:Counter"
[security]
curve = false
[[nodes]]
id = "n1"
address = "127.0.0.1:7101"
data_dir = "d1"
[[nodes]]
id = "n2"
address = "127.0.0.1:7102"
data_dir = "d2"
join = true
"""


def test_join_marks_a_node_outside_the_first_configuration(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    config = load(path)
    assert config.settings_for("n1").raft.voters == ("n1",)
    joiner = config.settings_for("n2")
    assert joiner.joining and joiner.raft.voters == ("n1",) and joiner.address == "127.0.0.1:7102"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("join = true", 'join = "yes"'), "nodes[1].join: must be true or false"),
        (
            GOOD.replace('data_dir = "d1"', 'data_dir = "d1"\njoin = true'),
            "nodes: every node has join = true",
        ),
    ],
)
def test_a_bad_join_names_the_key(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert main(["node", "--config", str(path), "--id", "n1"]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path) in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["add", "n 4", "127.0.0.1:7104"], "NODE_ID 'n 4'"),
        (["add", "n4", "127.0.0.1"], "ADDRESS '127.0.0.1': not host:port"),
        (["add", "n4", "127.0.0.1:0"], "port must be between 1 and 65535"),
        (["add", "n4"], "ADDRESS is required unless --config lists the node"),
        (["remove", "n/x"], "NODE_ID 'n/x'"),
    ],
)
def test_nodetool_membership_argument_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert main(["nodetool", "--node", "127.0.0.1:1", "--timeout", "0.2", *args]) == 2
    assert expected in capsys.readouterr().err


def test_nodetool_add_of_a_node_the_config_does_not_list(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    assert main(["nodetool", "--config", str(path), "--timeout", "0.2", "add", "n9"]) == 2
    assert "no node with id 'n9'" in capsys.readouterr().err


def test_at_start_up_the_address_book_takes_the_logs_configuration() -> None:
    membership = Membership(("n1", "n2", "n6"), (), (("n1", "h:1"), ("n6", "h:6")))
    log = MemoryLog()
    log.append([Entry(1, 1, int(EntryKind.CONFIGURATION), 0, membership.encode())])
    node = make_node("n1", VOTERS3, log=log)
    w = wiring()
    watch = changes.start(node, w, Refs())  # type: ignore[arg-type]
    assert w.peers["n6"] == "ref:coterie://n6@h:6/user/node" and w.address_of("n6") == "h:6"
    assert watch.seen_member and not watch.removed(node)
