"""Fixtures for the engine runtime tests: tiny model folders on disk (workers load models in
their own processes) and target-only greedy references. Import the fixtures into a test
module by importing ``tiny_dirs_fixture`` (it registers as ``tiny_dirs``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

__all__ = ["reference", "run_async", "save_target_and_draft", "tiny_dirs_fixture"]


@pytest.fixture(scope="session", name="tiny_dirs")
def tiny_dirs_fixture(tmp_path_factory: pytest.TempPathFactory, tiny_target: Any) -> dict[str, str]:
    """``{"target": folder, "draft": folder}``: the conftest's tiny target and, as draft, a copy
    with every weight perturbed by 2% of its std: greedy acceptance ~0.6, so steps see both
    full acceptance (bonus token) and rejections (residual / lean row fetch)."""
    return save_target_and_draft(tiny_target, Path(tmp_path_factory.mktemp("runtime-models")))


def save_target_and_draft(target: Any, root: Path) -> dict[str, str]:
    """Save ``target`` and, as its draft, a copy with every weight perturbed by 2% of its std
    (greedy acceptance well between 0 and 1) under ``root``; return the two folders."""
    import copy

    import torch

    target.save_pretrained(root / "target")
    draft = copy.deepcopy(target)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02 * p.std())
    draft.save_pretrained(root / "draft")
    return {"target": str(root / "target"), "draft": str(root / "draft")}


def reference(model: Any, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Greedy target-only outputs, computed in this process."""
    from greenllm.engine import SamplingParams, autoregressive_generate

    params = SamplingParams(max_tokens=max_tokens)
    return [autoregressive_generate(model, p, params).tokens for p in prompts]


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
