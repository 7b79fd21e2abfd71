"""Shipped traces: row counts, replay order, QPS rescaling, Poisson fallback, stats vs Table 2."""

from __future__ import annotations

import csv
import math
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.errors import ConfigError
from greenllm.workloads import get_application, list_traces, load_trace, trace_stats, traces

EXPECTED_ROWS = {"conversation": 19_366, "code": 8_819, "summarization": 28_257}


def _raw(name: str) -> dict[str, np.ndarray]:
    """The CSV read independently of the module under test (DictReader, column by name)."""
    path = resources.files("greenllm.workloads").joinpath("data", traces.TRACES[name].filename)
    with path.open("r", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_traces_have_their_row_counts_and_are_packaged_with_the_licence(name: str) -> None:
    raw = _raw(name)
    assert len(raw["num_prefill_tokens"]) == EXPECTED_ROWS[name]
    assert len(load_trace(name, qps=1.0)) == EXPECTED_ROWS[name]
    assert trace_stats(name).n_requests == EXPECTED_ROWS[name]
    data = resources.files("greenllm.workloads").joinpath("data")
    assert "MIT License" in data.joinpath("LICENSE-vidur-MIT.txt").read_text()


def test_list_traces_and_aliases() -> None:
    assert list_traces() == ["conversation", "code", "summarization"]
    assert len(load_trace("Conversation", n=3)) == 3
    assert len(load_trace("arxiv", qps=1.0, n=3)) == 3


@pytest.mark.parametrize("name", ["conversation", "code"])
def test_replay_keeps_the_trace_arrivals_and_sizes_in_order(name: str) -> None:
    raw = _raw(name)
    reqs = load_trace(name)
    np.testing.assert_allclose(reqs.arrival_s, raw["arrived_at"] - raw["arrived_at"][0])
    np.testing.assert_array_equal(reqs.input_tokens, np.maximum(raw["num_prefill_tokens"], 1))
    np.testing.assert_array_equal(reqs.output_tokens, np.maximum(raw["num_decode_tokens"], 1))


@settings(max_examples=25)
@given(
    name=st.sampled_from(["conversation", "code"]),
    qps=st.floats(min_value=0.05, max_value=200, allow_nan=False),
)
def test_replay_is_rescaled_exactly_to_the_target_qps(name: str, qps: float) -> None:
    original = load_trace(name)
    reqs = load_trace(name, qps=qps)
    mean_rate = (len(reqs) - 1) / (reqs.arrival_s[-1] - reqs.arrival_s[0])
    assert mean_rate == pytest.approx(qps, rel=1e-9)
    # The shape of the trace is kept: every gap scaled by one factor, order unchanged.
    factor = trace_stats(name).mean_qps / qps
    np.testing.assert_allclose(reqs.arrival_s, original.arrival_s * factor, rtol=1e-9)
    np.testing.assert_array_equal(reqs.input_tokens, original.input_tokens)


def test_trace_mean_qps_is_the_reciprocal_mean_gap() -> None:
    raw = _raw("conversation")["arrived_at"]
    assert trace_stats("conversation").mean_qps == pytest.approx(1 / np.diff(raw).mean())
    assert trace_stats("conversation").duration_s == pytest.approx(raw[-1] - raw[0])


def test_duration_window_and_wrap_around() -> None:
    # The code trace has 8,819 requests in ~57 min; an hour at 10 QPS needs ~4 laps.
    reqs = load_trace("code", qps=10.0, duration_s=3600.0)
    assert reqs.arrival_s.max() < 3600.0 and np.all(np.diff(reqs.arrival_s) >= 0)
    assert len(reqs) == pytest.approx(36_000, rel=0.01)
    n = EXPECTED_ROWS["code"]
    np.testing.assert_array_equal(reqs.input_tokens[n : 2 * n], reqs.input_tokens[:n])
    assert np.all(np.diff(reqs.arrival_s[n - 1 : n + 1]) > 0)  # the next lap starts after


def test_n_requests_takes_the_first_n_and_wraps_beyond_the_trace() -> None:
    head = load_trace("conversation", n=10)
    np.testing.assert_array_equal(head.arrival_s, load_trace("conversation").arrival_s[:10])
    long = load_trace("conversation", n=EXPECTED_ROWS["conversation"] + 5)
    assert len(long) == EXPECTED_ROWS["conversation"] + 5
    np.testing.assert_array_equal(long.input_tokens[-5:], head.input_tokens[:5])


def test_summarization_falls_back_to_poisson_arrivals() -> None:
    raw = _raw("summarization")
    with pytest.raises(ConfigError, match="qps"):
        load_trace("summarization")
    with pytest.raises(ConfigError, match="no arrival times"):
        load_trace("summarization", qps=1.0, arrivals="trace")
    reqs = load_trace("summarization", qps=4.0, n=20_000, seed=7)
    gaps = np.diff(reqs.arrival_s)
    assert gaps.mean() == pytest.approx(0.25, rel=0.03)
    assert gaps.std() == pytest.approx(0.25, rel=0.05)  # exponential: sd = mean
    np.testing.assert_array_equal(reqs.input_tokens, raw["num_prefill_tokens"][:20_000])
    np.testing.assert_array_equal(reqs.output_tokens, raw["num_decode_tokens"][:20_000])
    again = load_trace("summarization", qps=4.0, n=20_000, seed=7)
    assert again == reqs
    assert load_trace("summarization", qps=4.0, n=100, seed=8).arrival_s[0] != reqs.arrival_s[0]


def test_poisson_arrivals_can_replace_a_traces_own_times() -> None:
    reqs = load_trace("conversation", qps=3.0, duration_s=2000.0, arrivals="poisson", seed=1)
    assert len(reqs) == pytest.approx(6000, abs=4 * math.sqrt(6000))
    np.testing.assert_array_equal(
        reqs.input_tokens, load_trace("conversation").input_tokens[: len(reqs)]
    )


def test_sampled_sizes_come_from_the_trace_and_follow_the_seed() -> None:
    raw = _raw("code")
    a = load_trace("code", n=5000, sizes="sampled", seed=1)
    b = load_trace("code", n=5000, sizes="sampled", seed=1)
    c = load_trace("code", n=5000, sizes="sampled", seed=2)
    assert a == b and not np.array_equal(a.input_tokens, c.input_tokens)
    ins, outs = raw["num_prefill_tokens"].astype(int), raw["num_decode_tokens"].astype(int)
    pairs = set(zip(ins.tolist(), outs.tolist(), strict=True))
    assert set(zip(a.input_tokens.tolist(), a.output_tokens.tolist(), strict=True)) <= pairs
    assert np.median(a.input_tokens) == pytest.approx(np.median(raw["num_prefill_tokens"]), rel=0.1)


def test_caps_truncate_sizes() -> None:
    reqs = load_trace("conversation", max_input_tokens=4096, max_output_tokens=256)
    raw = _raw("conversation")
    assert reqs.input_tokens.max() == 4096 and reqs.output_tokens.max() == 256
    np.testing.assert_array_equal(reqs.input_tokens, np.minimum(raw["num_prefill_tokens"], 4096))


def test_parsing_is_cached_and_the_cache_cannot_be_corrupted() -> None:
    first = load_trace("code")
    before = traces._columns.cache_info().hits
    first.input_tokens[:] = -5  # a caller mutating its copy
    first.arrival_s[:] = 0.0
    second = load_trace("code")
    assert traces._columns.cache_info().hits > before
    assert second.input_tokens.min() >= 1 and second.arrival_s[-1] > 3000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "alpaca"}, "conversation, code, summarization"),
        ({"name": "code", "n": 5, "duration_s": 10.0}, "at most one"),
        ({"name": "code", "n": -1}, "n = -1"),
        ({"name": "code", "n": 2.5}, "n = 2.5"),
        ({"name": "code", "qps": 0.0}, "qps = 0.0"),
        ({"name": "code", "qps": math.inf}, "qps = inf"),
        ({"name": "code", "duration_s": -3.0}, "duration_s"),
        ({"name": "code", "arrivals": "uniform"}, "arrivals"),
        ({"name": "code", "sizes": "median"}, "sizes"),
        ({"name": "code", "max_input_tokens": 0}, "max_input_tokens"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict, match: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ConfigError, match=match):
        load_trace(name, **kwargs)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_stats_are_the_percentiles_of_the_file(name: str) -> None:
    raw = _raw(name)
    s = trace_stats(name)
    for attr, col in (
        ("input_tokens", "num_prefill_tokens"),
        ("output_tokens", "num_decode_tokens"),
    ):
        want = np.rint(np.percentile(raw[col], [25, 50, 75]))
        assert [getattr(p, attr) for p in (s.p25, s.p50, s.p75)] == want.tolist()
    assert s.mean_input_tokens == pytest.approx(raw["num_prefill_tokens"].mean())
    assert s.distribution.p50 == s.p50


