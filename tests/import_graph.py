"""The import graph of the ``greenllm`` package, read from the source (nothing is imported).

Every ``import``/``from ... import`` counts, at module level or inside a function, except those
under ``if TYPE_CHECKING:`` (annotations only). Lazy exports (a package's ``_LAZY`` table) count
as imports of the package. Used by tests/test_architecture.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "greenllm"

# Layers, lowest first. A component may import only components of lower layers (and itself);
# components in the same layer are independent of each other. The root package ``greenllm``
# (a lazy facade) and ``greenllm.__main__`` sit above everything.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "units", "version", "lazy"),
    ("checks",),  # imports errors, so one layer above it (same-layer imports are refused)
    ("config",),
    ("carbon", "workloads"),
    ("energy", "slo"),
    ("scheduler", "speculation"),
    ("engine",),
    ("backends",),
    ("profiler",),
    ("fleet",),
    ("serve",),
    ("reproduce",),
    ("cli",),
    ("__init__", "__main__"),
)


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module or package, dotted
    name: str | None  # the name taken from it (None for ``import x``)
    line: int


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(source: str, text: str) -> list[Import]:
    """The greenllm imports in one module's source ``text``."""
    tree = ast.parse(text)
    skip = _type_checking_lines(tree)
    out: list[Import] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module.split(".")[0] == "greenllm":
                out += [Import(source, node.module, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [
                Import(source, a.name, None, node.lineno)
                for a in node.names
                if a.name.split(".")[0] == "greenllm"
            ]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if getattr(target, "id", None) == "_LAZY" and node.value is not None:
                table = ast.literal_eval(node.value)
                out += [Import(source, mod, name, node.lineno) for name, mod in table.items()]
    return out


def package_imports(root: Path = PACKAGE_ROOT) -> list[Import]:
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        found += imports_of(module_name(path, root), path.read_text(encoding="utf-8"))
    return found


def resolve(imp: Import, modules: set[str]) -> str:
    """The module an import really loads: ``from pkg import submodule`` loads the submodule."""
    if imp.name and f"{imp.target}.{imp.name}" in modules:
        return f"{imp.target}.{imp.name}"
    return imp.target


def component(module: str) -> str:
    """``greenllm.carbon.catalog.act`` -> ``carbon``; the root package -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(comp: str, layers: Iterable[Iterable[str]] = LAYERS) -> int:
    for i, members in enumerate(layers):
        if comp in members:
            return i
    raise KeyError(f"component {comp!r} is in no layer: add it to LAYERS")


def layer_violations(imports: Iterable[Import], modules: set[str]) -> list[str]:
    """Imports that point up or sideways (``source -> target (line)`` each)."""
    bad = []
    for imp in imports:
        target = resolve(imp, modules)
        src, dst = component(imp.source), component(target)
        if src == dst:
            continue
        if layer_of(dst) >= layer_of(src):
            bad.append(f"{imp.source} -> {target} (line {imp.line}): {src} may not import {dst}")
    return bad


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def module_edges(imports: Iterable[Import], modules: set[str]) -> dict[str, set[str]]:
    """Module -> modules it imports (package ``__init__`` nodes included)."""
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        target = resolve(imp, modules)
        if target in modules and target != imp.source:
            edges[imp.source].add(target)
    return edges
