"""Helpers of the engine runtime tests: tiny model folders on disk (workers load models in their
own processes) and target-only greedy references. The ``tiny_dirs`` fixture is in conftest.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

__all__ = ["reference", "run_async", "save_target_and_draft"]


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


REF_MAX_TOKENS = 24
"""Tokens of the driver tests' greedy references (the ``refs`` fixture)."""


def reference(model: Any, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Greedy target-only outputs, computed in this process."""
    from greenllm.engine import SamplingParams, autoregressive_generate

    params = SamplingParams(max_tokens=max_tokens)
    return [autoregressive_generate(model, p, params).tokens for p in prompts]


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
