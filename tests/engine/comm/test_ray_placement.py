"""Ray placement: DSD workers as Ray actors on a real local cluster, placed by custom
resources (``gpu_type:A100`` for the target, ``gpu_type:T4`` for the draft)."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.engine.helpers import reference
from tests.extras import require

ray = require("ray")
require("torch")

from greenllm.engine import (
    Engine,
    SamplingParams,
)

RESOURCES = {"new": {"gpu_type:A100": 1.0}, "old": {"gpu_type:T4": 1.0}}


@pytest.fixture
def ray_cluster() -> Any:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        resources={"gpu_type:T4": 1, "gpu_type:A100": 1},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_dsd_on_ray_actors_placed_by_resources(
    ray_cluster: Any, tiny_dirs: dict[str, str], tiny_target: Any, tiny_prompts: Any
) -> None:
    refs = reference(tiny_target, tiny_prompts[:3], 16)
    with Engine(
        "dsd",
        tiny_dirs["target"],
        tiny_dirs["draft"],
        k=3,
        placement="ray",
        ray_resources=RESOURCES,
        timeout_s=30,
    ) as engine:
        workers = {w["side"]: w for w in engine.workers}
        assert workers["new"]["role"] == "dsd_target"
        assert workers["new"]["resources"].get("gpu_type:A100") == 1.0
        assert "gpu_type:T4" not in workers["new"]["resources"]
        assert workers["old"]["role"] == "dsd_draft"
        assert workers["old"]["resources"].get("gpu_type:T4") == 1.0
        assert workers["new"]["pid"] != workers["old"]["pid"] != os.getpid()
        outs = engine.generate_batch(tiny_prompts[:3], SamplingParams(max_tokens=16))
        assert [list(o.tokens) for o in outs] == refs
        assert engine.stats().proposed_tokens > 0
    deadline = time.monotonic() + 20  # actors gone: their resources come back (asynchronously)
    while time.monotonic() < deadline:
        available = ray.available_resources()
        if available.get("gpu_type:T4") == 1.0 and available.get("gpu_type:A100") == 1.0:
            break
        time.sleep(0.2)
    assert available.get("gpu_type:T4") == 1.0 and available.get("gpu_type:A100") == 1.0
