"""The four configurations: placement, memory checks, link traffic, speculation, overlap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.backends.sim import (
    ACCEPTANCE_RATES,
    DEFAULT_ACCEPTANCE_RATE,
    Link,
    SimBackend,
    SimOptions,
    acceptance_rate_for,
    forward_time_s,
    get_model,
)
from greenllm.backends.sim.instance import BusyLog
from greenllm.backends.sim.options import plan
from greenllm.backends.sim.roofline import kv_capacity_tokens, step_model
from greenllm.backends.sim.speculation import SpecTwoGPUTimeline
from greenllm.config import Configuration, RequestSize, Workload
from greenllm.errors import ConfigError, InfeasibleError
from greenllm.workloads import RequestSet

SIZE = RequestSize(input_tokens=160, output_tokens=140)
WORKLOAD = Workload(application="sharegpt", request_size=SIZE, qps=1.0)
STANDALONE = Configuration(kind="standalone")
SPEC = Configuration(kind="spec_decode", draft_model="llama-1b")
DPD = Configuration(kind="dpd", old_gpu="T4")
DSD = Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b")
TARGET = get_model("llama-2-7b")


def one(inp: int = 160, out: int = 140, at: float = 0.5) -> RequestSet:
    return RequestSet(np.array([at]), np.array([inp]), np.array([out]))


def configurations() -> st.SearchStrategy[Configuration]:
    """Any of the paper's configurations: A100 + T4/V100, 1B/300M drafts, 1-100 Gbps."""
    old = st.sampled_from(["T4", "V100"])
    draft = st.sampled_from(["llama-1b", "llama-300m"])
    gbps = st.floats(1, 100)
    k = st.integers(1, 8)
    return st.one_of(
        st.just(STANDALONE),
        st.builds(
            lambda d, k: Configuration(kind="spec_decode", draft_model=d, num_speculative_tokens=k),
            draft,
            k,
        ),
        st.builds(lambda o, g: Configuration(kind="dpd", old_gpu=o, link_gbps=g), old, gbps),
        st.builds(
            lambda o, d, g, k: Configuration(
                kind="dsd", old_gpu=o, draft_model=d, link_gbps=g, num_speculative_tokens=k
            ),
            old,
            draft,
            gbps,
            k,
        ),
    )


def test_roles_and_gpu_order() -> None:
    be = SimBackend()
    expect = {
        STANDALONE: ("target",),
        SPEC: ("target+draft",),
        DPD: ("prefill", "decode"),
        DSD: ("target", "draft"),
    }
    for cfg, roles in expect.items():
        r = be.run(cfg, WORKLOAD, requests=one())
        assert tuple(g.role for g in r.gpus) == roles
        assert tuple(g.gpu for g in r.gpus) == cfg.gpus
        moved = cfg.kind.value in ("dpd", "dsd")
        assert (r.link_bytes > 0) == moved and (r.extra["link_bytes_per_request"] > 0) == moved


def test_bad_names_fail_before_simulating() -> None:
    be = SimBackend()
    with pytest.raises(ConfigError, match="unknown GPU 'B200X'"):
        be.run(Configuration(kind="standalone", new_gpu="B200X"), WORKLOAD, requests=one())
    with pytest.raises(ConfigError, match="unknown model 'llama-99b'"):
        be.run(Configuration(kind="standalone", target_model="llama-99b"), WORKLOAD, requests=one())
    with pytest.raises(ConfigError, match="unknown model"):
        be.run(
            Configuration(kind="dsd", old_gpu="T4", draft_model="nope"), WORKLOAD, requests=one()
        )


def test_model_that_does_not_fit_is_infeasible() -> None:
    # llama-2-7b fp16 (13.5 GB) on a 16 GB T4 fits only with vLLM's 0.9 memory share
    assert kv_capacity_tokens("llama-2-7b", "T4") > 0
    tight = SimBackend(gpu_memory_utilization=0.8)
    with pytest.raises(InfeasibleError, match="T4"):
        tight.run(DPD, WORKLOAD, requests=one())
    with pytest.raises(InfeasibleError):
        plan(
            Configuration(kind="dpd", old_gpu="T4", target_model="llama-2-7b"),
            SimOptions(gpu_memory_utilization=0.5),
        )


