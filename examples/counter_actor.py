"""A counter actor: the smallest useful coterie actor, used by the two-process demo.

It shows the actor API: registered wire messages, behaviours switched with `become`
(`counting` <-> `paused`), an unhandled message, and a crash that its supervisor repairs.
"""

from __future__ import annotations

from typing import Any

from actors import UNHANDLED, Actor, ActorRef, message


@message("counter.add")
class Add:
    n: int


@message("counter.get")
class Get:
    pass


@message("counter.pause")
class Pause:
    pass


@message("counter.resume")
class Resume:
    pass


@message("counter.crash")
class Crash:
    pass


@message("counter.value")
class Value:
    value: int
    behaviour: str


class Counter(Actor):
    def __init__(self) -> None:
        self.value = 0

    def pre_start(self) -> None:
        self.ctx.become(self.counting)  # name the initial state explicitly
        self.ctx.log.info("counter started", value=self.value)

    def counting(self, message: Any, sender: ActorRef | None) -> Any:
        match message:
            case Add(n):
                self.value += n
                return Value(self.value, self.ctx.behaviour_name)
            case Pause():
                self.ctx.become(self.paused)
                return Value(self.value, self.ctx.behaviour_name)
        return self.common(message)

    def paused(self, message: Any, sender: ActorRef | None) -> Any:
        match message:
            case Resume():
                self.ctx.become(self.counting)
                return Value(self.value, self.ctx.behaviour_name)
        return self.common(message)

    def common(self, message: Any) -> Any:
        match message:
            case Get():
                return Value(self.value, self.ctx.behaviour_name)
            case Crash():
                raise RuntimeError("crash requested by the demo")
        return UNHANDLED
