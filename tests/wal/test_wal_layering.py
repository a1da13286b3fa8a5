"""The log itself knows nothing of actors, clocks, threads or chance (architecture.md): only the
log-writer actor and its messages may import those, so `import wal` never pulls in the runtime."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

WAL = pathlib.Path(__file__).resolve().parents[2] / "wal"
FORBIDDEN = {"actors", "pykka", "zmq", "socket", "asyncio", "threading", "time", "random"}
SHELLS = {
    "writer_actor.py": {"actors", "threading", "time"},
    "writer_messages.py": {"actors"},
}


def imported_packages(path: pathlib.Path) -> set[str]:
    packages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            packages.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.partition(".")[0])
    return packages


@pytest.mark.parametrize("name", sorted(p.name for p in WAL.glob("*.py")))
def test_only_the_actor_shell_imports_the_runtime_or_a_clock(name: str) -> None:
    found = imported_packages(WAL / name) & FORBIDDEN
    assert found <= SHELLS.get(name, set()), f"wal/{name} imports {sorted(found)}"


def test_the_check_sees_imports() -> None:
    probe = WAL.parent / "tests" / "wal" / "wal_crash_child.py"
    assert "wal" in imported_packages(probe) and "actors" in imported_packages(probe)


def test_importing_wal_loads_no_actor_runtime() -> None:
    code = "import sys, wal, wal.kv_compaction, wal.verify; print('pykka' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
