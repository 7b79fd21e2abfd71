"""The engine's inner layers (the package-wide rules are in tests/test_architecture.py): workers
never reach back to the launcher, the driver never reaches worker code, and the engine reaches its
worker state only through the supervisor's public methods."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import greenllm.engine
from tests.extras import require
from tests.import_graph import PACKAGE_ROOT, module_edges, module_name, package_imports

PREFIX = "greenllm.engine"
MODULES = {module_name(p) for p in PACKAGE_ROOT.rglob("*.py")}
GRAPH = module_edges(package_imports(), MODULES)


def _reachable(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += GRAPH.get(current, ())
    return seen


@pytest.mark.parametrize(
    ("module", "must_not_reach"),
    [
        ("greenllm.engine.driver.supervisor", "greenllm.engine.driver.engine"),
        ("greenllm.engine.worker.single", "greenllm.engine.worker.main"),
        ("greenllm.engine.worker.dsd", "greenllm.engine.worker.main"),
        ("greenllm.engine.worker.dpd", "greenllm.engine.worker.main"),
        ("greenllm.engine.worker.context", "greenllm.engine.worker.single"),
        ("greenllm.engine.model.draft", "greenllm.engine.model.resolve"),
        ("greenllm.engine.model.pretrained", "greenllm.engine.model.draft"),
        ("greenllm.engine.model.sampling", "greenllm.engine.comm.messages"),
    ],
)
def test_layers_point_one_way(module: str, must_not_reach: str) -> None:
    assert must_not_reach not in _reachable(module)


def test_only_the_launcher_imports_worker_code() -> None:
    """Driver and comm modules never import worker modules, except that a placement runs the
    worker entry point (a Ray actor runs it in its own process)."""
    crossing = {
        (module, target)
        for module, targets in GRAPH.items()
        if module.startswith(PREFIX) and not module.startswith(f"{PREFIX}.worker")
        for target in targets
        if target.startswith(f"{PREFIX}.worker.")
    }
    assert crossing == {("greenllm.engine.comm.placement", "greenllm.engine.worker.main")}


def _tree(module: str) -> ast.Module:
    path = PACKAGE_ROOT.parent.joinpath(*module.split(".")).with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8"))


def test_engine_uses_only_the_supervisors_public_interface() -> None:
    tree = _tree("greenllm.engine.driver.engine")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "_supervisor"):  # fmt: skip
            assert not node.attr.startswith("_"), node.attr
    supervisor = _tree("greenllm.engine.driver.supervisor")
    params = {a.arg for n in ast.walk(supervisor) if isinstance(n, ast.arguments) for a in n.args}
    assert "engine" not in params


def test_public_names_are_lazy_and_torch_free_to_import() -> None:
    code = (
        "import sys, greenllm.engine as e\n"
        "assert 'torch' not in sys.modules\n"
        "assert set(e.MODES) == {'standalone', 'spec_decode', 'dsd', 'dpd'}\n"
        "assert callable(e.resolve_model_dir) and callable(e.load_model)\n"
        "assert 'torch' not in sys.modules, 'the resolver imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    require("torch")
    for name in greenllm.engine.__all__:
        assert getattr(greenllm.engine, name) is not None, name
