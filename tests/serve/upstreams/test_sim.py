"""The ``sim`` upstream: chunks, deterministic text, the virtual clock, devices, modelled power,
cancellation, counters, errors and the lazy upstream registry. Each test takes well under a
second of wall time (high time scales)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from greenllm.backends.sim import SimBackend
from greenllm.config import Configuration, RequestSize, Workload
from greenllm.energy import ModelledSampler, power_model
from greenllm.errors import ConfigError
from greenllm.serve.upstream import Device, GenerationRequest, TokenChunk, Upstream, UpstreamError
from greenllm.serve.upstreams import UPSTREAMS, upstream_class
from greenllm.serve.upstreams.sim import SimUpstream, prompt_token_count
from greenllm.workloads import RequestSet, approx_token_count

T = TypeVar("T")

STANDALONE = Configuration(kind="standalone")
SPEC = Configuration(kind="spec_decode", draft_model="llama-1b")
DPD = Configuration(kind="dpd", old_gpu="V100")
DSD = Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b")


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


def req(rid: str = "r", n: int = 20, **kw: Any) -> GenerationRequest:
    kw.setdefault("prompt", "Write a haiku about old GPUs serving new models.")
    return GenerationRequest(rid, max_tokens=n, **kw)


async def chunks(up: Upstream, request: GenerationRequest) -> list[TokenChunk]:
    return [c async for c in up.stream(request)]


async def serve(up: SimUpstream, *requests: GenerationRequest) -> list[list[TokenChunk]]:
    await up.start()
    try:
        return list(await asyncio.gather(*(chunks(up, r) for r in requests)))
    finally:
        await up.stop()


# ---- the registry -----------------------------------------------------------------------------
def test_registry_is_lazy_and_names_the_upstreams() -> None:
    assert set(UPSTREAMS) == {"sim", "torch", "vllm"}
    assert upstream_class("sim") is SimUpstream
    with pytest.raises(ConfigError, match="sim, torch, vllm"):
        upstream_class("tgi")


# ---- streaming --------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [STANDALONE, SPEC, DPD, DSD], ids=lambda c: c.kind.value)
def test_streams_max_tokens_with_a_final_chunk(cfg: Configuration) -> None:
    up = SimUpstream(cfg, time_scale=200)
    r = req(n=33)
    (out,) = run(serve(up, r))
    assert sum(len(c.token_ids) for c in out) == 33
    assert [c.finish_reason for c in out] == [None] * (len(out) - 1) + ["length"]
    assert out[-1].prompt_tokens == approx_token_count(r.prompt)  # type: ignore[arg-type]
    assert out[-1].completion_tokens == 33
    times = [c.time_s for c in out]
    assert times == sorted(times)
    assert all(len(c.text.split()) == len(c.token_ids) for c in out)
    if cfg.kind.value in ("spec_decode", "dsd"):
        assert any(len(c.token_ids) > 1 for c in out)  # accepted drafts come out together


def test_ttft_and_tpot_on_the_virtual_clock_are_the_simulators() -> None:
    """The gateway measures TTFT from ``clock_s()`` at receipt to the first chunk's time."""
    prompt, n = 256, 64
    r = GenerationRequest("x", max_tokens=n, prompt=tuple(range(prompt)))
    w = Workload(application="sharegpt", qps=1.0,
                 request_size=RequestSize(input_tokens=prompt, output_tokens=n))  # fmt: skip
    alone = SimBackend().run(
        STANDALONE, w, requests=RequestSet(np.zeros(1), np.array([prompt]), np.array([n]))
    )
    for ts in (10.0, 100.0):
        up = SimUpstream(STANDALONE, time_scale=ts)

        async def main(up: SimUpstream = up) -> tuple[float, list[TokenChunk]]:
            await up.start()
            t0 = up.clock_s()
            out = await chunks(up, r)
            await up.stop()
            return t0, out

        t0, out = run(main())
        # t0 is read some microseconds of wall time (x ts) before the request is submitted
        ttft = out[0].time_s - t0
        assert alone.requests.ttft_s[0] - 1e-5 <= ttft <= alone.requests.ttft_s[0] + 1e-3 * ts
        tpot = (out[-1].time_s - out[0].time_s) / (n - 1)
        assert tpot == pytest.approx(alone.requests.tpot_s[0], rel=1e-6)
        assert out[0].time_s <= up.clock_s()


def test_prompt_token_counts() -> None:
    assert prompt_token_count(req(prompt=(5, 6, 7))) == 3
    assert prompt_token_count(req(prompt="")) == 1
    text = "one two three, four"
    assert prompt_token_count(req(prompt=text)) == approx_token_count(text)
    msgs = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": text})
    chat = GenerationRequest("c", max_tokens=5, messages=msgs)
    assert prompt_token_count(chat) == approx_token_count("Be brief.\n" + text)


def test_text_is_deterministic_for_greedy_requests_and_seeds() -> None:
    def text(*requests: GenerationRequest) -> list[str]:
        out = run(serve(SimUpstream(STANDALONE, time_scale=500), *requests))
        return ["".join(c.text for c in cs) for cs in out]

    g1, g2, other = text(req("a", temperature=0.0), req("b", temperature=0.0),
                         req("c", temperature=0.0, prompt="another prompt"))  # fmt: skip
    assert g1 == g2 != other
    s1, s2 = text(req("a", seed=7), req("b", seed=7))
    assert s1 == s2
    u1, u2 = text(req("a"), req("b"))
    assert u1 != u2  # sampled, no seed: per request id
    assert text(req("a"))[0] == u1


