"""vLLM's metrics as plain data: per-request timestamps, counters, and engine busy intervals.

Worker side (inside the vLLM process): :func:`serialize_metrics` turns ``LLM.get_metrics()``
(``vllm.v1.metrics.reader`` Counter / Gauge / Vector / Histogram) into JSON-able dicts, and
:func:`request_stats` reads ``RequestOutput.metrics`` (``first_token_ts``, ``last_token_ts``,
``scheduled_ts``: engine-core ``time.monotonic()`` values, comparable across the processes of
one host; ``num_generation_tokens``).

Parent side: counters are cumulative over an engine's life, so a run is the difference of two
snapshots (:func:`counter_delta`): ``vllm:spec_decode_num_draft_tokens`` and
``vllm:spec_decode_num_accepted_tokens`` (:func:`spec_decode_counts`),
``vllm:prompt_tokens_by_source`` by source (:func:`prompt_tokens_by_source`;
``external_kv_transfer`` counts the prompt tokens whose KV came over the link in DPD).
:func:`busy_intervals` turns per-request prefill/decode spans into the non-overlapping busy
intervals of one engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SPEC_ACCEPTED",
    "SPEC_DRAFTS",
    "SPEC_PROPOSED",
    "TOKENS_BY_SOURCE",
    "busy_intervals",
    "counter_delta",
    "counter_total",
    "prompt_tokens_by_source",
    "request_stats",
    "serialize_metrics",
    "spec_decode_counts",
]

SPEC_DRAFTS = "vllm:spec_decode_num_drafts"
SPEC_PROPOSED = "vllm:spec_decode_num_draft_tokens"
SPEC_ACCEPTED = "vllm:spec_decode_num_accepted_tokens"
TOKENS_BY_SOURCE = "vllm:prompt_tokens_by_source"

Snapshot = Sequence[Mapping[str, Any]]


def serialize_metrics(metrics: Iterable[Any]) -> list[dict[str, Any]]:
    """``LLM.get_metrics()`` as dicts: ``name``, ``labels``, ``kind`` and the values."""
    out: list[dict[str, Any]] = []
    for m in metrics:
        kind = type(m).__name__.lower()
        row: dict[str, Any] = {"name": m.name, "labels": dict(m.labels), "kind": kind}
        if hasattr(m, "buckets"):
            row.update(count=int(m.count), sum=float(m.sum), buckets=dict(m.buckets))
        elif hasattr(m, "values"):
            row["values"] = [float(v) for v in m.values]
        else:
            row["value"] = float(m.value)
        out.append(row)
    return out


def request_stats(output: Any) -> dict[str, Any]:
    """Timestamps and counts of one finished ``RequestOutput`` (its ``metrics``, may be None)."""
    m = getattr(output, "metrics", None)
    stats: dict[str, Any] = {"num_cached_tokens": int(getattr(output, "num_cached_tokens", 0) or 0)}
    if m is None:
        return stats
    for key in ("queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts",
                "first_token_latency"):  # fmt: skip
        value = getattr(m, key, None)
        if isinstance(value, (int, float)) and value > 0:
            stats[key] = float(value)
    stats["num_generation_tokens"] = int(getattr(m, "num_generation_tokens", 0) or 0)
    return stats


def _matches(row: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> bool:
    if row.get("name") != name:
        return False
    have = row.get("labels", {})
    return all(have.get(k) == v for k, v in labels.items())


def counter_total(snapshot: Snapshot, name: str, **labels: str) -> float:
    """Sum of counter/gauge ``name`` over the label sets matching ``labels`` (0 if absent)."""
    return math.fsum(
        float(row.get("value", 0.0)) for row in snapshot if _matches(row, name, labels)
    )


def counter_delta(before: Snapshot, after: Snapshot, name: str, **labels: str) -> float:
    """How much counter ``name`` (restricted to ``labels``) grew between two snapshots."""
    return counter_total(after, name, **labels) - counter_total(before, name, **labels)


def spec_decode_counts(before: Snapshot, after: Snapshot) -> tuple[int, int, int]:
    """``(drafts, proposed_tokens, accepted_tokens)`` of speculative decoding between snapshots."""
    return (
        round(counter_delta(before, after, SPEC_DRAFTS)),
        round(counter_delta(before, after, SPEC_PROPOSED)),
        round(counter_delta(before, after, SPEC_ACCEPTED)),
    )


def prompt_tokens_by_source(before: Snapshot, after: Snapshot) -> dict[str, int]:
    """Prompt tokens by source (``local_compute``, ``local_cache_hit``, ``external_kv_transfer``)
    between two snapshots."""
    sources = sorted(
        {row["labels"].get("source", "") for row in after if row.get("name") == TOKENS_BY_SOURCE}
    )
    return {
        s: round(counter_delta(before, after, TOKENS_BY_SOURCE, source=s)) for s in sources if s
    }


def busy_intervals(
    prefill_spans: Sequence[tuple[float, float]],
    decode_spans: Sequence[tuple[float, float]],
    decode_utilisation: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping ``(starts, ends, utilisation)`` of an engine from per-request spans.

    The engine is busy whenever some request is between its scheduling and its last token.
    Where any request is in prefill (scheduled, no first token yet) the utilisation is 1
    (compute-bound); elsewhere it is ``decode_utilisation`` (memory-bound decode; the
    simulator's ``MEMORY_POWER_FRACTION``). Spans with end < start are ignored.
    """
    spans = [(float(a), float(b), 1.0) for a, b in prefill_spans if b >= a] + [
        (float(a), float(b), float(decode_utilisation)) for a, b in decode_spans if b >= a
    ]
    if not spans:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    edges = np.unique([x for a, b, _ in spans for x in (a, b)])
    if len(edges) < 2:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    lo, hi = edges[:-1], edges[1:]
    util = np.zeros(len(lo))
    for a, b, u in spans:
        inside = (lo >= a) & (hi <= b)
        util[inside] = np.maximum(util[inside], u)
    busy = util > 0
    lo, hi, util = lo[busy], hi[busy], util[busy]
    if len(lo) == 0:
        return lo, hi, util
    # merge neighbours with the same utilisation
    keep = np.ones(len(lo), dtype=bool)
    keep[1:] = ~((lo[1:] == hi[:-1]) & (util[1:] == util[:-1]))
    starts = lo[keep]
    group = np.cumsum(keep) - 1
    ends = np.zeros(len(starts))
    np.maximum.at(ends, group, hi)
    return starts, ends, util[keep]
