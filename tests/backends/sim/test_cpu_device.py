"""The ``cpu`` device of the simulator: measured ceilings become a catalog entry that the same
roofline uses, with the CPU's own efficiency (per-layer overhead); verification steps score
K + 1 logit rows."""

from __future__ import annotations

import dataclasses

import pytest

from greenllm.backends.sim import cpu
from greenllm.backends.sim.efficiency import Efficiency
from greenllm.backends.sim.models import get_model
from greenllm.backends.sim.roofline import StepModel, step_model
from greenllm.carbon import unregister_gpu
from greenllm.errors import ConfigError

PROFILE = cpu.CpuProfile(
    model="smollm2-135m", threads=1, cpu_model="test cpu", vcpus=2, ram_gb=16.0,
    kernels="torch 0", gemm_gflops=120.0, stream_gbs=9.0, gemv_rows=3, pack_factor=0.5,
    attention_cost=2.5, step_s=3e-4, layer_s=2.5e-4,
)  # fmt: skip


@pytest.fixture
def registered():  # type: ignore[no-untyped-def]
    spec = cpu.register_cpu(PROFILE)
    yield spec
    unregister_gpu("cpu")


def test_cpu_spec_holds_the_measured_rates_and_cloud_power() -> None:
    spec = cpu.cpu_spec(PROFILE)
    assert spec.name == "cpu"
    assert spec.fp16_tflops == pytest.approx(0.12) and spec.mem_bw_gbs == 9.0
    assert spec.max_power_w == pytest.approx(2 * 3.80)
    assert spec.idle_power_w == pytest.approx(2 * 0.64)
    assert spec.embodied_kg > 0 and "measured at 1 thread" in spec.source
    assert "torch 0" in spec.source and "smollm2-135m" in spec.source


def test_a_profile_is_validated_and_round_trips() -> None:
    assert cpu.CpuProfile.from_dict(PROFILE.to_dict()) == PROFILE
    with pytest.raises(ConfigError, match="stream_gbs"):
        dataclasses.replace(PROFILE, stream_gbs=0.0)
    with pytest.raises(ConfigError, match="layer_s"):
        dataclasses.replace(PROFILE, layer_s=-1.0)
    with pytest.raises(ConfigError, match="missing gemm_gflops"):
        cpu.CpuProfile.from_dict({k: v for k, v in PROFILE.to_dict().items()
                                  if k != "gemm_gflops"})  # fmt: skip


def test_the_cpu_device_needs_a_registered_profile() -> None:
    from greenllm.carbon import register_gpu

    register_gpu(cpu.cpu_spec(PROFILE), replace=True)
    monkey = cpu._REGISTERED[:]
    cpu._REGISTERED.clear()
    try:
        with pytest.raises(ConfigError, match="register_cpu"):
            StepModel("smollm2-135m", "cpu")
    finally:
        cpu._REGISTERED[:] = monkey
        unregister_gpu("cpu")


def test_reregistering_replaces_the_cached_step_model(registered) -> None:  # type: ignore[no-untyped-def]
    first = step_model("smollm2-135m", "cpu")
    assert first.efficiency == PROFILE.efficiency
    slower = dataclasses.replace(PROFILE, layer_s=1e-3)
    cpu.register_cpu(slower)
    again = step_model("smollm2-135m", "cpu")
    assert again.efficiency == slower.efficiency
    assert again.time_s(1) - first.time_s(1) == pytest.approx(30 * (1e-3 - 2.5e-4))


def test_the_cpu_step_uses_the_same_roofline_with_its_own_efficiency(registered) -> None:  # type: ignore[no-untyped-def]
    sm = StepModel("smollm2-135m", registered)
    e = PROFILE.efficiency
    assert (e.compute, e.memory, e.roofline_p) == (1.0, 1.0, 1.0)
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
