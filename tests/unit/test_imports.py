"""The package's import graph: no module imports, even lazily or for type checking, a
module that imports it back (in-process)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "assistantd"


def imports_of(path: Path) -> set[str]:
    """The assistantd modules one file imports anywhere in it (top level, functions, and
    ``if TYPE_CHECKING`` blocks alike)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "assistantd":
                found.update(f"assistantd.{a.name}" for a in node.names)
            elif node.module.startswith("assistantd."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("assistantd."))
    return found


def graph() -> dict[str, set[str]]:
    mods = {f"assistantd.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {m: {i for i in imports_of(p) if i in mods and i != m} for m, p in mods.items()}


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as a path that starts and ends at the same module."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The checker itself reports a cycle when there is one."""
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    """No assistantd module imports one that imports it back, directly or round about."""
    assert cycle(graph()) is None