# ---- devices and power --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cfg", "devices"),
    [
        (STANDALONE, (Device("A100", "target"),)),
        (SPEC, (Device("A100", "target+draft"),)),
        (DPD, (Device("A100", "prefill"), Device("V100", "decode"))),
        (DSD, (Device("A100", "target"), Device("T4", "draft"))),
    ],
    ids=["standalone", "spec", "dpd", "dsd"],
)
def test_devices_follow_the_configuration(cfg: Configuration, devices: tuple[Device, ...]) -> None:
    up = SimUpstream(cfg)
    assert up.devices == devices
    assert up.backend == "sim" and up.energy_source == "modelled"
    assert up.model == "llama-2-7b"
    s = up.power_sampler()
    assert isinstance(s, ModelledSampler) and s is up.power_sampler()
    s.start()
    try:
        assert s.devices == tuple(d.key for d in devices)
    finally:
        s.stop()


def test_power_sampler_integrates_the_power_model() -> None:
    """Idle: exactly idle power x virtual seconds. Decoding: the sampler's trapezoid integral
    against LiveSim's exact modelled energy over the same window (steps run back to back and
    the utilisation drifts slowly, so 2% covers the sampling at a 0.5 virtual s period)."""
    cfg = Configuration(kind="standalone")
    idle_w = power_model("A100").idle_w

    async def main() -> None:
        up = SimUpstream(cfg, time_scale=50)
        key = up.devices[0].key
        sampler = up.power_sampler()
        await up.start()
        sampler.start()
        try:
            sampler.begin_window("idle")
            await asyncio.sleep(0.1)
            m = sampler.end_window("idle")
            assert m.energy_j[key] == pytest.approx(idle_w * m.duration_s, rel=1e-9)
            assert m.duration_s == pytest.approx(5.0, rel=0.5)  # 0.1 wall s x 50

            stream = up.stream(req(n=2000, prompt=tuple(range(500))))
            async for c in stream:
                if (c.completion_tokens or 0) == 0 and c.time_s - m.end_s > 0:
                    break
            live = up.live
            e0 = live.energy_j()[0]
            sampler.begin_window("busy")
            await asyncio.sleep(0.2)
            busy = sampler.end_window("busy")
            e1 = live.energy_j()[0]
            await stream.aclose()
            assert busy.energy_j[key] == pytest.approx(e1 - e0, rel=0.02)
            assert busy.mean_power_w[key] > idle_w * 1.05
            assert busy.mean_power_w[key] <= power_model("A100").max_w
        finally:
            sampler.stop()
            await up.stop()

    run(main())


# ---- cancellation and counters ----------------------------------------------------------------
def test_closing_the_stream_cancels_and_frees_capacity() -> None:
    cfg = Configuration(kind="standalone", new_gpu="T4")  # 438 KV tokens of llama-2-7b

    async def main() -> None:
        up = SimUpstream(cfg, time_scale=100)
        cap = up.live.plan.kv_capacity_tokens[0]
        await up.start()
        big = req("big", n=300, prompt=tuple(range(100)))
        s = up.stream(big)
        first = await s.__anext__()
        assert first.token_ids
        waiting = asyncio.create_task(chunks(up, req("next", n=200, prompt=tuple(range(100)))))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await s.aclose()
        out = await waiting
        assert sum(len(c.token_ids) for c in out) == 200
        assert up.live.kv_free_tokens() == (cap,)
        st = up.stats()
        assert st.extra["requests_cancelled"] == 1 and st.extra["requests_active"] == 0
        await up.stop()

    run(main())


def test_dsd_stats_count_speculation() -> None:
    up = SimUpstream(DSD, time_scale=300, acceptance_rate=1.0)
    run(serve(up, req(n=41)))
    st = up.stats()
    k = DSD.num_speculative_tokens
    assert st.spec_proposed_tokens == st.spec_accepted_tokens == k * 8  # 40 tokens, 5 a step
    assert st.acceptance_rate == 1.0
    assert st.extra["link_bytes"] > 0 and st.extra["iterations"] >= 9
    assert st.extra["busy_s:target:A100"] > 0 and st.extra["busy_s:draft:T4"] > 0


# ---- errors and lifecycle ---------------------------------------------------------------------
def test_bad_input_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="target model"):
        SimUpstream(STANDALONE, model="llama-1b")
    with pytest.raises(ConfigError):
        SimUpstream(STANDALONE, model="no-such-model")
    assert SimUpstream(STANDALONE, model="llama2-7b").model == "llama2-7b"  # an alias
    with pytest.raises(ConfigError, match="time_scale"):
        SimUpstream(STANDALONE, time_scale=-1)
    with pytest.raises(ConfigError, match="power_period_s"):
        SimUpstream(STANDALONE, power_period_s=0)

    async def main() -> None:
        up = SimUpstream(STANDALONE, time_scale=100)
        await up.start()
        with pytest.raises(ConfigError, match="max_tokens"):
            await chunks(up, req(n=0))
        with pytest.raises(ConfigError, match="context length"):
            await chunks(up, req(n=1_000_000))
        with pytest.raises(ConfigError, match="prompt_tokens"):
            await chunks(up, req(prompt=()))
        await up.stop()

    run(main())


def test_start_and_stop_twice_and_stopping_mid_stream() -> None:
    async def main() -> None:
        up = SimUpstream(STANDALONE, time_scale=10)
        assert not up.ready
        await up.start()
        await up.start()
        assert up.ready
        s = up.stream(req(n=3000))
        await s.__anext__()
        await up.stop()
        await up.stop()
        assert not up.ready
        with pytest.raises(UpstreamError) as err:
            await s.__anext__()
        assert not err.value.retryable
        with pytest.raises(UpstreamError):
            await chunks(up, req())

    run(main())