def test_traces_differ_from_table2_as_documented() -> None:
    """docs/workloads.md: the traces are *not* the paper's datasets; these are its claims."""
    conv, code, summ = (trace_stats(n) for n in ("conversation", "code", "summarization"))
    share, heval, lbench = (get_application(n) for n in ("sharegpt", "humaneval", "longbench"))
    # Conversation prompts are ~6x longer than ShareGPT's median (1020 vs 160 tokens).
    assert 5 < conv.p50.input_tokens / share.p50.input_tokens < 7
    assert 0.8 < conv.p50.output_tokens / share.p50.output_tokens < 1.0
    # Code-completion outputs are ~4x shorter than HumanEval's (13 vs 55), prompts ~10x longer.
    assert code.p50.output_tokens < heval.p25.output_tokens
    assert 9 < code.p50.input_tokens / heval.p50.input_tokens < 12
    # arXiv prompts are ~1.8x LongBench's, outputs ~0.6x.
    assert 1.7 < summ.p50.input_tokens / lbench.p50.input_tokens < 1.9
    assert 0.55 < summ.p50.output_tokens / lbench.p50.output_tokens < 0.65
    # Mean arrival rates: conversation 5.53 QPS, code 2.57 QPS over about an hour.
    assert conv.mean_qps == pytest.approx(5.53, abs=0.01)
    assert code.mean_qps == pytest.approx(2.57, abs=0.01)
    assert summ.mean_qps is None and summ.duration_s is None
