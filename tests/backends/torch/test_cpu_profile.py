"""This CPU measured with the engine's kernels (greenllm.backends.torch.cpu_profile): sane
rates, a disk cache keyed by machine, threads, torch and model, and clear errors."""

from __future__ import annotations

import json

import pytest

from greenllm.errors import ConfigError
from tests.extras import require

require("torch")
require("transformers")

from greenllm.backends.torch import cpu_profile


def test_measure_cpu_measures_caches_on_disk_and_refreshes(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GREENLLM_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_profile, "_MEASURED", {})
    first = cpu_profile.measure_cpu("smollm2-135m", 1, reps=1)
    # a float32 core streams GB/s and multiplies tens of GFLOP/s; a step's fixed time is
    # well under a millisecond per layer; attention runs at or below the GEMM rate
    assert 0.5 < first.stream_gbs < 500 and 1 < first.gemm_gflops < 5000
    assert 0 < first.layer_s < 5e-3 and first.step_s < 0.05
    assert first.attention_cost > 0.5 and 1 <= first.gemv_rows <= 3
    assert first.kernels.startswith("torch ") and first.model == "smollm2-135m"
    stored = json.loads((tmp_path / "cpu-profile-v2.json").read_text())
    (key, value), = stored.items()
    assert key.endswith("|1|" + first.kernels + "|smollm2-135m") and value == first.to_dict()
    calls = []
    monkeypatch.setattr(cpu_profile, "_profile", lambda *a: calls.append(a) or first)
    monkeypatch.setattr(cpu_profile, "_MEASURED", {})  # a new process: the file answers
    assert cpu_profile.measure_cpu("SmolLM2-135M", 1) == first and calls == []
    cpu_profile.measure_cpu("smollm2-135m", 1, refresh=True)
    assert calls == [("smollm2-135m", 1, 5)]


def test_measure_cpu_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="threads"):
        cpu_profile.measure_cpu(threads=0)
    with pytest.raises(ConfigError, match="reps"):
        cpu_profile.measure_cpu(reps=0)
    with pytest.raises(ConfigError, match="model"):
        cpu_profile.measure_cpu("no-such-model")
