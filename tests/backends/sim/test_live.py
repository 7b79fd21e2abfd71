"""LiveSim: the simulator online. Every test runs in a second or two at a high time scale.

The reference is the offline simulator (SimBackend) on the arrivals LiveSim recorded: iterations
are scheduled on the virtual clock exactly as the offline loop schedules them, so Standalone and
DPD agree to float precision, and so do SpecDecode and DSD when the acceptance draws are
deterministic (rate 0 or 1); with random draws they agree in distribution (the tolerance is the
offline simulator's own seed-to-seed spread).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from greenllm.backends.sim import EngineParams, LiveSim, SimBackend, SimOptions, get_model
from greenllm.backends.sim.live import LiveRequest, TokenEvent
from greenllm.backends.sim.roofline import step_model
from greenllm.config import Configuration, RequestSize, Workload
from greenllm.energy import power_model
from greenllm.errors import BackendClosedError, ConfigError
from greenllm.workloads import RequestSet

T = TypeVar("T")

STANDALONE = Configuration(kind="standalone")
SPEC = Configuration(kind="spec_decode", draft_model="llama-1b")
DPD = Configuration(kind="dpd", old_gpu="V100")
DSD = Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b")
ALL = (STANDALONE, SPEC, DPD, DSD)
EPS_S = 1e-5  # epoch-based float times (~1.8e9 s) carry ~2.4e-7 s of rounding; sums a little more


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


async def collect(req: LiveRequest) -> list[TokenEvent]:
    return [ev async for ev in req]


async def serve_arrivals(
    sim: LiveSim, arrivals_s: np.ndarray, prompt: int, out: int
) -> list[tuple[LiveRequest, list[TokenEvent]]]:
    """Submit one request per arrival (virtual seconds from now) in real (scaled) time."""
    await sim.start()
    t0 = sim.now_s()

    async def one(a: float) -> tuple[LiveRequest, list[TokenEvent]]:
        await asyncio.sleep(max(0.0, (t0 + a - sim.now_s()) / sim.time_scale))
        req = sim.submit(prompt, out)
        return req, await collect(req)

    try:
        res = list(await asyncio.gather(*(one(float(a)) for a in arrivals_s)))
    finally:
        await sim.stop()
    return sorted(res, key=lambda x: x[0].arrival_s)  # two timers may fire in either order


def offline(cfg: Configuration, arrival_s: np.ndarray, prompt: int, out: int, **kw: Any) -> Any:
    n = len(arrival_s)
    rs = RequestSet(arrival_s, np.full(n, prompt), np.full(n, out))
    w = Workload(application="sharegpt", qps=1.0,
                 request_size=RequestSize(input_tokens=prompt, output_tokens=out))  # fmt: skip
    seed = kw.pop("seed", 0)
    return SimBackend(**kw).run(cfg, w, requests=rs, seed=seed)


def latencies(
    res: list[tuple[LiveRequest, list[TokenEvent]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrival (relative to the first), TTFT, finish (relative), TPOT per request."""
    arr = np.array([r.arrival_s for r, _ in res])
    first = np.array([ev[0].time_s for _, ev in res])
    fin = np.array([ev[-1].time_s for _, ev in res])
    out = np.array([r.max_tokens for r, _ in res])
    base = arr.min()
    return arr - base, first - arr, fin - base, (fin - first) / (out - 1)


def poisson(n: int, qps: float, seed: int = 0) -> np.ndarray:
    a = np.cumsum(np.random.default_rng(seed).exponential(1 / qps, n))
    return a - a[0]


# ---- streaming --------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", ALL, ids=lambda c: c.kind.value)
def test_each_kind_streams_max_tokens_in_time_order(cfg: Configuration) -> None:
    sizes = [(50, 1), (120, 40), (300, 25)]

    async def main() -> list[tuple[LiveRequest, list[TokenEvent]]]:
        sim = LiveSim(cfg, time_scale=200)
        await sim.start()
        reqs = [sim.submit(p, o) for p, o in sizes]
        out = [(r, await collect(r)) for r in reqs]
        assert sim.stats().requests_active == 0
        await sim.stop()
        return out

    for (req, evs), (_, o) in zip(run(main()), sizes, strict=True):
        assert sum(ev.tokens for ev in evs) == o == req.emitted
        assert evs[0].first and evs[-1].last and not any(ev.last for ev in evs[:-1])
        times = [ev.time_s for ev in evs]
        assert times == sorted(times) and times[0] > req.arrival_s
        assert req.finished


