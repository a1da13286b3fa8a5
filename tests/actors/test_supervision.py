"""The sans-IO supervision strategy: restart budget, escalation, deciders."""

from __future__ import annotations

from actors import Directive, OneForOne


def test_restarts_within_budget_then_escalates() -> None:
    strategy = OneForOne(max_restarts=3, within_seconds=10.0)
    err = RuntimeError("x")
    assert [strategy.decide("c", err, t) for t in (0.0, 1.0, 2.0)] == [Directive.RESTART] * 3
    assert strategy.decide("c", err, 3.0) is Directive.ESCALATE


def test_old_restarts_leave_the_window() -> None:
    strategy = OneForOne(max_restarts=2, within_seconds=5.0)
    err = RuntimeError("x")
    assert strategy.decide("c", err, 0.0) is Directive.RESTART
    assert strategy.decide("c", err, 1.0) is Directive.RESTART
    assert strategy.decide("c", err, 5.5) is Directive.RESTART  # the one at 0.0 has expired
    assert strategy.decide("c", err, 5.8) is Directive.ESCALATE  # 1.0 and 5.5 are in the window


def test_budget_is_per_child_and_forgotten_when_the_child_goes() -> None:
    strategy = OneForOne(max_restarts=1, within_seconds=10.0)
    err = RuntimeError("x")
    assert strategy.decide("a", err, 0.0) is Directive.RESTART
    assert strategy.decide("b", err, 0.0) is Directive.RESTART
    strategy.forget("a")
    assert strategy.decide("a", err, 1.0) is Directive.RESTART
    assert strategy.decide("b", err, 1.0) is Directive.ESCALATE


def test_decider_chooses_per_exception() -> None:
    def decider(exc: BaseException) -> Directive:
        return Directive.RESUME if isinstance(exc, ValueError) else Directive.STOP

    strategy = OneForOne(decider=decider)
    assert strategy.decide("c", ValueError(), 0.0) is Directive.RESUME
    assert strategy.decide("c", KeyError(), 0.0) is Directive.STOP
