"""Actors in one process: behaviours, stash, supervision, stop, asks and their errors, threads."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from actor_test_messages import Echo
from structlog.testing import capture_logs

from actors import (
    UNHANDLED,
    Actor,
    ActorFailed,
    ActorNameTaken,
    ActorNotFound,
    ActorRef,
    ActorSystem,
    AskTimeout,
    Directive,
    OneForOne,
    Props,
    UnhandledMessage,
)


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


class Switch(Actor):
    """An explicit two-state FSM built on become/unbecome."""

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        return self.off(message, sender)

    def off(self, message: Any, sender: ActorRef | None) -> Any:
        if message == "flip":
            self.ctx.become(self.on)
            return "now on"
        if message == "state":
            return ("off", self.ctx.behaviour_name)
        if message == "push":
            self.ctx.become(self.pushed, discard_old=False)
            return "pushed"
        return UNHANDLED

    def on(self, message: Any, sender: ActorRef | None) -> Any:
        if message == "flip":
            self.ctx.become(self.off)
            return "now off"
        if message == "state":
            return ("on", self.ctx.behaviour_name)
        return UNHANDLED

    def pushed(self, message: Any, sender: ActorRef | None) -> Any:
        if message == "pop":
            self.ctx.unbecome()
            return "popped"
        if message == "state":
            return ("pushed", self.ctx.behaviour_name)
        return UNHANDLED


def test_become_switches_handler_and_name_is_visible(system: ActorSystem) -> None:
    ref = system.spawn(Switch, "switch")
    assert ref.ask("state").result() == ("off", "receive")
    assert ref.ask("flip").result() == "now on"
    assert ref.ask("state").result() == ("on", "on")
    assert ref.ask("flip").result() == "now off"
    assert ref.ask("state").result() == ("off", "off")
    assert ref.ask("push").result() == "pushed"
    assert ref.ask("state").result() == ("pushed", "pushed")
    assert ref.ask("pop").result() == "popped"
    assert ref.ask("state").result() == ("off", "off")


def test_unhandled_ask_fails_fast_naming_type_and_behaviour(system: ActorSystem) -> None:
    ref = system.spawn(Switch, "switch")
    ref.ask("flip").result()
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(UnhandledMessage) as info:
        ref.ask(12345, timeout=30).result()
    assert time.monotonic() - started < 1.0, "must not wait for the ask timeout"
    assert "int" in str(info.value) and "behaviour on" in str(info.value)
    assert info.value.target.endswith("/user/switch")
    line = next(e for e in logs if e["event"] == "unhandled message")
    assert line["message_type"] == "int" and line["behaviour"] == "on"
    assert line["actor"].endswith("/user/switch")


def test_ask_to_missing_path_fails_fast(system: ActorSystem) -> None:
    ref = system.ref(system.path_of("nobody"))
    started = time.monotonic()
    with pytest.raises(ActorNotFound, match="nobody"):
        ref.ask("hello", timeout=30).result()
    assert time.monotonic() - started < 1.0
    assert system.stats()["dead_letters"] == 1


def test_ask_timeout_names_target_and_message_type(system: ActorSystem) -> None:
    class Silent(Actor):
        def receive(self, message: Any, sender: ActorRef | None) -> Any:
            self.ctx.deferred_reply()  # and never answer

    ref = system.spawn(Silent, "silent")
    with pytest.raises(AskTimeout) as info:
        ref.ask(3.5, timeout=0.2).result()
    assert info.value.target == ref.path.text and info.value.message_type == "float"
    assert "no reply within 0.2s" in str(info.value)


class Stasher(Actor):
    """Stashes work until 'open', like a role switch that must not drop messages."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if message == "open":
            self.ctx.become(self.opened)
            self.ctx.unstash_all()
            return None
        if message == "seen":
            return list(self.seen)
        self.ctx.stash()
        return None

    def opened(self, message: Any, sender: ActorRef | None) -> Any:
        if message == "seen":
            return list(self.seen)
        self.seen.append(message)
        return None


def test_stashed_messages_are_handled_in_order_before_newer_ones(system: ActorSystem) -> None:
    ref = system.spawn(Stasher, "stasher")
    for i in range(5):
        ref.tell(i)
    ref.tell("open")
    ref.tell(5)
    assert ref.ask("seen").result() == [0, 1, 2, 3, 4, 5]


class AskStasher(Actor):
    """Stashes asks until 'open', then answers each with its doubled value."""

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if message == "open":
            self.ctx.become(self.opened)
            self.ctx.unstash_all()
            return "opened"
        self.ctx.stash()
        return None  # must not become the stashed ask's answer

    def opened(self, message: Any, sender: ActorRef | None) -> Any:
        return message * 2


