"""Roofline step-time model: physics, the fast path, memory capacity and fidelity."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.backends.sim import StepModel, forward_time_s, get_model
from greenllm.backends.sim import calibration as cal
from greenllm.backends.sim import efficiency as eff
from greenllm.backends.sim.roofline import (
    gpu_memory_bytes,
    kv_capacity_tokens,
    step_cost,
    step_model,
)
from greenllm.carbon import GPUSpec, get_gpu
from greenllm.errors import ConfigError, InfeasibleError

MODELS = ("llama-2-7b", "llama-1b", "llama-300m")
GPUS = ("T4", "V100", "A100", "A100-80GB", "H100", "L4")

# Strategies other tests may reuse.
models_st = st.sampled_from(MODELS)
gpus_st = st.sampled_from(GPUS)
tokens_st = st.integers(min_value=1, max_value=8192)
context_st = st.integers(min_value=0, max_value=32_768)
batch_st = st.integers(min_value=1, max_value=256)


@settings(max_examples=150, deadline=None)
@given(models_st, gpus_st, tokens_st, tokens_st, context_st, batch_st)
def test_monotone_in_new_tokens(m: str, g: str, n1: int, n2: int, c: int, b: int) -> None:
    lo, hi = sorted((n1, n2))
    b = min(b, lo)
    assert forward_time_s(m, g, lo, c, b) <= forward_time_s(m, g, hi, c, b)


@settings(max_examples=150, deadline=None)
@given(models_st, gpus_st, tokens_st, context_st, context_st, batch_st)
def test_monotone_in_context(m: str, g: str, n: int, c1: int, c2: int, b: int) -> None:
    lo, hi = sorted((c1, c2))
    b = min(b, n)
    assert forward_time_s(m, g, n, lo, b) <= forward_time_s(m, g, n, hi, b)


@settings(max_examples=150, deadline=None)
@given(models_st, gpus_st, st.integers(1, 512), context_st, batch_st, batch_st)
def test_monotone_in_batch(m: str, g: str, k: int, c: int, b1: int, b2: int) -> None:
    """More sequences, each bringing ``k`` new tokens on ``c`` of context, take longer.

    (With the total of new tokens fixed, more sequences can be faster: causal attention over
    8 x 256 tokens is cheaper than over 1 x 2048.)"""
    lo, hi = sorted((b1, b2))
    assert forward_time_s(m, g, k * lo, c, lo) <= forward_time_s(m, g, k * hi, c, hi)


@settings(max_examples=200, deadline=None)
@given(models_st, gpus_st, tokens_st, context_st, batch_st)
def test_fast_path_equals_forward_time(m: str, g: str, n: int, c: int, b: int) -> None:
    b = min(b, n)
    sm = step_model(m, g)
    t = forward_time_s(m, g, n, c, b)
    assert sm.time_s(n, b * c, b) == t
    assert sm.time_util(n, b * c, b)[0] == t
    assert step_cost(m, g, n, c, b).time_s == pytest.approx(t, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(models_st, gpus_st, tokens_st, context_st, batch_st)
def test_soft_roofline_between_max_and_sum(m: str, g: str, n: int, c: int, b: int) -> None:
    b = min(b, n)
    s = step_cost(m, g, n, c, b)
    t0 = step_model(m, g).overhead_s
    assert max(s.compute_s, s.memory_s) + t0 <= s.time_s * (1 + 1e-12)
    assert s.time_s <= (s.compute_s + s.memory_s + t0) * (1 + 1e-12)
    assert 0.0 <= s.utilisation <= 1.0


def test_decode_memory_bound_prefill_compute_bound() -> None:
    decode = step_cost("llama-2-7b", "A100", 1, context_tokens=160)
    prefill = step_cost("llama-2-7b", "A100", 2048)
    assert not decode.compute_bound and decode.memory_s > 50 * decode.compute_s
    assert prefill.compute_bound and prefill.compute_s > 3 * prefill.memory_s


def test_flops_and_bytes_follow_textbook_counts() -> None:
    m = get_model("llama-2-7b")
    # prefill: ~2 x params FLOPs per token (Kaplan et al. 2020), attention adds a few percent
    f = step_cost(m, "A100", 2048).flops
    assert 1.0 <= f / (2 * m.n_params * 2048) <= 1.06
    # decode at no context reads the weights once, the input-embedding table only for the row
    # looked up (activations and that row: < 1 % more)
    d = step_cost(m, "A100", 1)
    read = m.weight_bytes - m.vocab_size * m.hidden_size * 2
    assert read <= d.bytes <= 1.01 * read
    # each token of context adds its KV cache, 512 KiB for Llama-2-7B fp16
    extra = step_cost(m, "A100", 1, context_tokens=1000).bytes - d.bytes
    assert extra == pytest.approx(1000 * 512 * 1024)


@pytest.mark.parametrize("m", MODELS)
@pytest.mark.parametrize(("n", "c", "b"), [(1, 160, 1), (32, 32 * 300, 32), (2048, 0, 1)])
def test_newer_gpu_is_faster(m: str, n: int, c: int, b: int) -> None:
    times = [forward_time_s(m, g, n, c // b, b) for g in ("T4", "V100", "A100", "H100")]
    assert times == sorted(times, reverse=True)


def test_bigger_model_is_slower() -> None:
    for g in ("T4", "V100", "A100"):
        for n in (1, 160, 2048):
            times = [forward_time_s(m, g, n) for m in MODELS]
            assert times == sorted(times, reverse=True)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"new_tokens": 0}, "new_tokens"),
        ({"new_tokens": 4, "batch": 5}, "batch"),
        ({"context_tokens": -1}, "context_tokens"),
        ({"new_tokens": float("nan")}, "new_tokens"),
        ({"batch": True}, "batch"),
    ],
)
def test_bad_step_is_config_error(kw: dict[str, float], match: str) -> None:
    args = {"new_tokens": 8, "context_tokens": 0, "batch": 1, **kw}
    with pytest.raises(ConfigError, match=match):
        forward_time_s("llama-2-7b", "A100", **args)


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="llama-2-7b"):
        forward_time_s("llama-9000", "A100", 1)
    with pytest.raises(ConfigError, match="A100"):
        forward_time_s("llama-2-7b", "Z9000", 1)


def test_efficiency_override() -> None:
    base = StepModel("llama-2-7b", "A100")
    fast = StepModel("llama-2-7b", "A100", eff.Efficiency(0.5, 1.0, 0.0, 50.0, 0.0))
    assert fast.time_s(1, 0, 1) < base.time_s(1, 0, 1)
    read = step_cost("llama-2-7b", "A100", 1).bytes
    assert fast.time_s(1, 0, 1) == pytest.approx(read / 1555e9, rel=0.01)  # data-sheet roof
    with pytest.raises(ConfigError):
        StepModel("llama-2-7b", "A100", eff.Efficiency(0.0, 1.0))
    with pytest.raises(ConfigError, match="layer_s"):
        StepModel("llama-2-7b", "A100", eff.Efficiency(0.5, 1.0, layer_s=-1e-6))


def test_fixed_time_is_host_plus_layers() -> None:
    # the per-layer GPU time makes a model with more layers pay more fixed time per step
    for m in MODELS:
        sm = step_model(m, "A100")
        layers = get_model(m).n_layers
        assert sm.overhead_s == pytest.approx(eff.OVERHEAD_S + layers * eff.LAYER_S)
        # gpu_time_s leaves the host's overhead out
        f, b = sm.flops(16), sm.bytes(16)
        assert sm.gpu_time_s(f, b) == pytest.approx(sm.time_s(16) - eff.OVERHEAD_S)


# --- memory ------------------------------------------------------------------------------------
def test_kv_capacity_by_hand_a100() -> None:
    # 0.9 x 40 GiB - 0.5 GiB CUDA context - 13,476,831,232 B weights
    # - activations 2048 x (3 x 4096 + 2 x 4096 + 3 x 11008) x 2 B - 256 x 32000 x 4 B logits,
    # over 524,288 B of KV per token
    free = 0.9 * 40 * 2**30 - 2**29 - 13_476_831_232 - 2048 * 53_504 * 2 - 256 * 32_000 * 4
    assert kv_capacity_tokens("llama-2-7b", "A100") == int(free // 524_288)


def test_t4_reports_ecc_reserved_memory() -> None:
    assert gpu_memory_bytes("T4") == 15360 * 2**20
    assert gpu_memory_bytes("A100") == 40 * 2**30


def test_7b_barely_fits_t4_and_not_at_lower_utilisation() -> None:
    tokens = kv_capacity_tokens("llama-2-7b", "T4")
    assert 100 < tokens < 2048  # fits, but less than one 2,048-token context
    with pytest.raises(InfeasibleError) as err:
        kv_capacity_tokens("llama-2-7b", "T4", gpu_memory_utilization=0.8)
    msg = str(err.value)
    assert "llama-2-7b" in msg and "T4" in msg and "GiB" in msg


def test_draft_on_same_gpu_takes_memory() -> None:
    alone = kv_capacity_tokens("llama-2-7b", "A100")
    shared = kv_capacity_tokens("llama-2-7b", "A100", other_models=("llama-1b",))
    assert shared < alone


def test_weights_do_not_fit_small_gpu() -> None:
    small = GPUSpec.create("test-8gb", vram_gb=8, mem_bw_gbs=300, die_area_mm2=300,
                           max_power_w=100, node_nm=12, fp16_tflops=30, year=2019,
                           idle_power_w=10, memory_type="GDDR6")  # fmt: skip
    with pytest.raises(InfeasibleError, match=r"weights 12\.55 GiB"):
        kv_capacity_tokens("llama-2-7b", small)
    assert kv_capacity_tokens("llama-1b", small) > 100_000


@pytest.mark.parametrize("u", [0, -0.1, 1.5, float("nan"), True])
def test_bad_memory_utilisation(u: float) -> None:
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        kv_capacity_tokens("llama-1b", "A100", gpu_memory_utilization=u)


# --- fidelity ----------------------------------------------------------------------------------
# docs/simulator-model.md: every per-operator point (GPU time of a forward pass, A100, H100,
# A40, 1-2,048 tokens) within 15 %, every end-to-end point within 20 %, held-out mean
# |error| <= 10 %.
@pytest.mark.parametrize("point", cal.POINTS, ids=lambda p: p.name)
def test_calibration_point_within_documented_error(point: cal.CalibrationPoint) -> None:
    bound = 0.15 if point.kind == "layers" else 0.20
    assert abs(cal.predict(point) / point.measured - 1) <= bound


def test_held_out_mean_error() -> None:
    held = [abs(cal.predict(p) / p.measured - 1) for p in cal.POINTS if p.held_out]
    assert len(held) >= 40
    assert sum(held) / len(held) <= 0.10
    for gpu in ("A100-80GB", "H100", "A40"):  # each GPU has held-out per-operator points
        assert any(p.held_out and p.kind == "layers" and p.gpu == gpu for p in cal.POINTS)


def test_per_token_decode_latency_within_documented_error() -> None:
    # gpt-fast 104.9 tok/s and LMDeploy 100.02 tok/s (Llama-2-7B, A100-80GB, batch 1) decode
    # with compiled loops / CUDA graphs: their per-token time lies between the model's GPU time
    # of a decode step (~100 tokens of context) and that plus the host's per-step overhead,
    # and within 15 % of the GPU time
    step = forward_time_s("llama-2-7b", "A100-80GB", 1, 100)
    gpu = step - eff.OVERHEAD_S
    for tok_s in (104.9, 100.02):
        assert gpu <= 1 / tok_s <= step
        assert abs(gpu * tok_s - 1) <= 0.15


def test_fit_reproduces_constants() -> None:
    c = cal.fit()
    assert c.k_compute == pytest.approx(eff.K_COMPUTE, rel=2e-3)
    assert c.layer_s == pytest.approx(eff.LAYER_S, rel=2e-3)
    assert c.overhead_s == pytest.approx(eff.OVERHEAD_S, rel=2e-3)
    assert c.roofline_p == pytest.approx(eff.ROOFLINE_P, rel=2e-3)


def test_every_catalog_gpu_has_plausible_efficiencies() -> None:
    from greenllm.carbon import list_gpus

    for name in list_gpus():
        e = eff.efficiency_for(get_gpu(name))
        assert 0.2 < e.compute <= 1.0 and 0.5 < e.memory <= 1.0, name
        assert math.isfinite(forward_time_s("llama-1b", name, 16, 100, 4))


def test_report_lists_every_point() -> None:
    text = cal.report()
    assert all(p.name in text for p in cal.POINTS if p.kind != "layers")
    # per-operator points: one row of measured times per (GPU, model), one column per count
    for p in cal.POINTS:
        if p.kind == "layers":
            assert f"| {p.gpu} | {p.model} | measured (ms) |" in text
            assert f"| {1e3 * p.measured:.4g} |" in text
