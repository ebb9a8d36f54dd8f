"""The package's shape: imports inside phifilter/ run one way, and no module reaches into another
module's underscore names. Read from the source with ast, so an import inside a function counts
as much as one at the top of a file (both make the modules depend on each other)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "phifilter"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_edges() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """(module -> modules of the package it imports, [(importer, module, underscore name)])."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: list[tuple[str, str, str]] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                targets = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    # `from . import data` imports the module phifilter.pretrain.data itself
                    targets.append((sub, None) if sub in modules else (base, alias.name))
            else:
                continue
            for target, imported in targets:
                if target not in modules or target == name:
                    continue
                # A package's __init__ re-exporting its own modules is not a dependency cycle.
                if is_package and target.startswith(name + "."):
                    continue
                edges[name].add(target)
                if imported and imported.startswith("_") and not imported.startswith("__"):
                    private.append((name, target, imported))
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_and_an_underscore_import():
    # known answer, so the two tests below cannot pass by finding nothing
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    edges, private = import_edges()
    assert edges["phifilter.cli"], "the CLI imports the library"
    assert not any(m.startswith("tests") for m in edges)


def test_no_import_cycles_inside_the_package():
    edges, _ = import_edges()
    assert _cycles(edges) == []


def test_no_module_imports_another_modules_underscore_names():
    _, private = import_edges()
    assert private == []
