"""The package's shape, checked: imports that run one way, and modules of a readable size.

An import cycle works only while one side of it imports inside a function; moving that
import to the top of its file breaks the package. So every import counts here, at the top
or inside a function, and the graph of streamenc's own modules must have no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import streamenc

PACKAGE = Path(streamenc.__file__).parent
MAX_LINES = 400  # a runtime module longer than this does more than one job


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _extensions() -> set[str]:
    """Compiled modules (the Cython core): imported like modules, importing nothing of ours."""
    return {
        ".".join((*p.relative_to(PACKAGE.parent).parent.parts, p.name.split(".")[0])) for p in PACKAGE.rglob("*.so")
    }


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The streamenc modules ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    extensions = _extensions()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(0, node.level - 1)):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            for a in node.names:  # "from . import x" names module x, else a name of the package
                sub = f"{target}.{a.name}"
                if sub not in extensions:
                    found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return path[path.index(v) :] + [v]
            if v not in state and (found := visit(v)):
                return found
        path.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_streamenc_modules_import_one_way():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "streamenc.backend" in graph["streamenc.recorder"]  # the graph is read at all
    assert "streamenc._ring" in _extensions()
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_no_runtime_module_is_longer_than_it_should_be():
    lengths = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert len(lengths) > 20
    assert not {n: k for n, k in lengths.items() if k > MAX_LINES}, f"over {MAX_LINES} lines"