# ---- agreement with the offline simulator -----------------------------------------------------
@pytest.mark.parametrize(
    ("cfg", "rate"),
    [(STANDALONE, None), (DPD, None), (SPEC, 1.0), (SPEC, 0.0), (DSD, 1.0), (DSD, 0.0)],
    ids=["standalone", "dpd", "spec-a1", "spec-a0", "dsd-a1", "dsd-a0"],
)
def test_matches_offline_simulator_exactly(cfg: Configuration, rate: float | None) -> None:
    """Same arrivals -> the same TTFT and finish time for every request (4 QPS: batching,
    chunked prefill mixing with decodes, DPD transfers queueing)."""
    prompt, out = 160, 40
    res = run(serve_arrivals(LiveSim(cfg, time_scale=100, acceptance_rate=rate),
                             poisson(14, 4.0), prompt, out))  # fmt: skip
    arr, ttft, fin, _ = latencies(res)
    off = offline(cfg, arr, prompt, out, acceptance_rate=rate)
    np.testing.assert_allclose(ttft, off.requests.ttft_s, rtol=0, atol=EPS_S)
    np.testing.assert_allclose(fin, off.requests.finish_s, rtol=0, atol=EPS_S)


@pytest.mark.parametrize("chunked", [True, False])
def test_matches_offline_simulator_with_small_budgets(chunked: bool) -> None:
    """A 512-token budget cuts prompts into chunks (or runs them alone, V0 style) and a
    4-sequence cap makes prefilled requests wait for a slot."""
    engine = EngineParams(max_batched_tokens=512, max_num_seqs=4, chunked_prefill=chunked)
    prompt, out = 700, 20
    sim = LiveSim(STANDALONE, time_scale=50, options=SimOptions(engine=engine))
    res = run(serve_arrivals(sim, poisson(10, 8.0, seed=1), prompt, out))
    arr, ttft, fin, _ = latencies(res)
    off = offline(STANDALONE, arr, prompt, out, engine=engine)
    np.testing.assert_allclose(ttft, off.requests.ttft_s, rtol=0, atol=EPS_S)
    np.testing.assert_allclose(fin, off.requests.finish_s, rtol=0, atol=EPS_S)


@pytest.mark.parametrize("cfg", [SPEC, DSD], ids=["spec", "dsd"])
def test_matches_offline_simulator_in_distribution(cfg: Configuration) -> None:
    """Random acceptance draws differ from the offline run's; mean TTFT and TPOT must lie within
    4 standard deviations (+1%) of the offline simulator's own spread over 10 seeds."""
    prompt, out = 160, 60
    res = run(serve_arrivals(LiveSim(cfg, time_scale=100), poisson(20, 2.0), prompt, out))
    arr, ttft, _, tpot = latencies(res)
    runs = [offline(cfg, arr, prompt, out, seed=s) for s in range(10)]
    for online, values in (
        (ttft.mean(), [np.nanmean(r.requests.ttft_s) for r in runs]),
        (tpot.mean(), [np.nanmean(r.requests.tpot_s) for r in runs]),
    ):
        mu, sd = float(np.mean(values)), float(np.std(values))
        assert abs(online - mu) <= 4 * sd + 0.01 * mu, (online, mu, sd)


def test_time_scale_changes_wall_time_not_virtual_latencies() -> None:
    prompt, out = 200, 50
    alone = offline(STANDALONE, np.zeros(1), prompt, out)
    virtual = float(alone.requests.finish_s[0])
    for ts in (20.0, 200.0):

        async def main(ts: float = ts) -> tuple[list[TokenEvent], LiveRequest, float]:
            sim = LiveSim(STANDALONE, time_scale=ts)
            await sim.start()
            w0 = time.monotonic()
            req = sim.submit(prompt, out)
            evs = await collect(req)
            wall = time.monotonic() - w0
            await sim.stop()
            return evs, req, wall

        evs, req, wall = run(main())
        assert evs[0].time_s - req.arrival_s == pytest.approx(alone.requests.ttft_s[0], abs=EPS_S)
        assert evs[-1].time_s - req.arrival_s == pytest.approx(virtual, abs=EPS_S)
        assert wall >= 0.95 * virtual / ts
        assert wall <= virtual / ts + 0.5  # delivery keeps up with the clock


