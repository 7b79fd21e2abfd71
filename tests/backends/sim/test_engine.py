"""The serving loop, the acceptance sampler and the link, on hand-checkable step-time models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.backends.sim import AcceptanceSampler, EngineParams, Link
from greenllm.backends.sim.engine import serve
from greenllm.backends.sim.instance import BusyLog, PlainTimeline
from greenllm.errors import ConfigError

A, PER_TOKEN, PER_CTX = 0.01, 0.001, 1e-6  # a fake step: A + PER_TOKEN x new + PER_CTX x context


def fake_time_util(new: float, ctx: float, batch: float) -> tuple[float, float]:
    return A + PER_TOKEN * new + PER_CTX * ctx, 0.5


def run(arrival, inp, out, *, capacity=10**9, params=None, busy=None, **kw):
    n = len(arrival)
    arrival, inp, out = (np.asarray(x) for x in (arrival, inp, out))
    params = params or EngineParams()
    timeline = PlainTimeline(fake_time_util, busy if busy is not None else BusyLog())
    return serve(
        arrival,
        inp,
        out - 1,
        np.zeros(n, np.int64),
        params.reserve(inp + out),
        capacity,
        timeline,
        params,
        **kw,
    )


def test_single_request_ttft_and_token_times_exact() -> None:
    p, o = 160, 6
    r = run([2.0], [p], [o], record_tokens=True)
    ttft = A + PER_TOKEN * p
    assert r.first_token_s[0] == pytest.approx(2.0 + ttft, abs=1e-12)
    steps = [A + PER_TOKEN + PER_CTX * (p + j) for j in range(o - 1)]
    assert r.finish_s[0] == pytest.approx(2.0 + ttft + sum(steps), abs=1e-12)
    ids, times, counts = r.events
    assert list(ids) == [0] * o and list(counts) == [1] * o
    assert np.allclose(np.diff(times), steps)
    assert not r.overloaded and r.iterations == o


def test_decodes_batch_together_and_context_is_summed() -> None:
    r = run([0.0, 0.0], [10, 10], [3, 3], record_tokens=True)
    # iteration 1 prefills both (20 new tokens, 2 sequences); then 2 decode steps of the pair
    t1 = A + PER_TOKEN * 20
    t2 = t1 + A + PER_TOKEN * 2 + PER_CTX * 20
    t3 = t2 + A + PER_TOKEN * 2 + PER_CTX * 22
    assert np.allclose(r.first_token_s, t1) and np.allclose(r.finish_s, t3)


def test_chunked_prefill_splits_long_prompts_at_the_budget() -> None:
    params = EngineParams(max_batched_tokens=2048)
    r = run([0.0], [5000], [1], params=params)
    chunks = [(2048, 0), (2048, 2048), (904, 4096)]
    assert r.first_token_s[0] == pytest.approx(
        sum(A + PER_TOKEN * n + PER_CTX * c for n, c in chunks)
    )
    whole = run([0.0], [5000], [1], params=EngineParams(chunked_prefill=False))
    assert whole.first_token_s[0] == pytest.approx(A + PER_TOKEN * 5000)


def test_decode_tokens_take_budget_before_prompts() -> None:
    params = EngineParams(max_batched_tokens=64)
    r = run([0.0, 0.001], [40, 100], [50, 2], params=params)
    t1 = A + PER_TOKEN * 40  # request 0's prompt alone (request 1 has not arrived)
    t2 = t1 + A + PER_TOKEN * (1 + 63) + PER_CTX * 40  # 1 decode + 63 prompt tokens
    t3 = t2 + A + PER_TOKEN * (1 + 37) + PER_CTX * (41 + 63)  # 1 decode + the last 37
    assert r.first_token_s[0] == pytest.approx(t1) and r.first_token_s[1] == pytest.approx(t3)


def test_without_chunking_prompts_get_their_own_iteration() -> None:
    params = EngineParams(chunked_prefill=False)
    r = run([0.0, 0.001], [40, 100], [4, 2], params=params, record_tokens=True)
    t1 = A + PER_TOKEN * 40  # request 0's prompt
    t2 = t1 + A + PER_TOKEN * 100  # request 1's prompt alone: request 0 does not decode
    t3 = t2 + A + PER_TOKEN * 2 + PER_CTX * (40 + 100)  # both decode; request 1 is done
    t4 = t3 + A + PER_TOKEN + PER_CTX * 41
    t5 = t4 + A + PER_TOKEN + PER_CTX * 42
    assert r.first_token_s == pytest.approx([t1, t2]) and r.finish_s == pytest.approx([t5, t3])
    ids, times, _ = r.events
    assert times[ids == 0] == pytest.approx([t1, t3, t4, t5])
    assert r.iterations == 5


def test_kv_memory_limit_makes_requests_wait() -> None:
    inp, out = [160] * 3, [140] * 3
    tight = run([0.0] * 3, inp, out, capacity=304)  # one request (300 -> 304 tokens) at a time
    for i in range(2):
        assert tight.first_token_s[i + 1] > tight.finish_s[i] - 1e-12
    roomy = run([0.0] * 3, inp, out, capacity=3 * 304)
    assert np.all(roomy.first_token_s < roomy.finish_s.min())
    assert roomy.finish_s.max() < tight.finish_s.max()


def test_request_larger_than_memory_fails_and_flags_overload() -> None:
    r = run([0.0, 1.0], [500, 10], [10, 10], capacity=100)
    assert math.isnan(r.finish_s[0]) and np.isfinite(r.finish_s[1])
    assert r.rejected == 1 and r.overloaded


@pytest.mark.parametrize("chunked", [True, False])
def test_max_num_seqs_caps_the_batch(chunked: bool) -> None:
    params = EngineParams(max_num_seqs=2, chunked_prefill=chunked)
    r = run([0.0, 0.0, 0.001, 0.001], [8] * 4, [20] * 4, params=params)
    assert np.all(np.isfinite(r.finish_s))
    assert min(r.first_token_s[2:]) >= min(r.finish_s[:2]) - 1e-12


def test_fcfs_order_of_first_tokens() -> None:
    rng = np.random.default_rng(3)
    arrival = np.sort(rng.uniform(0, 5, 60))
    r = run(arrival, rng.integers(10, 400, 60), rng.integers(2, 50, 60))
    assert np.all(np.diff(r.first_token_s) >= -1e-12)


def test_unbounded_queue_is_reported_not_simulated_forever() -> None:
    arrival = np.arange(20_000) * 0.0001  # 10,000 QPS for 2 s
    params = EngineParams(max_queue_delay_s=5.0)
    r = run(arrival, [100] * 20_000, [100] * 20_000, params=params)
    assert r.overloaded and "waited" in r.reason
    assert np.isnan(r.finish_s).sum() > 10_000
    assert r.end_s < 2 + 5 + 1


def test_drain_timeout() -> None:
    r = run([0.0], [10], [5000], horizon_s=1.0)
    assert r.overloaded and "drain" in r.reason and np.isnan(r.finish_s[0])


def test_empty_request_set() -> None:
    r = run([], [], [])
    assert r.end_s == 0.0 and len(r.finish_s) == 0 and not r.overloaded


def test_engine_params_reject_bad_values() -> None:
    with pytest.raises(ConfigError, match="max_batched_tokens"):
        EngineParams(max_batched_tokens=0)
    with pytest.raises(ConfigError, match="max_queue_delay_s"):
        EngineParams(max_queue_delay_s=-1.0)
    assert list(EngineParams(block_size_tokens=16).reserve(np.array([1, 16, 17]))) == [16, 16, 32]


# --- acceptance -------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(a=st.floats(0.05, 0.95), k=st.integers(1, 8))
def test_acceptance_draws_match_the_truncated_geometric(a: float, k: int) -> None:
    s = AcceptanceSampler(a, k, seed=1)
    s.assign(np.full(2000, 400))
    draws = s.draws
    expected = (1 - a ** (k + 1)) / (1 - a)
    assert s.expected_tokens() == pytest.approx(expected)
    assert draws.min() >= 1 and draws.max() <= k + 1
    se = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - expected) < 5 * se + 1e-9
    # P(X >= 1) = a
    assert abs(np.mean(draws >= 2) - a) < 5 * math.sqrt(a * (1 - a) / len(draws)) + 1e-9


@given(tokens=st.lists(st.integers(0, 300), min_size=1, max_size=40), k=st.integers(1, 6))
def test_acceptance_extremes(tokens: list[int], k: int) -> None:
    t = np.array(tokens)
    _, steps0 = AcceptanceSampler(0.0, k, 0).assign(t)
    assert steps0 == tokens  # nothing accepted: one token per step
    _, steps1 = AcceptanceSampler(1.0, k, 0).assign(t)
    assert steps1 == [-(-x // (k + 1)) for x in tokens]  # everything accepted: K + 1 per step


@given(tokens=st.lists(st.integers(1, 500), min_size=1, max_size=30), seed=st.integers(0, 99))
def test_acceptance_assignment_covers_each_request_exactly(tokens: list[int], seed: int) -> None:
    s = AcceptanceSampler(0.7, 4, seed)
    start, steps = s.assign(np.array(tokens))
    for x, p, n in zip(tokens, start, steps, strict=True):
        got = s.cum[p + n] - s.cum[p]
        assert got >= x and got - s.draws[p + n - 1] < x  # the fewest steps reaching x
    assert start == list(np.cumsum([0, *steps[:-1]]))
    again = AcceptanceSampler(0.7, 4, seed)
    assert again.assign(np.array(tokens)) == (start, steps)


def test_acceptance_rate_is_validated() -> None:
    with pytest.raises(ConfigError, match="acceptance_rate"):
        AcceptanceSampler(1.5, 4, 0)


def test_speculative_serve_emits_draws_per_step() -> None:
    class Fixed:
        def __init__(self) -> None:
            self.calls: list[tuple[int, int]] = []

        def step(self, t0, b, ctx, ctok, cctx, nchunk):
            self.calls.append((b, ctx))
            return t0 + 0.01, t0 + 0.005

    tl = Fixed()
    params = EngineParams()
    inp, out = np.array([20, 30]), np.array([100, 10])
    r = serve(
        np.array([0.0, 10.0]),
        inp,
        out - 1,
        np.zeros(2, np.int64),
        params.reserve(inp + out + 4),
        10**6,
        tl,
        params,
        sampler=AcceptanceSampler(1.0, 4, 0),
        record_tokens=True,
    )
    assert r.first_token_s[0] == pytest.approx(0.005)
    # request 0: prefill, then ceil(99 / 5) = 20 steps whose context grows by 5 tokens each;
    # request 1 (alone, later): prefill, then 2 steps from its own prompt (9 = 5 + 4 tokens)
    assert tl.calls == [(0, 0)] + [(1, 20 + 5 * j) for j in range(20)] + [(0, 0), (1, 30), (1, 35)]
    assert r.seq_steps == 22 and r.accepted_tokens == 4 * 22
    ids, _, counts = r.events
    assert counts[ids == 0].sum() == 100 and list(counts[ids == 0][1:]) == [5] * 19 + [4]
    assert list(counts[ids == 1]) == [1, 5, 4]


# --- link -------------------------------------------------------------------------------------


@given(gbps=st.floats(1, 100), nbytes=st.integers(0, 10**9), lat=st.floats(0, 1e-3))
def test_link_single_transfer_time(gbps: float, nbytes: int, lat: float) -> None:
    link = Link(gbps, lat)
    assert link.send(1.0, nbytes) == pytest.approx(1.0 + lat + nbytes * 8 / (gbps * 1e9))
    assert link.sent_bytes == nbytes


def test_link_queues_fifo_and_pipelines_latency() -> None:
    link = Link(8.0, 1e-3)  # 1 byte per ns
    a = link.send(0.0, 10**6)  # 1 ms on the wire
    b = link.send(0.0, 10**6)  # waits for a's serialisation, not for its latency
    c = link.send(5.0, 10)  # link idle again by then
    assert a == pytest.approx(2e-3) and b == pytest.approx(3e-3)
    assert c == pytest.approx(5.0 + 1e-3 + 1e-8)
    assert link.busy_s == pytest.approx(2e-3 + 1e-8) and link.messages == 3


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "16"])
def test_link_rejects_bad_bandwidth(bad) -> None:
    with pytest.raises(ConfigError, match="gbps"):
        Link(bad)
