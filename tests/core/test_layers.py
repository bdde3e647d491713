"""The package's layers, as its imports show them: what may import what, no cycles.

``core`` imports no framework, server, client or database driver; ``storage`` imports
only ``core`` (and neither backend the other); ``server`` never imports ``cli``.
Imports inside functions count too (``cli`` imports the server lazily, which is fine:
it is above it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import streamer

PACKAGE = Path(streamer.__file__).parent
FRAMEWORKS = ("starlette", "uvicorn", "websockets", "httpx", "aiosqlite", "asyncpg", "sqlite3")
MAX_LINES = 450


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path) -> Iterator[str]:
    """Every module ``name`` imports, absolute, whether at the top or in a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            known = modules()
            for alias in node.names:  # ``from . import x``: x may be a module
                full = f"{base}.{alias.name}"
                yield full if full in known else base


def first_party(target: str) -> str | None:
    """The module of the package that ``target`` is or lies in, if any."""
    known = modules()
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in modules().items():
        edges[name] = {t for i in imports(name, path) if (t := first_party(i)) and t != name}
    return edges


def test_core_imports_no_framework_driver_or_higher_layer() -> None:
    for name, path in modules().items():
        if not name.startswith("streamer.core"):
            continue
        for target in imports(name, path):
            root = target.split(".")[0]
            assert root not in FRAMEWORKS, f"{name} imports {target}"
            assert not target.startswith(("streamer.server", "streamer.storage", "streamer.cli"))


def test_each_layer_imports_only_the_layers_below_it() -> None:
    below = {
        "streamer.storage": ("streamer.core", "streamer.storage"),
        "streamer.server": ("streamer.core", "streamer.storage", "streamer.server"),
    }
    for name, targets in graph().items():
        for layer, allowed in below.items():
            if name.startswith(layer):
                for target in targets:
                    assert target.startswith(allowed), f"{name} imports {target}"
        for engine, other in (("sqlite", "postgres"), ("postgres", "sqlite")):
            if name.startswith(f"streamer.storage.{engine}"):
                assert not any(t.startswith(f"streamer.storage.{other}") for t in targets), name


def test_no_import_cycles() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for target in sorted(edges.get(name, ())):
            if target != "streamer" and not name.startswith(target + "."):  # a package's face
                visit(target, [*path, name])
        done.add(name)

    for name in edges:
        visit(name, [])


def test_no_module_is_past_450_lines() -> None:
    long = {
        n: c for n, p in modules().items() if (c := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