def test_clock_runs_time_scale_times_faster() -> None:
    sim = LiveSim(STANDALONE, time_scale=50)
    c0, w0 = sim.clock_s(), time.monotonic()
    time.sleep(0.05)
    dc, dw = sim.clock_s() - c0, time.monotonic() - w0
    assert dc == pytest.approx(50 * dw, rel=0.05)
    assert abs(sim.epoch_s - time.time()) < 10.0


# ---- per-configuration counters ---------------------------------------------------------------
def test_dpd_moves_each_prompts_kv_cache_over_the_link() -> None:
    sizes = [(160, 30), (300, 10), (90, 1)]  # one output token: never leaves the prefill GPU

    async def main() -> Any:
        sim = LiveSim(DPD, time_scale=200)
        await sim.start()
        for r in [sim.submit(p, o) for p, o in sizes]:
            await collect(r)
        await sim.stop()
        return sim.stats()

    st = run(main())
    kv = get_model("llama-2-7b").kv_cache_bytes
    assert st.link_bytes == kv(160) + kv(300)
    assert st.link_messages == 2
    assert st.iterations_per_instance[0] >= 1 and st.iterations_per_instance[1] >= 29
    assert st.busy_s[0] > 0 and st.busy_s[1] > st.busy_s[0]


@pytest.mark.parametrize("rate", [1.0, 0.0])
def test_dsd_counters_with_deterministic_acceptance(rate: float) -> None:
    prompt, out, k, vocab = 100, 41, DSD.num_speculative_tokens, 32000

    async def main() -> Any:
        sim = LiveSim(DSD, time_scale=200, acceptance_rate=rate)
        await sim.start()
        await collect(sim.submit(prompt, out))
        await sim.stop()
        return sim.stats()

    st = run(main())
    steps = math.ceil((out - 1) / (k + 1)) if rate == 1.0 else out - 1
    assert st.spec_steps == steps
    assert st.spec_proposed_tokens == k * steps
    assert st.spec_accepted_tokens == (k * steps if rate == 1.0 else 0)
    # verdicts and prompt ids to the draft, draft ids and probabilities back (docs/simulator.md)
    assert st.link_bytes == 4 * prompt + steps * (8 + 4 * k + 2 * k * vocab)


def test_dsd_acceptance_rate_converges_to_the_model() -> None:
    async def main() -> Any:
        sim = LiveSim(DSD, time_scale=500, seed=3)
        await sim.start()
        reqs = [sim.submit(60, 300) for _ in range(4)]
        for r in reqs:
            await collect(r)
        await sim.stop()
        return sim.stats()

    st = run(main())
    a, k = 0.7, DSD.num_speculative_tokens  # llama-1b -> llama-2-7b
    expected = ((1 - a ** (k + 1)) / (1 - a) - 1) / k  # accepted / proposed (docs/simulator.md)
    assert st.spec_accepted_tokens / st.spec_proposed_tokens == pytest.approx(expected, abs=0.05)


# ---- cancellation -----------------------------------------------------------------------------
def test_cancelling_frees_kv_memory_and_slot_at_once() -> None:
    """A T4 holds 438 tokens of llama-2-7b KV: B (304 reserved) waits behind A (400)."""
    cfg = Configuration(kind="standalone", new_gpu="T4")

    async def main() -> None:
        sim = LiveSim(cfg, time_scale=100)
        cap = sim.plan.kv_capacity_tokens[0]
        await sim.start()
        gen_a = sim.stream(100, 300)  # submitted at its first __anext__
        got = (await gen_a.__anext__()).tokens
        req_b = sim.submit(100, 200)
        assert sim.kv_free_tokens() == (cap - 400,)
        async for ev in gen_a:
            got += ev.tokens
            if got >= 5:
                break
        assert req_b.emitted == 0  # still waiting for memory
        t_cancel = sim.clock_s()
        await gen_a.aclose()  # the client left: A is gone, B reserved at once
        assert sim.kv_free_tokens() == (cap - 304,)
        evs = await collect(req_b)
        assert sum(ev.tokens for ev in evs) == 200
        assert evs[0].time_s - t_cancel < 0.5  # the next iteration, not A's end (~8 s later)
        assert sim.kv_free_tokens() == (cap,)
        st = sim.stats()
        assert (st.requests_cancelled, st.requests_finished, st.requests_active) == (1, 1, 0)
        await sim.stop()

    run(main())