def test_spec_decode_memory_holds_both_models() -> None:
    p = plan(SPEC, SimOptions())
    both = kv_capacity_tokens("llama-2-7b", "A100", other_models=("llama-1b",))
    assert p.kv_capacity_tokens == (both,)
    assert both < kv_capacity_tokens("llama-2-7b", "A100")
    dsd = plan(DSD, SimOptions())  # each model on its own GPU
    assert dsd.kv_capacity_tokens == (
        kv_capacity_tokens("llama-2-7b", "A100"),
        kv_capacity_tokens("llama-1b", "T4"),
    )


def test_input_rejected_by_the_config_models() -> None:
    with pytest.raises(ConfigError, match="qps"):
        Workload(application="x", request_size=SIZE, qps=0)
    with pytest.raises(ConfigError, match="link_gbps"):
        Configuration(kind="dpd", old_gpu="T4", link_gbps=0)


# --- DPD ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gbps", [1.0, 16.0, 100.0])
def test_dpd_moves_the_prompt_kv_once_and_pays_the_link(gbps: float) -> None:
    latency = 50e-6
    be = SimBackend(link_latency_s=latency)
    cfg = Configuration(kind="dpd", old_gpu="V100", link_gbps=gbps)
    r = be.run(cfg, WORKLOAD, requests=one(), record_token_times=True)
    kv = TARGET.kv_cache_bytes(160)
    assert kv == 2 * 32 * 32 * 128 * 2 * 160
    assert r.link_bytes == kv and r.extra["link_bytes_per_request"] == kv
    times = r.requests.tokens_of(0)
    assert times[0] - 0.5 == pytest.approx(forward_time_s("llama-2-7b", "A100", 160))
    link_s = kv * 8 / (gbps * 1e9) + latency
    first_decode = forward_time_s("llama-2-7b", "V100", 1, 160)
    assert times[1] - times[0] == pytest.approx(link_s + first_decode, rel=1e-9)
    later = [forward_time_s("llama-2-7b", "V100", 1, 160 + j) for j in range(1, 139)]
    assert np.allclose(np.diff(times[1:]), later)


