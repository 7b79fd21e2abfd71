"""The architecture holds: layers point one way, no import circles, one import path per name.

The layer order is ``tests/import_graph.py:LAYERS`` (drawn in docs/architecture.md).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import greenllm
from tests.import_graph import (
    LAYERS,
    PACKAGE_ROOT,
    Import,
    component,
    cycles,
    layer_violations,
    module_edges,
    module_name,
    package_imports,
)

MODULES = {module_name(p) for p in PACKAGE_ROOT.rglob("*.py")}
IMPORTS = package_imports()
PACKAGES = sorted(
    module_name(p) for p in PACKAGE_ROOT.rglob("__init__.py") if module_name(p) != "greenllm"
)
# Public namespaces: every package, and the top-level modules (greenllm.errors, .config, ...).
NAMESPACES = PACKAGES + sorted(
    f"greenllm.{p.stem}" for p in PACKAGE_ROOT.glob("*.py") if not p.stem.startswith("__")
)


def test_every_component_has_a_layer() -> None:
    layered = {c for layer in LAYERS for c in layer}
    assert {component(m) for m in MODULES} <= layered


def test_layers_point_one_way() -> None:
    assert layer_violations(IMPORTS, MODULES) == []


def test_a_wrong_way_import_is_caught() -> None:
    """The check fails on an import that points up (carbon -> scheduler) or sideways."""
    up = Import("greenllm.carbon.accounting", "greenllm.scheduler.matrix", "RowKey", 1)
    side = Import("greenllm.energy.meter", "greenllm.slo", "RequestTimings", 2)
    down = Import("greenllm.scheduler.matrix", "greenllm.carbon", "get_gpu", 3)
    bad = layer_violations([up, side, down], MODULES)
    assert [b.split(" ->")[0] for b in bad] == [
        "greenllm.carbon.accounting",
        "greenllm.energy.meter",
    ]


def test_no_import_circles_between_modules() -> None:
    assert cycles(module_edges(IMPORTS, MODULES)) == []


def test_a_circle_is_caught() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def _tree(module: str) -> ast.Module:
    path = PACKAGE_ROOT.parent.joinpath(*module.split("."))
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return ast.parse(file.read_text(encoding="utf-8"))


def _defined(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _all(module: object) -> list[str]:
    names = getattr(module, "__all__", None)
    assert isinstance(names, list), f"{module!r} has no __all__ list"
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_exports_its_api_with_all(package: str) -> None:
    mod = importlib.import_module(package)
    names = _all(mod)
    assert len(names) == len(set(names)), f"{package}.__all__ repeats a name"
    for name in names:
        assert getattr(mod, name) is not None, f"{package}.{name} does not resolve"


def test_one_import_path_per_public_name() -> None:
    """No object is exported by two packages; the root facade only mirrors package exports."""
    home: dict[tuple[int, str], str] = {}
    for package in NAMESPACES:
        mod = importlib.import_module(package)
        for name in _all(mod):
            obj = getattr(mod, name)
            if isinstance(obj, (int, float, str, tuple, frozenset, bool)) or obj is None:
                key = (id(mod), name)  # plain values: identity says nothing; names do
            else:
                key = (id(obj), name)
            assert key not in home, f"{name} is exported by both {home[key]} and {package}"
            home[key] = package
    for name in greenllm.__all__:
        if name == "__version__":
            continue
        obj = getattr(greenllm, name)
        homes = [p for (i, n), p in home.items() if n == name and i == id(obj)]
        assert len(homes) == 1, f"greenllm.{name} must mirror exactly one namespace's export"


def test_other_packages_import_public_names_from_their_namespace() -> None:
    """Outside its package, a public name is imported from the namespace that exports it
    (``from greenllm.energy import CarbonMeter``, not ``from greenllm.energy.meter import ...``)."""
    exported: dict[int, str] = {}
    for namespace in NAMESPACES:
        mod = importlib.import_module(namespace)
        for name in _all(mod):
            obj = getattr(mod, name)
            if not isinstance(obj, (int, float, str, tuple, frozenset, bool)) and obj is not None:
                exported[id(obj)] = namespace
    bad = []
    for imp in IMPORTS:
        if imp.name is None or imp.target in NAMESPACES or imp.target == "greenllm":
            continue
        if component(imp.source) == component(imp.target) or f"{imp.target}.{imp.name}" in MODULES:
            continue
        home = exported.get(id(getattr(importlib.import_module(imp.target), imp.name, None)))
        if home is not None:
            bad.append(f"{imp.source}:{imp.line} from {imp.target} import {imp.name} (use {home})")
    assert bad == []


def test_modules_list_only_their_own_names_in_all() -> None:
    bad = []
    for module in sorted(MODULES - set(PACKAGES) - {"greenllm"}):
        tree = _tree(module)
        defined = _defined(tree)
        mod_all = next(
            (
                ast.literal_eval(n.value)
                for n in tree.body
                if isinstance(n, (ast.Assign, ast.AnnAssign))
                and n.value is not None
                and any(
                    getattr(t, "id", None) == "__all__"
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                )
            ),
            [],
        )
        bad += [f"{module}.{name}" for name in mod_all if name not in defined]
    assert bad == [], "re-exported from a module (export it from its package instead)"


def test_no_private_name_is_imported_from_another_module() -> None:
    bad = [
        f"{i.source}:{i.line} imports {i.name} from {i.target}"
        for i in IMPORTS
        if i.name and i.name.startswith("_") and i.name != "__version__"
    ]
    assert bad == []


def test_no_private_name_is_reached_through_a_module_object() -> None:
    """Nor ``from greenllm.x import mod`` then ``mod._helper``."""
    bad = []
    for module in sorted(MODULES):
        tree = _tree(module)
        aliases = {
            a.asname or a.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and not node.level
            for a in node.names
            if f"{node.module}.{a.name}" in MODULES
        }  # fmt: skip
        bad += [
            f"{module}:{node.lineno} {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_") and not node.attr.startswith("__")
        ]  # fmt: skip
    assert bad == []


def _literals(tree: ast.Module) -> list[float]:
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, float)]  # fmt: skip


ONCE = ("J_PER_KWH", "SECONDS_PER_YEAR", "MAX_INTENSITY_G_PER_KWH")


def test_unit_constants_are_defined_once() -> None:
    """J per kWh (3.6e6), the 365.25-day year and the intensity limit live in greenllm/units.py."""
    owners = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for value in _literals(tree):
            if value in (3.6e6, 365.25, 31_557_600.0):
                owners.setdefault(value, set()).add(module_name(path))
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if getattr(t, "id", None) in ONCE:
                        owners.setdefault(t.id, set()).add(module_name(path))  # type: ignore[union-attr]
    assert all(mods == {"greenllm.units"} for mods in owners.values()), owners


def test_every_module_is_importable_without_optional_extras() -> None:
    """Modules that need an extra import it lazily; walking the package imports nothing heavy."""
    skip = ("greenllm.backends.vllm.worker", "greenllm.backends.vllm.draft_server")
    for info in pkgutil.walk_packages(greenllm.__path__, "greenllm."):
        if info.name.startswith(skip) or info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)


def test_tests_mirror_the_package() -> None:
    """Every test folder names a package (tests/engine/model <-> greenllm/engine/model)."""
    tests = Path(__file__).parent
    for folder in sorted(p for p in tests.rglob("*") if p.is_dir() and any(p.glob("test_*.py"))):
        rel = folder.relative_to(tests)
        if rel == Path("."):
            continue
        assert (PACKAGE_ROOT / rel).is_dir(), f"tests/{rel} mirrors no package greenllm/{rel}"