def test_cancelling_dpd_mid_stream_frees_both_gpus() -> None:
    async def main() -> None:
        sim = LiveSim(DPD, time_scale=200)
        caps = sim.plan.kv_capacity_tokens
        await sim.start()
        req = sim.submit(200, 400)
        async for ev in req:
            if req.emitted >= 3 and not ev.first:
                req.cancel()
        assert sim.kv_free_tokens() == caps
        await asyncio.sleep(0.02)
        assert sim.stats().requests_active == 0
        again = sim.submit(200, 10)
        assert sum(ev.tokens for ev in await collect(again)) == 10
        await sim.stop()

    run(main())


# ---- batching and power -----------------------------------------------------------------------
def test_concurrent_requests_batch_as_the_step_model_says() -> None:
    prompt, out = 200, 6

    async def gaps(n: int) -> list[float]:
        sim = LiveSim(STANDALONE, time_scale=100)
        await sim.start()
        now = sim.clock_s()
        reqs = [sim.submit(prompt, out, arrival_s=now) for _ in range(n)]
        evs = [await collect(r) for r in reqs]
        await sim.stop()
        assert len({e[0].time_s for e in evs}) == 1  # one prefill iteration for all
        return [e[1].time_s - e[0].time_s for e in evs]

    sm = step_model("llama-2-7b", "A100")
    alone, eight = run(gaps(1)), run(gaps(8))
    assert alone[0] == pytest.approx(sm.time_util(1, prompt, 1)[0], abs=EPS_S)
    for g in eight:
        assert g == pytest.approx(sm.time_util(8, 8 * prompt, 8)[0], abs=EPS_S)
    assert eight[0] > alone[0]


def test_utilisation_and_power_follow_the_running_step() -> None:
    async def main() -> None:
        sim = LiveSim(DPD, time_scale=20)
        idle = tuple(power_model(g).idle_w for g in DPD.gpus)
        assert sim.utilisation() == (0.0, 0.0)
        assert sim.power_w() == idle
        await sim.start()
        req = sim.submit(100, 400)
        async for ev in req:
            if not ev.first and req.emitted > 50:
                break
        u = sim.utilisation(ev.time_s - 1e-4)  # during the step that produced ev
        assert u[0] == 0.0 and 0.0 < u[1] <= 1.0  # prefill GPU idle, decode GPU stepping
        assert sim.power_w(ev.time_s - 1e-4)[1] == pytest.approx(power_model("V100").power_w(u[1]))
        assert sim.utilisation()[1] > 0.0  # now: the next step (or the last, when behind)
        e0, c0 = sim.energy_j(), sim.now_s()
        await asyncio.sleep(0.05)
        e1, c1 = sim.energy_j(), sim.now_s()
        assert (e1[0] - e0[0]) == pytest.approx(idle[0] * (c1 - c0), rel=1e-3)
        assert (e1[1] - e0[1]) > idle[1] * (c1 - c0)
        req.cancel()
        await sim.stop()

    run(main())


