"""Shared engine fixtures: tiny seeded Llama models built offline (same vocabulary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import save_target_and_draft
from tests.extras import require

torch = require("torch")
require("transformers")

TINY_VOCAB = 256


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """Tiny models run several times faster on one thread, above all on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_target() -> Any:
    """A 4-layer random Llama (vocab 256, hidden 64), init std 0.1 so its greedy choices are
    peaked and partly learnable by a smaller draft."""
    from greenllm.engine import tiny_llama

    return tiny_llama(
        vocab_size=TINY_VOCAB, hidden_size=64, n_layers=4, seed=0, initializer_range=0.1
    )


@pytest.fixture(scope="session")
def tiny_draft() -> Any:
    """A different, smaller random Llama with the target's vocabulary (1 layer, hidden 32)."""
    from greenllm.engine import tiny_llama

    return tiny_llama(vocab_size=TINY_VOCAB, hidden_size=32, n_layers=1, n_heads=2,
                      n_kv_heads=1, seed=1, initializer_range=0.1)


@pytest.fixture(scope="session")
def tiny_prompts() -> list[list[int]]:
    """Eight seeded prompts of 12 token ids (ids >= 2: 0 is BOS, 1 is EOS in tiny_llama)."""
    g = torch.Generator().manual_seed(123)
    return [torch.randint(2, TINY_VOCAB, (12,), generator=g).tolist() for _ in range(8)]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_target: Any) -> dict[str, str]:
    """``{"target": folder, "draft": folder}``: the conftest's tiny target and, as draft, a copy
    with every weight perturbed by 2% of its std: greedy acceptance ~0.6, so steps see both
    full acceptance (bonus token) and rejections (residual / lean row fetch)."""
    return save_target_and_draft(tiny_target, Path(tmp_path_factory.mktemp("runtime-models")))
