"""The ``cpu`` device of the simulator: measured ceilings become a catalog entry that the same
roofline uses, with the CPU's own efficiency (per-layer overhead); verification steps score
K + 1 logit rows."""

from __future__ import annotations

import json

import pytest

from greenllm.backends.sim import cpu
from greenllm.backends.sim.efficiency import Efficiency
from greenllm.backends.sim.models import get_model
from greenllm.backends.sim.roofline import StepModel, step_model
from greenllm.carbon import get_gpu, unregister_gpu
from greenllm.errors import ConfigError

CEILINGS = cpu.CpuCeilings(gemm_gflops=120.0, bandwidth_gbs=9.0, threads=1,
                           cpu_model="test cpu", vcpus=2, ram_gb=16.0)  # fmt: skip


def test_cpu_spec_holds_the_measured_ceilings_and_cloud_power() -> None:
    spec = cpu.cpu_spec(CEILINGS)
    assert spec.name == "cpu"
    assert spec.fp16_tflops == pytest.approx(0.12) and spec.mem_bw_gbs == 9.0
    assert spec.max_power_w == pytest.approx(2 * 3.80)
    assert spec.idle_power_w == pytest.approx(2 * 0.64)
    assert spec.embodied_kg > 0 and "measured at 1 thread" in spec.source


def test_the_cpu_step_uses_the_same_roofline_with_its_own_efficiency() -> None:
    spec = cpu.cpu_spec(CEILINGS)
    sm = StepModel("smollm2-135m", spec)
    e = cpu.CPU_EFFICIENCY
    m = get_model("smollm2-135m")
    assert sm.efficiency == e
    assert sm.overhead_s == pytest.approx(e.overhead_s + m.n_layers * e.layer_s)
    # decode: bandwidth-bound, the weights once over the measured bandwidth; attention FLOPs
    # (4 L h per attended pair) count attention_cost times
    tm = sm.bytes(1) / (9.0e9 * e.memory)
    attention = 4 * m.n_layers * m.hidden_size * (e.attention_cost - 1)
    tc = (sm.flops(1) + attention) / (120e9 * e.compute)
    p = e.roofline_p
    assert sm.time_s(1) == pytest.approx((tc**p + tm**p) ** (1 / p) + sm.overhead_s)
    cost = sm.cost(1)
    assert (cost.compute_s, cost.memory_s) == (pytest.approx(tc), pytest.approx(tm))
    assert tm > tc
    # a GEMM step (more than gemv_rows new tokens) moves the weights 1 + pack_factor times
    n = e.gemv_rows + 1
    assert sm.bytes(n) - sm.bytes(n - 1) == pytest.approx(
        sm._w_b * e.pack_factor + sm._per_new_b
    )


def test_the_cpu_terms_are_neutral_on_gpus_and_validated() -> None:
    e = step_model("llama-1b", "A100").efficiency
    assert (e.gemv_rows, e.pack_factor, e.attention_cost) == (0, 0.0, 1.0)
    with pytest.raises(ConfigError, match="layer_s"):
        StepModel("llama-1b", "A100", Efficiency(0.5, 0.5, 0.0, 2.0, -1e-3))
    with pytest.raises(ConfigError, match="attention_cost"):
        StepModel("llama-1b", "A100", Efficiency(0.5, 0.5, 0.0, 2.0, 0.0, attention_cost=0.0))


def test_a_verification_scores_every_row() -> None:
    sm = step_model("llama-1b", "A100")
    head = 2 * 32000 * 2048
    assert sm.flops(5, 100, 1, logit_rows=5) - sm.flops(5, 100, 1) == pytest.approx(4 * head)
    assert sm.time_s(5, 100, 1, 5) > sm.time_s(5, 100, 1)
    assert sm.cost(5, 100, 1, 5).flops == pytest.approx(sm.flops(5, 100, 1, 5))


def test_measure_cpu_caches_on_disk_and_register_cpu_adds_the_device(
    tmp_path, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    calls = []

    def fake(threads: int) -> dict[str, float]:
        calls.append(threads)
        return {"gemm_gflops": 100.0, "bandwidth_gbs": 8.0}

    monkeypatch.setenv("GREENLLM_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu, "_run_benchmark", fake)
    monkeypatch.setattr(cpu, "_MEASURED", {})
    first = cpu.measure_cpu(1)
    assert (first.gemm_gflops, first.bandwidth_gbs, calls) == (100.0, 8.0, [1])
    monkeypatch.setattr(cpu, "_MEASURED", {})  # a new process: the file answers
    assert cpu.measure_cpu(1) == first and calls == [1]
    stored = json.loads((tmp_path / "cpu-profile-v1.json").read_text())
    assert list(stored.values()) == [{"gemm_gflops": 100.0, "bandwidth_gbs": 8.0}]
    cpu.measure_cpu(1, refresh=True)
    assert calls == [1, 1]
    try:
        spec = cpu.register_cpu(1)
        assert get_gpu("cpu") == spec and get_gpu("CPU").mem_bw_gbs == 8.0
    finally:
        unregister_gpu("cpu")
    with pytest.raises(ConfigError, match="threads"):
        cpu.measure_cpu(0)


def test_the_micro_benchmark_runs() -> None:
    out = cpu._run_benchmark(1)
    assert out["gemm_gflops"] > 1 and out["bandwidth_gbs"] > 0.1