@pytest.mark.parametrize("old", ["T4", "V100"])
def test_dpd_decode_memory_limits_concurrency(old: str) -> None:
    cap = kv_capacity_tokens("llama-2-7b", old)  # what the 7B weights leave of 16 GB
    reqs = RequestSet(np.zeros(10), np.full(10, 160), np.full(10, 140))
    cfg = Configuration(kind="dpd", old_gpu=old)
    r = SimBackend().run(cfg, WORKLOAD, requests=reqs, record_token_times=True)
    starts = np.array([r.requests.tokens_of(i)[1] for i in range(10)])  # first decode token
    ends = r.requests.finish_s
    most = max(int(np.sum((starts <= t) & (ends > t))) for t in starts)
    assert 1 <= most == min(cap // 304, 10)  # 160 + 140 tokens reserve 19 blocks of 16
    assert r.link_bytes == 10 * TARGET.kv_cache_bytes(160)


# --- speculative decoding ----------------------------------------------------------------------


def test_spec_decode_acceptance_extremes() -> None:
    reqs = RequestSet(np.array([0.0, 0.1]), np.array([100, 50]), np.array([41, 30]))
    none = SimBackend(acceptance_rate=0.0).run(
        SPEC, WORKLOAD, requests=reqs, record_token_times=True
    )
    k = SPEC.num_speculative_tokens
    assert none.spec_accepted_tokens == 0
    assert none.spec_proposed_tokens == k * (40 + 29)  # one token per step
    all_ = SimBackend(acceptance_rate=1.0).run(SPEC, WORKLOAD, requests=reqs)
    assert all_.spec_proposed_tokens == k * (8 + 6)  # ceil(40 / 5), ceil(29 / 5)
    assert all_.requests.finish_s.max() < none.requests.finish_s.max()
    # with no acceptance every decode token comes at its own step
    assert np.all(np.diff(none.requests.tokens_of(0)) > 0)


def test_spec_decode_tokens_per_step_follow_the_expectation() -> None:
    a = ACCEPTANCE_RATES[("llama-1b", "llama-2-7b")]
    reqs = RequestSet.poisson(2.0, SIZE, duration_s=60, seed=4)
    r = SimBackend().run(SPEC, WORKLOAD, requests=reqs)
    k = SPEC.num_speculative_tokens
    e = (1 - a ** (k + 1)) / (1 - a)
    assert r.extra["expected_tokens_per_step"] == pytest.approx(e)
    expected_rate = (e - 1) / k  # E[X] / K
    assert r.acceptance_rate == pytest.approx(expected_rate, rel=0.05)
    decode_tokens = int((reqs.output_tokens - 1).sum())
    steps = r.spec_proposed_tokens // k
    assert decode_tokens / steps == pytest.approx(e, rel=0.05)


def test_acceptance_rate_table_and_overrides(caplog: pytest.LogCaptureFixture) -> None:
    assert acceptance_rate_for("llama-1b", "llama-2-7b") == 0.70
    assert acceptance_rate_for("llama-300m", "llama-2-7b") == 0.60
    assert acceptance_rate_for("llama-1b", "llama-2-7b", 0.9) == 0.9
    assert acceptance_rate_for("llama-1b", "llama-2-7b", {("llama-1b", "llama-2-7b"): 0.3}) == 0.3
    assert acceptance_rate_for("llama-300m", "llama-2-7b", {("x", "y"): 0.3}) == 0.6
    assert acceptance_rate_for("llama-300m", "llama-1b") == DEFAULT_ACCEPTANCE_RATE
    assert "no acceptance rate" in caplog.text
    with pytest.raises(ConfigError, match="acceptance_rate"):
        acceptance_rate_for("llama-1b", "llama-2-7b", 1.2)


# --- DSD ---------------------------------------------------------------------------------------


def test_dsd_link_bytes_per_step() -> None:
    reqs = RequestSet.poisson(3.0, SIZE, duration_s=20, seed=1)
    r = SimBackend().run(DSD, WORKLOAD, requests=reqs)
    k, vocab = DSD.num_speculative_tokens, TARGET.vocab_size
    seq_steps = r.spec_proposed_tokens // k
    assert r.extra["link_bytes_draft_to_target"] == seq_steps * (k * 4 + k * vocab * 2)
    back = seq_steps * 8 + 4 * int(reqs.input_tokens.sum())  # verdicts + prompts to the draft
    assert r.extra["link_bytes_target_to_draft"] == back
    assert r.link_bytes == r.extra["link_bytes_draft_to_target"] + back
    assert r.extra["link_bytes_per_request"] == pytest.approx(r.link_bytes / len(reqs))


def test_dsd_single_step_timeline_exact() -> None:
    """One request, one decode step (output 2): verdict -> draft -> ids -> target -> verify."""
    lat, gbps, k, vocab = 1e-4, 1.0, 4, TARGET.vocab_size
    cfg = Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b", link_gbps=gbps)
    req = one(inp=100, out=2, at=0.0)
    wire = 8 / (gbps * 1e9)
    prefill_t = forward_time_s("llama-2-7b", "A100", 100)
    prefill_d = forward_time_s("llama-1b", "T4", 100)
    ids_at = lambda t: t + lat + k * 4 * wire  # noqa: E731
    for overlap in (True, False):
        r = SimBackend(acceptance_rate=0.0, link_latency_s=lat, dsd_overlap=overlap).run(
            cfg, WORKLOAD, requests=req
        )
        t0 = prefill_t  # the target's prefill does not wait for the draft
        assert r.requests.first_token_s[0] == pytest.approx(t0)
        draft_free = lat + 100 * 4 * wire + prefill_d  # prompt ids, then the draft's prefill
        ds = max(t0 + lat + 8 * wire, draft_free)
        de = ds + sum(forward_time_s("llama-1b", "T4", 1, 100 + j) for j in range(k))
        ids = ids_at(de)
        probs = de + k * 4 * wire + k * vocab * 2 * wire + lat
        # the verification scores all K + 1 rows (its LM head runs on each)
        target = step_model("llama-2-7b", "A100").time_s(k + 1, 100, 1, k + 1)
        end = max(ids + target, probs) if overlap else probs + target
        assert r.requests.finish_s[0] == pytest.approx(end, rel=1e-9)


@given(
    gbps=st.floats(1, 100),
    b=st.integers(0, 256),
    ctx=st.integers(0, 100_000),
    ctok=st.integers(0, 2048),
    k=st.integers(1, 8),
    old=st.sampled_from(["T4", "V100"]),
)
def test_dsd_overlap_step_is_never_slower(gbps, b, ctx, ctok, k, old) -> None:
    if b == 0 and ctok == 0:
        return
    ends = {}
    for overlap in (True, False):
        tl = SpecTwoGPUTimeline(
            step_model("llama-2-7b", "A100"),
            step_model("llama-1b", old),
            k,
            TARGET.vocab_size,
            Link(gbps),
            Link(gbps),
            overlap,
            BusyLog(),
            BusyLog(),
        )
        ends[overlap] = tl.step(1.0, b, ctx, ctok, ctok // 2, 1 if ctok else 0)
    assert ends[True][0] <= ends[False][0]
    if b:  # the overlap hides min(target forward, probability transfer)
        probs_s = k * TARGET.vocab_size * 2 * b * 8 / (gbps * 1e9)
        chunks = 1 if ctok else 0  # the verification scores K + 1 rows per sequence
        target_s = step_model("llama-2-7b", "A100").time_util(
            b * (k + 1) + ctok, ctx + ctok // 2, b + chunks, b * (k + 1) + chunks
        )[0]
        saved = ends[False][0] - ends[True][0]
        assert saved == pytest.approx(min(target_s, probs_s), rel=1e-6, abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(
    gbps=st.floats(1, 100),
    inp=st.integers(1, 2000),
    out=st.integers(1, 300),
    seed=st.integers(0, 50),
)
def test_dsd_overlap_never_slower_for_a_request(gbps, inp, out, seed) -> None:
    cfg = Configuration(kind="dsd", old_gpu="V100", draft_model="llama-300m", link_gbps=gbps)
    req = one(inp, out)
    on = SimBackend(dsd_overlap=True).run(cfg, WORKLOAD, requests=req, seed=seed)
    off = SimBackend(dsd_overlap=False).run(cfg, WORKLOAD, requests=req, seed=seed)
    assert on.requests.finish_s[0] <= off.requests.finish_s[0]


@settings(max_examples=8, deadline=None)
@given(gbps=st.floats(1, 100), qps=st.floats(0.2, 4), seed=st.integers(0, 50))
def test_dsd_overlap_not_slower_under_load(gbps: float, qps: float, seed: int) -> None:
    """Under load a shorter step can change which requests share a batch (a scheduling
    anomaly), so the mean latency may differ by a hair either way; never by more."""
    cfg = Configuration(kind="dsd", old_gpu="V100", draft_model="llama-300m", link_gbps=gbps)
    reqs = RequestSet.poisson(qps, SIZE, duration_s=8, seed=seed)
    if len(reqs) == 0:
        return
    on = SimBackend(dsd_overlap=True).run(cfg, WORKLOAD, requests=reqs, seed=seed)
    off = SimBackend(dsd_overlap=False).run(cfg, WORKLOAD, requests=reqs, seed=seed)
    e2e = lambda r: np.mean(r.requests.finish_s - reqs.arrival_s)  # noqa: E731
    assert e2e(on) <= e2e(off) * 1.01  # 300 random cases: worst +0.27%


def test_dsd_overlap_strictly_faster_on_a_slow_link() -> None:
    cfg = Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b", link_gbps=1.0)
    reqs = RequestSet.poisson(1.0, SIZE, duration_s=10, seed=2)
    on = SimBackend(dsd_overlap=True).run(cfg, WORKLOAD, requests=reqs)
    off = SimBackend(dsd_overlap=False).run(cfg, WORKLOAD, requests=reqs)
    assert np.nanmean(on.requests.tpot_s) < 0.9 * np.nanmean(off.requests.tpot_s)
    assert np.all(on.requests.finish_s < off.requests.finish_s)
