"""Jepsen-style evidence for coterie: record what clients saw, then check it.

The public face::

    from coterie.jepsen import Recorder, check, Register, Counter

    recorder = Recorder(processes=4)
    call = recorder.invoke(0, "write", "k1", 3)
    ...                                        # send the request
    recorder.complete(call, "ok")              # or "fail" (surely no effect) / "info" (unknown)
    result = check(recorder.events(), Register())
    assert result.valid, result.explain()

``python -m coterie.jepsen check HISTORY.jsonl --model register`` checks a saved history.
"""

from coterie.jepsen.checker import CheckResult, KeyResult, check, check_key
from coterie.jepsen.history import (
    Event,
    HistoryError,
    Operation,
    Recorder,
    load,
    operations,
    save,
    summary,
)
from coterie.jepsen.models import Counter, Model, ModelError, Register

__all__ = [
    "CheckResult",
    "Counter",
    "Event",
    "HistoryError",
    "KeyResult",
    "Model",
    "ModelError",
    "Operation",
    "Recorder",
    "Register",
    "check",
    "check_key",
    "load",
    "operations",
    "save",
    "summary",
]
