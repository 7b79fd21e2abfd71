"""The engine on CUDA devices: DSD and DPD with NCCL between the workers when each side has its
own GPU. Written against the real APIs; skipped on machines without CUDA (this project's CI)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.helpers import reference
from tests.extras import require

torch = require("torch")

from greenllm.engine import (
    Engine,
    SamplingParams,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]
MAX_TOKENS = 24


def _devices() -> tuple[str, str]:
    """The new-GPU and old-GPU sides: two devices (NCCL between them) or one shared."""
    return ("cuda:0", "cuda:1") if torch.cuda.device_count() > 1 else ("cuda:0", "cuda:0")


@pytest.mark.parametrize("mode", ["dsd", "dpd"])
def test_greedy_output_on_cuda_equals_target_only(
    mode: str, tiny_dirs: dict[str, str], tiny_target: Any, tiny_prompts: list[list[int]]
) -> None:
    new, old = _devices()
    draft = tiny_dirs["draft"] if mode == "dsd" else None
    refs = reference(tiny_target, tiny_prompts[:4], MAX_TOKENS)
    with Engine(mode, tiny_dirs["target"], draft, device_new=new, device_old=old,
                timeout_s=60) as engine:  # fmt: skip
        outs = engine.generate_batch(tiny_prompts[:4], SamplingParams(max_tokens=MAX_TOKENS))
        stats = engine.stats()
    assert [list(o.tokens) for o in outs] == refs
    assert stats.link_bytes > 0
