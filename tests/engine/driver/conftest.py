"""Engines shared by the driver tests of one module: DSD and DPD on the tiny models, and the
greedy target-only references they are checked against."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.helpers import REF_MAX_TOKENS, reference


@pytest.fixture(scope="module")
def dsd(tiny_dirs: dict[str, str]) -> Any:
    from greenllm.engine import Engine

    with Engine("dsd", tiny_dirs["target"], tiny_dirs["draft"], k=4, timeout_s=30) as engine:
        yield engine


@pytest.fixture(scope="module")
def dpd(tiny_dirs: dict[str, str]) -> Any:
    from greenllm.engine import Engine

    with Engine("dpd", tiny_dirs["target"], timeout_s=30) as engine:
        yield engine


@pytest.fixture(scope="module")
def refs(tiny_target: Any, tiny_prompts: list[list[int]]) -> list[list[int]]:
    """Greedy target-only outputs of the first four prompts, ``REF_MAX_TOKENS`` each."""
    return reference(tiny_target, tiny_prompts[:4], REF_MAX_TOKENS)
