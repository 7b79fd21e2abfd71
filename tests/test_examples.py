"""The examples run and print what the README shows; every greenllm name the examples and the
benchmarks import exists (benchmarks themselves run in ``make bench``, not here)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*REPO.glob("examples/*.py"), *REPO.glob("benchmarks/*.py")])


def _run(script: str) -> str:
    out = subprocess.run(
        [sys.executable, str(REPO / script)], capture_output=True, text=True, timeout=600,
        cwd=REPO, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_greenllm_import_resolves(script: Path) -> None:
    tree = ast.parse(script.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("greenllm"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if not hasattr(module, alias.name):
                    importlib.import_module(full)  # a submodule; raises if it is not one


def test_quickstart_prints_the_readme_block() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = readme.split("prints (`python examples/quickstart.py`):", 1)[1].split("```")[1]
    assert _run("examples/quickstart.py").strip() == shown.strip()


def test_carbon_accounting_example_runs() -> None:
    out = _run("examples/carbon_accounting.py")
    assert "request 0:" in out and "A100+T4 emits" in out


def test_plan_from_profiles_example_runs() -> None:
    out = _run("examples/plan_from_profiles.py")
    assert "'measured': 27" in out and "a year at 2 QPS in CISO" in out


def test_serve_and_query_example_runs() -> None:
    from tests.extras import require

    for name in ("openai", "fastapi", "uvicorn", "prometheus_client"):
        require(name)
    out = _run("examples/serve_and_query.py")
    assert out.count("32 tokens on DSD A100+T4 llama-1b @16Gbps") == 2
    assert "(modelled)" in out and "the last one's receipt" in out
