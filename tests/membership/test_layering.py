"""The membership protocol modules are sans-IO: no sockets, threads, clocks or chance of their
own (architecture.md). Only the actor shells and the simulation tool may import those."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "membership"
FORBIDDEN = {"zmq", "pykka", "time", "random", "threading", "socket", "asyncio"}
# The shells own the clock, timers and refs; the simulation tool owns its seeded random streams.
# scenarios.py measures the wall time a scale run took.
ALLOWED = {
    "actor.py": {"time", "random"},
    "supervisor.py": {"time"},
    "detector_sim.py": {"random"},
    "rapid/actor.py": {"time", "random"},
    "rapid/sim.py": {"random"},
    "rapid/scenarios.py": {"time"},
}
MODULES = sorted(
    [p.name for p in PACKAGE.glob("*.py")] + [f"rapid/{p.name}" for p in PACKAGE.glob("rapid/*.py")]
)


def runtime_imports(source: str) -> set[str]:
    """Top-level names imported at run time (imports under ``if TYPE_CHECKING:`` excluded)."""
    tree = ast.parse(source)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skipped.update(id(n) for b in node.body for n in ast.walk(b))
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", MODULES)
def test_protocol_modules_import_no_io_clock_or_chance(module: str) -> None:
    found = runtime_imports((PACKAGE / module).read_text()) & FORBIDDEN
    assert found <= ALLOWED.get(module, set()), f"membership/{module} imports {sorted(found)}"


def test_the_check_itself_sees_forbidden_imports() -> None:
    assert runtime_imports("import time\nfrom zmq import Context\n") == {"time", "zmq"}
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import random\n"
    assert runtime_imports(guarded) == {"typing"}
