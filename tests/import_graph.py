"""The package's module import graph, read from the source (lazy imports inside functions included).

    python tests/import_graph.py      # prints every import cycle between tfmot_mtl modules

An edge A -> B means module A contains ``import B`` or ``from B import ...`` (``from P import m``
where ``P.m`` is a module counts as an edge to ``P.m``); imports under ``if TYPE_CHECKING:`` are
left out, they never run. The root ``tfmot_mtl/__init__`` only re-exports the core and loads
sub-packages on attribute access, so it is left out too.
"""
from __future__ import annotations

import ast
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfmot_mtl")
PACKAGE = "tfmot_mtl"


def modules(root: str = ROOT) -> dict[str, str]:
    """{dotted module name: file path} of every module under the package."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(root))[:-3]
                dotted = rel.replace(os.sep, ".").removesuffix(".__init__")
                found[dotted] = os.path.join(folder, name)
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: str, known: set[str]) -> set[str]:
    """The package modules that the file at ``path`` imports."""
    with open(path) as f:
        tree = ast.parse(f.read())
    skip = _type_checking_lines(tree)
    targets = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            targets.update(subs or {node.module})
    return {t for t in targets if t in known}


def graph(root: str = ROOT) -> dict[str, set[str]]:
    found = modules(root)
    names = set(found)
    return {m: imports(p, names) - {m, PACKAGE} for m, p in found.items() if m != PACKAGE}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


if __name__ == "__main__":
    found = cycles(graph())
    for component in found:
        print(" <-> ".join(component))
    print(f"{len(found)} import cycle(s) among {len(modules())} modules")
    sys.exit(1 if found else 0)
