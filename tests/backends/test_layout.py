"""The backends' inner rule (package-wide rules are in tests/test_architecture.py): the torch
and vLLM backends never import each other; what they share lives in greenllm/backends."""

from __future__ import annotations

from tests.import_graph import PACKAGE_ROOT, module_edges, module_name, package_imports

MODULES = {module_name(p) for p in PACKAGE_ROOT.rglob("*.py")}


def test_torch_and_vllm_do_not_import_each_other() -> None:
    edges = module_edges(package_imports(), MODULES)
    crossing = [
        f"{source} -> {target}"
        for source, targets in edges.items()
        for target in targets
        for a, b in (("torch", "vllm"), ("vllm", "torch"))
        if source.startswith(f"greenllm.backends.{a}")
        and target.startswith(f"greenllm.backends.{b}")
    ]
    assert crossing == []
