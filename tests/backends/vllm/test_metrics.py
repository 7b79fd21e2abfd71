"""vLLM metrics as data: counter deltas, prompt tokens by source, engine busy intervals."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from greenllm.backends.vllm.metrics import (
    busy_intervals,
    counter_delta,
    prompt_tokens_by_source,
    request_stats,
    serialize_metrics,
    spec_decode_counts,
)


# The shapes of vllm.v1.metrics.reader's dataclasses (Counter, Vector, Histogram).
@dataclass
class Counter:
    name: str
    labels: dict[str, str]
    value: int


@dataclass
class Vector:
    name: str
    labels: dict[str, str]
    values: list[int]


@dataclass
class Histogram:
    name: str
    labels: dict[str, str]
    count: int
    sum: float
    buckets: dict[str, int] = field(default_factory=dict)


def snapshot(drafts: int, proposed: int, accepted: int, external: int, local: int) -> list:
    eng = {"model_name": "m", "engine": "0"}
    by = "vllm:prompt_tokens_by_source"
    return serialize_metrics([
        Counter("vllm:spec_decode_num_drafts", eng, drafts),
        Counter("vllm:spec_decode_num_draft_tokens", eng, proposed),
        Counter("vllm:spec_decode_num_accepted_tokens", eng, accepted),
        Vector("vllm:spec_decode_num_accepted_tokens_per_pos", eng, [accepted, 0]),
        Counter(by, {**eng, "source": "external_kv_transfer"}, external),
        Counter(by, {**eng, "source": "local_compute"}, local),
        Histogram("vllm:time_to_first_token_seconds", eng, 3, 0.75, {"0.5": 2, "+Inf": 3}),
    ])  # fmt: skip


def test_serialized_snapshot_is_plain_json_data() -> None:
    import json

    snap = snapshot(1, 4, 3, 64, 17)
    assert json.loads(json.dumps(snap)) == snap
    kinds = {row["name"]: row["kind"] for row in snap}
    assert kinds["vllm:time_to_first_token_seconds"] == "histogram"
    hist = next(r for r in snap if r["kind"] == "histogram")
    assert (hist["count"], hist["sum"], hist["buckets"]["+Inf"]) == (3, 0.75, 3)
    assert next(r for r in snap if r["kind"] == "vector")["values"] == [3.0, 0.0]


def test_run_counts_are_differences_of_cumulative_counters() -> None:
    before, after = snapshot(10, 40, 12, 96, 30), snapshot(25, 100, 39, 352, 61)
    assert spec_decode_counts(before, after) == (15, 60, 27)
    assert prompt_tokens_by_source(before, after) == {
        "external_kv_transfer": 256,
        "local_compute": 31,
    }
    assert counter_delta(before, after, "vllm:prompt_tokens_by_source", source="nope") == 0
    assert counter_delta([], after, "vllm:spec_decode_num_drafts") == 25


def test_request_stats_reads_request_output_metrics() -> None:
    @dataclass
    class Stats:  # vllm.v1.metrics.stats.RequestStateStats
        num_generation_tokens: int = 5
        queued_ts: float = 10.0
        scheduled_ts: float = 10.5
        first_token_ts: float = 11.0
        last_token_ts: float = 12.0
        first_token_latency: float = 1.2

    @dataclass
    class Output:
        metrics: Stats | None
        num_cached_tokens: int = 32

    got = request_stats(Output(Stats()))
    assert got == {"num_cached_tokens": 32, "queued_ts": 10.0, "scheduled_ts": 10.5,
                   "first_token_ts": 11.0, "last_token_ts": 12.0, "first_token_latency": 1.2,
                   "num_generation_tokens": 5}  # fmt: skip
    assert request_stats(Output(None)) == {"num_cached_tokens": 32}


def test_busy_intervals_union_with_prefill_at_full_utilisation() -> None:
    # request A: prefill 0-1, decode 1-4; request B: prefill 2-2.5, decode 2.5-6
    s, e, u = busy_intervals([(0, 1), (2, 2.5)], [(1, 4), (2.5, 6)], 0.36)
    np.testing.assert_allclose(s, [0, 1, 2, 2.5])
    np.testing.assert_allclose(e, [1, 2, 2.5, 6])
    np.testing.assert_allclose(u, [1, 0.36, 1, 0.36])
    assert float(np.sum(e - s)) == pytest.approx(6.0)


def test_busy_intervals_leave_idle_gaps_and_ignore_bad_spans() -> None:
    s, e, u = busy_intervals([(0, 0.5), (3, 2)], [(0.5, 1), (5, 7)], 0.5)
    np.testing.assert_allclose(np.c_[s, e, u], [[0, 0.5, 1], [0.5, 1, 0.5], [5, 7, 0.5]])
    assert [len(x) for x in busy_intervals([], [], 0.5)] == [0, 0, 0]