def test_a_stashed_ask_is_answered_by_its_later_handling(system: ActorSystem) -> None:
    # Regression: the behaviour's return value while stashing (None) used to answer the ask.
    ref = system.spawn(AskStasher, "ask-stasher")
    futures = [ref.ask(i) for i in range(1, 4)]
    time.sleep(0.1)
    assert not any(f.done() for f in futures)
    assert ref.ask("open").result(timeout=5) == "opened"
    assert [f.result(timeout=5) for f in futures] == [2, 4, 6]


class Fragile(Actor):
    starts = 0

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.count = 0

    def pre_start(self) -> None:
        Fragile.starts += 1
        self.log.append("start")

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if message == "crash":
            raise RuntimeError("crash requested")
        if message == "count":
            self.count += 1
            return self.count
        if message == "thread":
            return threading.current_thread().name
        return UNHANDLED


def test_supervision_restarts_a_crashing_child_with_same_path(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(Props(Fragile, log), "fragile")
    assert ref.ask("count").result() == 1
    with capture_logs() as logs:
        with pytest.raises(ActorFailed, match="crash requested"):
            ref.ask("crash").result()
        # The ref taken before the restart reaches the new instance, whose state is fresh.
        assert ref.ask("count").result() == 1
    assert log == ["start", "start"]
    failure = next(e for e in logs if e["event"] == "actor failed")
    assert failure["actor"] == ref.path.text and "exc_info" in failure
    assert any(e["event"] == "restarting" for e in logs)
    assert system.stats()["actor_restarts"] == 1


def test_messages_sent_while_suspended_reach_the_new_instance(system: ActorSystem) -> None:
    ref = system.spawn(Props(Fragile, []), "fragile")
    ref.tell("crash")
    for _ in range(10):
        ref.tell("count")
    assert ref.ask("count").result() == 11


class Parent(Actor):
    def __init__(self, budget: int) -> None:
        self.budget = budget

    def supervisor_strategy(self) -> OneForOne:
        return OneForOne(max_restarts=self.budget, within_seconds=60.0)

    def pre_start(self) -> None:
        self.ctx.spawn(Props(Fragile, []), "child")

    def receive(self, message: Any, sender: ActorRef | None) -> Any:
        if message == "children":
            return sorted(self.ctx.children)
        return UNHANDLED


def test_escalation_after_restart_limit_stops_child_and_fails_parent(system: ActorSystem) -> None:
    parent = system.spawn(Props(Parent, 2), "parent")
    child = system.ref(parent.path.child("child"))
    wait_until(lambda: system.is_alive(child))  # spawned by the parent's pre_start
    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(ActorFailed):
                child.ask("crash").result()
        # The third failure exceeds the budget: the child is stopped and the parent fails,
        # and the guardian restarts the parent, which spawns a fresh child.
        wait_until(
            lambda: any(e["event"] == "restarting" and e["actor"] == parent.path.text for e in logs)
        )
    directives = [e["directive"] for e in logs if e["event"] == "supervising child failure"]
    assert directives[:3] == ["restart", "restart", "escalate"]
    parent_failure = next(
        e for e in logs if e["event"] == "actor failed" and e["actor"] == parent.path.text
    )
    assert "failed too often" in parent_failure["error"]
    wait_until(lambda: system.is_alive(child))
    assert parent.ask("children").result() == ["child"]
    assert child.ask("count").result() == 1


def test_stop_decider_stops_the_child(system: ActorSystem) -> None:
    class StopOnError(Parent):
        def supervisor_strategy(self) -> OneForOne:
            return OneForOne(decider=lambda _exc: Directive.STOP)

    parent = system.spawn(Props(StopOnError, 1), "parent")
    child = system.ref(parent.path.child("child"))
    wait_until(lambda: system.is_alive(child))
    child.tell("crash")
    wait_until(lambda: not system.is_alive(child))
    assert parent.ask("children").result() == []


def test_stop_stops_children_first_and_fails_queued_asks(system: ActorSystem) -> None:
    order: list[str] = []

    class Node(Actor):
        def __init__(self, name: str, depth: int) -> None:
            self.name, self.depth = name, depth

        def pre_start(self) -> None:
            if self.depth:
                self.ctx.spawn(Props(Node, f"{self.name}.c", self.depth - 1), "c")

        def post_stop(self) -> None:
            order.append(self.name)

    top = system.spawn(Props(Node, "top", 2), "top")
    grandchild = system.ref(top.path.child("c").child("c"))
    wait_until(lambda: system.is_alive(grandchild))
    assert system.stop(top)
    assert order == ["top.c.c", "top.c", "top"]
    assert not system.is_alive(grandchild) and not system.is_alive(top)
    with pytest.raises(ActorNotFound):
        top.ask("x").result()


def test_duplicate_names_are_refused(system: ActorSystem) -> None:
    system.spawn(Switch, "same")
    with pytest.raises(ActorNameTaken, match="same"):
        system.spawn(Switch, "same")


def test_future_callbacks_run_on_the_callback_thread(system: ActorSystem) -> None:
    ref = system.spawn(Props(Fragile, []), "fragile")
    ran_on: list[str] = []
    done = threading.Event()
    future = ref.ask("thread")
    future.add_done_callback(
        lambda _f: (ran_on.append(threading.current_thread().name), done.set())
    )
    assert done.wait(5)
    assert future.result() == "actor:/user/fragile"
    assert ran_on == ["coterie-callbacks"]


def test_ctx_ask_continuation_runs_on_the_asking_actors_thread(system: ActorSystem) -> None:
    target = system.spawn(Props(Fragile, []), "target")

    class Asker(Actor):
        def __init__(self) -> None:
            self.result: Any = None

        def receive(self, message: Any, sender: ActorRef | None) -> Any:
            if message == "go":
                self.ctx.ask(target, "thread", 5.0, then=self.got)
                return None
            if message == "result":
                return self.result
            return UNHANDLED

        def got(self, value: Any, error: BaseException | None) -> None:
            self.result = (value, error, threading.current_thread().name)

    asker = system.spawn(Asker, "asker")
    asker.tell("go")
    wait_until(lambda: asker.ask("result").result() is not None)
    assert asker.ask("result").result() == ("actor:/user/target", None, "actor:/user/asker")


def test_tell_from_an_actor_carries_it_as_sender(system: ActorSystem) -> None:
    class Reporter(Actor):
        def receive(self, message: Any, sender: ActorRef | None) -> Any:
            if message == "who":
                return None if sender is None else sender.path.key
            # A plain tell: answer the implicit sender with a tell of our own.
            if sender is not None:
                sender.tell(("you are", sender.path.key))
            return None

    class Forwarder(Actor):
        def __init__(self) -> None:
            self.seen: list[Any] = []

        def receive(self, message: Any, sender: ActorRef | None) -> Any:
            reporter = self.ctx.system.ref(self.ctx.system.path_of("reporter"))
            if message == "go":
                reporter.tell("ping")  # no explicit sender
                self.ctx.ask(reporter, "who", 5.0, then=lambda v, e: self.seen.append(v))
                return None
            if message == "seen":
                return list(self.seen)
            self.seen.append(message)
            return None

    reporter = system.spawn(Reporter, "reporter")
    fwd = system.spawn(Forwarder, "forwarder")
    assert reporter.ask("who").result() is None  # from a plain thread: no sender
    fwd.tell("go")
    wait_until(lambda: len(fwd.ask("seen").result()) == 2)
    assert sorted(map(str, fwd.ask("seen").result())) == sorted(
        ["('you are', '/user/forwarder')", "/user/forwarder"]
    )


def test_failure_in_pre_start_is_supervised(system: ActorSystem) -> None:
    attempts: list[int] = []

    class BadStart(Actor):
        def pre_start(self) -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise OSError("resource not ready")

        def receive(self, message: Any, sender: ActorRef | None) -> Any:
            return "ready"

    ref = system.spawn(BadStart, "bad-start")
    assert ref.ask("hi").result() == "ready"
    assert len(attempts) == 3


def test_shutdown_leaves_no_threads(no_thread_leak: None) -> None:
    system = ActorSystem("leak-check", host="127.0.0.1")
    parent = system.spawn(Props(Parent, 3), "parent")
    assert parent.ask("children").result() == ["child"]
    remote = ActorSystem("other", host="127.0.0.1")

    class Echoer(Actor):
        def receive(self, message: Any, sender: ActorRef | None) -> Any:
            return message

    echo = remote.spawn(Echoer, "echo")
    assert system.ref(echo.path).ask(Echo(b"hi")).result() == Echo(b"hi")
    done = threading.Event()
    system.ref(echo.path).ask(Echo(b"x")).add_done_callback(lambda _f: done.set())
    assert done.wait(5)
    remote.shutdown()
    system.shutdown()


def test_after_shutdown_asks_fail_at_once() -> None:
    system = ActorSystem("gone")
    ref = system.spawn(Switch, "switch")
    system.shutdown()
    with pytest.raises(Exception, match=r"shut down|no actor"):
        ref.ask("state", timeout=30).result(timeout=1)
