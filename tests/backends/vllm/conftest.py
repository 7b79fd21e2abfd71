"""Fixtures of the vLLM backend tests: the vLLM Python, one shared backend, requests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from greenllm.config import SLO, RequestSize, Workload
from greenllm.errors import BackendUnavailableError
from greenllm.workloads import RequestSet

TARGET = "smollm2-135m"
#: The tests draft with the target itself: greedy acceptance is then ~100%, so a proposal lost
#: anywhere between the draft and vLLM's verifier shows up as a low acceptance rate.
SELF_DRAFT = "smollm2-135m"

WORKLOAD = Workload(
    application="humaneval",
    request_size=RequestSize(input_tokens=80, output_tokens=16),
    qps=2.0,
    slo=SLO(ttft_s=5.0, tpot_s=1.0),
)
# prompts of 80, 70 and 40 tokens: 64 + 64 + 32 = 160 prompt tokens in whole 32-token blocks
REQUESTS = RequestSet(np.array([0.0, 0.3, 0.6]), np.array([80, 70, 40]), np.array([16, 16, 12]))


@pytest.fixture(scope="session")
def vllm_python() -> str:
    from greenllm.backends.vllm import find_vllm_python

    try:
        return str(find_vllm_python())
    except BackendUnavailableError as err:
        pytest.skip(f"no Python with vLLM (make vllm-venv; GREENLLM_VLLM_PYTHON): {err}")


@pytest.fixture(scope="module")
def backend(vllm_python: str) -> Iterator[object]:
    """One backend whose engines are shared with every other test of the session."""
    from greenllm.backends.vllm import VLLMBackend

    b = VLLMBackend(python=vllm_python, share_engines=True)
    yield b
    b.close()
