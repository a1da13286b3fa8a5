"""The sans-IO core imports no IO, threads, clocks or chance: time and randomness are inputs.
(The actor shells in consensus/shell and the client may; they are not the core.)"""

from __future__ import annotations

import ast
import pathlib

import consensus

CORE = (
    "__init__",
    "candidate",
    "config",
    "configuration",
    "errors",
    "follower",
    "leader",
    "leader_membership",
    "leader_snapshots",
    "log",
    "messages",
    "node",
    "node_snapshots",
    "progress",
    "raftlog",
    "reads",
    "ready",
    "sessions",
    "snapshots",
)
FORBIDDEN = {"zmq", "pykka", "time", "random", "threading", "socket", "asyncio", "os"}


def runtime_imports(path: pathlib.Path) -> set[str]:
    """Top-level modules imported at run time (imports under TYPE_CHECKING excluded)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_core_imports_no_io_threads_clock_or_randomness() -> None:
    package = pathlib.Path(consensus.__file__).parent
    for name in CORE:
        imported = runtime_imports(package / f"{name}.py")
        assert not imported & FORBIDDEN, f"consensus/{name}.py imports {imported & FORBIDDEN}"
