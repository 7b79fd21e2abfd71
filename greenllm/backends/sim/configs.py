"""The paper's four serving configurations (Section 7.1) as simulations.

* **Standalone**: the target on the new GPU (:class:`~.engine.PlainTimeline`).
* **SpecDecode**: draft and target share the new GPU's memory and time. An iteration runs the
  draft's K autoregressive forwards over the batch (prompt chunks ride on the first), then one
  target forward verifying K + 1 tokens per sequence (:func:`~.engine.serve` with an
  :class:`~.engine.AcceptanceSampler`).
* **DPD** (Disg-Pref-Decode): a prefill instance on the new GPU emits the first token; the
  prompt's KV cache (:meth:`~greenllm.config.ModelSpec.kv_cache_bytes`) then crosses the link
  (:class:`~.link.Link`) once the decode instance on the old GPU has reserved memory for the
  request, and the decode instance continues from it.
* **DSD** (Disg-Spec-Decode): per iteration the target host sends the draft host the verdicts
  (8 B per sequence: accepted count and next token) and new prompt tokens (4 B each); the draft
  runs K forwards on the old GPU, sends the K token ids (4 B each) and then the K draft
  distributions (vocab x 2 B each) back; the target forward starts when the ids arrive and the
  verifier waits for the distributions (the paper's Figure 7; ``overlap=False``: the target
  waits for the distributions too).

Acceptance rates per (draft, target) pair are
:data:`~greenllm.backends.sim.speculation.ACCEPTANCE_RATES` (see docs/simulator.md). Settings
and the pre-run checks (:func:`~greenllm.backends.sim.options.plan`) are in
:mod:`~greenllm.backends.sim.options`, the sampler and the speculative timelines in
:mod:`~greenllm.backends.sim.speculation`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greenllm.backends.sim.engine import serve
from greenllm.backends.sim.instance import BusyLog, InstanceResult, PlainTimeline
from greenllm.backends.sim.link import Link
from greenllm.backends.sim.options import SimOptions, SimPlan
from greenllm.backends.sim.roofline import step_model
from greenllm.backends.sim.speculation import (
    AcceptanceSampler,
    SpecOneGPUTimeline,
    SpecTwoGPUTimeline,
    ahead_rate,
)
from greenllm.config import ConfigKind
from greenllm.workloads import RequestSet

__all__ = ["SimOutcome", "simulate"]

logger = logging.getLogger(__name__)


@dataclass
class SimOutcome:
    """Raw result of one simulation, before it becomes a RunResult."""

    first_token_s: np.ndarray
    finish_s: np.ndarray
    busy: tuple[BusyLog, ...]
    duration_s: float
    overloaded: bool
    events: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    link_bytes: int = 0
    spec_proposed_tokens: int = 0
    spec_accepted_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def simulate(
    sim: SimPlan,
    requests: RequestSet,
    options: SimOptions,
    *,
    seed: int = 0,
    record_token_times: bool = False,
) -> SimOutcome:
    """Serve ``requests`` with the planned configuration."""
    kind, params = sim.configuration.kind, options.engine
    arr, inp, out = requests.arrival_s, requests.input_tokens, requests.output_tokens
    n = len(requests)
    horizon = (float(arr[-1]) if n else 0.0) + params.drain_timeout_s
    busy = tuple(BusyLog() for _ in sim.gpus)
    gbps = sim.configuration.link_gbps
    extra: dict[str, Any] = {
        "kv_capacity_tokens": list(sim.kv_capacity_tokens),
        "link_bytes_per_request": 0.0,
    }
    kw: dict[str, Any] = {"record_tokens": record_token_times, "horizon_s": horizon}
    if kind is ConfigKind.STANDALONE:
        timeline = PlainTimeline(step_model(sim.target, sim.gpus[0]).time_util, busy[0])
        r = serve(
            arr,
            inp,
            out - 1,
            np.zeros(n, np.int64),
            params.reserve(inp + out),
            sim.kv_capacity_tokens[0],
            timeline,
            params,
            **kw,
        )
        return _outcome(r, [r], busy, extra)
    if kind is ConfigKind.DPD:
        return _simulate_dpd(sim, requests, options, busy, extra, gbps, kw)
    assert sim.draft is not None and sim.acceptance_rate is not None
    k = sim.k
    tgt = step_model(sim.target, sim.gpus[0])
    drf = step_model(sim.draft, sim.gpus[-1])
    links: tuple[Link, ...] = ()
    if kind is ConfigKind.SPEC_DECODE:
        timeline = SpecOneGPUTimeline(tgt, drf, k, busy[0])
    else:
        assert gbps is not None
        links = (Link(gbps, options.link_latency_s), Link(gbps, options.link_latency_s))
        timeline = SpecTwoGPUTimeline(
            tgt,
            drf,
            k,
            sim.target.vocab_size,
            *links,
            overlap=options.dsd_overlap,
            busy_new=busy[0],
            busy_old=busy[1],
            ahead_hit_rate=ahead_rate(sim.acceptance_rate, k, options.dsd_draft_ahead),
            seed=seed,
        )
    sampler = AcceptanceSampler(sim.acceptance_rate, k, seed)
    r = serve(
        arr,
        inp,
        out - 1,
        np.zeros(n, np.int64),
        params.reserve(inp + out + k),
        min(sim.kv_capacity_tokens),
        timeline,
        params,
        sampler=sampler,
        **kw,
    )
    o = _outcome(r, [r], busy, extra)
    o.spec_proposed_tokens = k * r.seq_steps
    o.spec_accepted_tokens = r.accepted_tokens
    extra.update(
        acceptance_rate=sim.acceptance_rate,
        spec_steps=r.seq_steps,
        expected_tokens_per_step=sampler.expected_tokens(),
    )
    if links:
        fwd, rev = links
        o.link_bytes = fwd.sent_bytes + rev.sent_bytes
        extra.update(
            dsd_overlap=options.dsd_overlap,
            link_bytes_draft_to_target=fwd.sent_bytes,
            link_bytes_target_to_draft=rev.sent_bytes,
        )
        if isinstance(timeline, SpecTwoGPUTimeline) and timeline.hit_rate is not None:
            extra.update({f"ahead_{k}": v for k, v in timeline.ahead.items()})
        _link_extra(extra, o, links, int(np.sum(np.isfinite(r.first_token_s))))
    return o


def _simulate_dpd(
    sim: SimPlan,
    requests: RequestSet,
    options: SimOptions,
    busy: tuple[BusyLog, ...],
    extra: dict[str, Any],
    gbps: float | None,
    kw: dict[str, Any],
) -> SimOutcome:
    params, n = options.engine, len(requests)
    arr, inp, out = requests.arrival_s, requests.input_tokens, requests.output_tokens
    zeros = np.zeros(n, np.int64)
    prefill = PlainTimeline(step_model(sim.target, sim.gpus[0]).time_util, busy[0])
    r1 = serve(
        arr,
        inp,
        zeros,
        zeros,
        params.reserve(inp),
        sim.kv_capacity_tokens[0],
        prefill,
        params,
        **kw,
    )
    sel = np.flatnonzero(np.isfinite(r1.first_token_s) & (out > 1))
    order = sel[np.argsort(r1.first_token_s[sel], kind="stable")]
    ready = r1.first_token_s[order]
    kv_bytes = (sim.target.kv_cache_bytes(1) * inp[order]).tolist()
    ready_l = ready.tolist()
    assert gbps is not None
    link = Link(gbps, options.link_latency_s)

    def admit(j: int, t: float) -> float:  # pull the KV once memory is reserved
        return link.send(ready_l[j] if ready_l[j] > t else t, kv_bytes[j])

    decode = PlainTimeline(step_model(sim.target, sim.gpus[1]).time_util, busy[1])
    r2 = serve(
        ready,
        np.zeros(len(order), np.int64),
        out[order] - 1,
        inp[order],
        params.reserve(inp + out)[order],
        sim.kv_capacity_tokens[1],
        decode,
        params,
        admit=admit,
        **kw,
    )
    finish = r1.finish_s.copy()
    finish[out > 1] = np.nan
    finish[order] = r2.finish_s
    events = None
    if r1.events is not None and r2.events is not None:
        events = tuple(
            np.concatenate([a, b])
            for a, b in zip(r1.events, (order[r2.events[0]], *r2.events[1:]), strict=True)
        )
    merged = InstanceResult(
        r1.first_token_s,
        finish,
        max(r1.end_s, r2.end_s),
        r1.overloaded or r2.overloaded,
        r1.rejected + r2.rejected,
        r1.iterations + r2.iterations,
        r1.reason or r2.reason,
        events=events,
    )
    o = _outcome(merged, [r1, r2], busy, extra)
    o.link_bytes = link.sent_bytes
    _link_extra(extra, o, (link,), link.messages)
    extra["iterations_per_gpu"] = [r1.iterations, r2.iterations]
    return o


def _link_extra(extra: dict[str, Any], o: SimOutcome, links: tuple[Link, ...], users: int) -> None:
    extra["link_bytes_per_request"] = o.link_bytes / users if users else 0.0
    extra["link_busy_s"] = [ln.busy_s for ln in links]
    extra["link_mean_gbps"] = o.link_bytes * 8 / o.duration_s / 1e9 if o.duration_s > 0 else 0.0


def _outcome(
    r: InstanceResult, parts: list[InstanceResult], busy: tuple[BusyLog, ...], extra: dict[str, Any]
) -> SimOutcome:
    extra.update(
        iterations=sum(p.iterations for p in parts),
        rejected_requests=r.rejected,
        overload_reason=r.reason,
    )
    if r.overloaded:
        logger.info("simulation overloaded: %s", r.reason)
    duration = r.end_s if math.isfinite(r.end_s) else 0.0
    return SimOutcome(
        r.first_token_s, r.finish_s, busy, duration, r.overloaded, r.events, extra=extra
    )