# ---- bad input and lifecycle ------------------------------------------------------------------
def test_bad_input_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="time_scale"):
        LiveSim(STANDALONE, time_scale=0)
    with pytest.raises(ConfigError, match="seed"):
        LiveSim(STANDALONE, seed=-1)
    with pytest.raises(ConfigError, match="acceptance_rate"):
        LiveSim(SPEC, acceptance_rate=1.5)

    async def main() -> None:
        sim = LiveSim(Configuration(kind="dpd", old_gpu="T4"), time_scale=100)
        await sim.start()
        for prompt, out in ((100, 0), (0, 10), (100, -1)):
            with pytest.raises(ConfigError, match=">= 1"):
                sim.submit(prompt, out)
        with pytest.raises(ConfigError, match="context length of 4096"):
            sim.submit(100, 10**9)
        with pytest.raises(ConfigError, match="KV tokens"):  # a T4 holds 438 tokens
            sim.submit(100, 400)
        assert sim.max_request_tokens < 450
        with pytest.raises(ConfigError, match="arrival_s"):
            sim.submit(10, 10, arrival_s=sim.clock_s() + 100)
        assert sim.stats().requests_submitted == 0
        await sim.stop()

    run(main())


def test_lifecycle() -> None:
    async def main() -> None:
        sim = LiveSim(STANDALONE, time_scale=10)
        with pytest.raises(BackendClosedError, match="start"):
            sim.submit(10, 10)
        await sim.start()
        await sim.start()
        req = sim.submit(100, 10_000 // 4)  # runs ~35 virtual s: still going at stop()
        first = await req.__anext__()
        assert first.first
        await sim.stop()
        await sim.stop()
        with pytest.raises(BackendClosedError):
            async for _ in req:
                pass
        with pytest.raises(BackendClosedError):
            sim.submit(10, 10)
        with pytest.raises(BackendClosedError):
            await sim.start()

    run(main())


def test_a_sim_on_anothers_origin_shares_its_clock_and_counts_its_own_energy() -> None:
    """Two sims on one origin read the same virtual time; the second one's energy starts at
    its creation (not at the origin); a bad origin is a ConfigError."""
    from greenllm.config import Configuration
    from greenllm.energy import power_model
    from greenllm.errors import ConfigError

    cfg = Configuration(kind="standalone")
    first = LiveSim(cfg, time_scale=100.0)
    time.sleep(0.05)  # 5 virtual seconds
    second = LiveSim(cfg, time_scale=100.0, origin=first.origin)
    assert second.origin == first.origin and second.epoch_s == first.epoch_s
    assert abs(second.clock_s() - first.clock_s()) < 0.5
    t = first.clock_s()
    idle_w = power_model("A100").idle_w
    assert first.energy_j(t)[0] >= idle_w * 4.0
    assert second.energy_j(t)[0] < idle_w * 1.0
    for bad in ((1.0,), ("a", 1.0), (time.monotonic() + 100, 0.0)):
        with pytest.raises(ConfigError, match="origin"):
            LiveSim(cfg, origin=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [1.0, 0.7])
def test_dsd_with_draft_ahead_matches_the_offline_simulator(rate: float) -> None:
    """Draft-ahead in the live simulator (whose busy logs are drained after every step):
    acceptance 1 (every sequence hits) gives the same TTFT and finish times and the same busy
    time on both GPUs as offline; at 0.7 an arrival that lands within rounding of a step's end
    may join a step later, so the two agree in busy time and mean latency within 3%."""
    from greenllm.backends.sim.options import SimOptions

    prompt, out = 160, 40
    live = LiveSim(DSD, time_scale=100, acceptance_rate=rate,
                   options=SimOptions(dsd_draft_ahead=True))  # fmt: skip
    res = run(serve_arrivals(live, poisson(14, 4.0), prompt, out))
    arr, ttft, fin, _ = latencies(res)
    off = offline(DSD, arr, prompt, out, acceptance_rate=rate, dsd_draft_ahead=True)
    assert off.extra["ahead_hits"] > 0
    offline_busy = [g.busy_s for g in off.gpus]
    if rate == 1.0:
        np.testing.assert_allclose(ttft, off.requests.ttft_s, rtol=0, atol=EPS_S)
        np.testing.assert_allclose(fin, off.requests.finish_s, rtol=0, atol=EPS_S)
        np.testing.assert_allclose(live.stats().busy_s, offline_busy, rtol=1e-6)
    else:
        assert fin.mean() == pytest.approx(off.requests.finish_s.mean(), rel=0.03)
        np.testing.assert_allclose(live.stats().busy_s, offline_busy, rtol=0.03)
