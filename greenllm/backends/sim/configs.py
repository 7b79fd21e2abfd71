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

Acceptance rates per (draft, target) pair are :data:`ACCEPTANCE_RATES` (see docs/simulator.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greenllm.backends.sim.engine import (
    AcceptanceSampler,
    BusyLog,
    EngineParams,
    InstanceResult,
    PlainTimeline,
    serve,
)
from greenllm.backends.sim.link import DEFAULT_LINK_LATENCY_S, Link
from greenllm.backends.sim.models import get_model
from greenllm.backends.sim.roofline import StepModel, kv_capacity_tokens, step_model
from greenllm.carbon.hardware import GPUSpec, get_gpu
from greenllm.config import ConfigKind, Configuration, ModelSpec
from greenllm.errors import ConfigError
from greenllm.workloads.requests import RequestSet

__all__ = [
    "ACCEPTANCE_RATES",
    "DEFAULT_ACCEPTANCE_RATE",
    "ROLES",
    "SimOptions",
    "SimOutcome",
    "SimPlan",
    "acceptance_rate_for",
    "plan",
    "simulate",
]

logger = logging.getLogger(__name__)

# Probability a draft token is accepted, per (draft, target). Assumptions, not measurements of
# these exact pairs: Leviathan et al. (ICML 2023, Table 3) report alpha 0.62-0.82 for drafts
# 1-2 orders of magnitude smaller than the target; the larger draft gets the higher rate.
ACCEPTANCE_RATES: dict[tuple[str, str], float] = {
    ("llama-1b", "llama-2-7b"): 0.70,
    ("llama-300m", "llama-2-7b"): 0.60,
}
DEFAULT_ACCEPTANCE_RATE = 0.6
ROLES: dict[ConfigKind, tuple[str, ...]] = {
    ConfigKind.STANDALONE: ("target",),
    ConfigKind.SPEC_DECODE: ("target+draft",),
    ConfigKind.DPD: ("prefill", "decode"),
    ConfigKind.DSD: ("target", "draft"),
}
_TOKEN_ID_BYTES = 4  # int32 token ids
_VERDICT_BYTES = 8  # per sequence and step: accepted count + next token id
_PROB_BYTES = 2  # fp16 draft probabilities


@dataclass(frozen=True)
class SimOptions:
    """Simulator settings that are not part of a :class:`~greenllm.config.Configuration`."""

    engine: EngineParams = field(default_factory=EngineParams)
    acceptance_rate: float | Mapping[tuple[str, str], float] | None = None
    dsd_overlap: bool = True
    link_latency_s: float = DEFAULT_LINK_LATENCY_S
    gpu_memory_utilization: float = 0.9


def acceptance_rate_for(
    draft: str, target: str, override: float | Mapping[tuple[str, str], float] | None = None
) -> float:
    """Acceptance rate of ``draft`` proposing for ``target``: ``override`` (a number, or a
    mapping checked first), else :data:`ACCEPTANCE_RATES`, else the default with a warning."""
    if isinstance(override, Mapping):
        if (draft, target) in override:
            return _rate(override[(draft, target)])
    elif override is not None:
        return _rate(override)
    if (draft, target) in ACCEPTANCE_RATES:
        return ACCEPTANCE_RATES[(draft, target)]
    logger.warning(
        "no acceptance rate for draft %s / target %s; using %g (pass acceptance_rate=...)",
        draft,
        target,
        DEFAULT_ACCEPTANCE_RATE,
    )
    return DEFAULT_ACCEPTANCE_RATE


def _rate(a: Any) -> float:
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
        raise ConfigError(f"acceptance_rate = {a!r}: must be a number in [0, 1] (e.g. 0.7)")
    return float(a)


@dataclass(frozen=True)
class SimPlan:
    """A configuration resolved against the catalogs and checked for memory, before any run."""

    configuration: Configuration
    gpus: tuple[GPUSpec, ...]  # configuration.gpus order (new first)
    roles: tuple[str, ...]
    target: ModelSpec
    draft: ModelSpec | None
    kv_capacity_tokens: tuple[int, ...]  # per GPU (SpecDecode: target + draft tokens)
    acceptance_rate: float | None
    k: int


def plan(configuration: Configuration, options: SimOptions) -> SimPlan:
    """Resolve GPUs and models and size the KV caches; ``ConfigError``/``InfeasibleError``
    (a model that does not fit) before anything is simulated."""
    c = configuration
    gpus = tuple(get_gpu(g) for g in c.gpus)
    target = get_model(c.target_model)
    draft = get_model(c.draft_model) if c.draft_model is not None else None
    if draft is not None and draft.vocab_size != target.vocab_size:
        raise ConfigError(
            f"draft {draft.name} (vocab {draft.vocab_size}) and target {target.name} (vocab "
            f"{target.vocab_size}) must share a vocabulary for speculative decoding"
        )
    mem = {
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "max_batched_tokens": options.engine.max_batched_tokens,
    }
    if c.kind is ConfigKind.STANDALONE:
        caps = (kv_capacity_tokens(target, gpus[0], **mem),)
    elif c.kind is ConfigKind.SPEC_DECODE:  # both models' weights, KV of both per token
        assert draft is not None
        caps = (kv_capacity_tokens(target, gpus[0], other_models=(draft,), **mem),)
    elif c.kind is ConfigKind.DPD:
        caps = tuple(kv_capacity_tokens(target, g, **mem) for g in gpus)
    else:
        assert draft is not None
        caps = (
            kv_capacity_tokens(target, gpus[0], **mem),
            kv_capacity_tokens(draft, gpus[1], **mem),
        )
    rate = None
    if draft is not None:
        rate = acceptance_rate_for(draft.name, target.name, options.acceptance_rate)
    return SimPlan(c, gpus, ROLES[c.kind], target, draft, caps, rate, c.num_speculative_tokens)


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


class _SpecOneGPU:
    """SpecDecode iteration: draft forwards then the target's verification, one GPU."""

    def __init__(self, target: StepModel, draft: StepModel, k: int, busy: BusyLog) -> None:
        self.tgt, self.drf, self.k1, self.js = target.time_util, draft.time_util, k + 1, range(1, k)
        self.log = (busy.starts.append, busy.ends.append, busy.utils.append)

    def step(
        self, t0: float, b: int, ctx: int, ctok: int, cctx: int, nchunk: int
    ) -> tuple[float, float]:
        drf = self.drf
        dt, work = drf(b + ctok, ctx + cctx, b + nchunk)  # prompt chunks ride on draft step 1
        work *= dt
        if b:
            for j in self.js:
                d, u = drf(b, ctx + j * b, b)
                dt += d
                work += d * u
        d, u = self.tgt(b * self.k1 + ctok, ctx + cctx, b + nchunk)
        t1 = t0 + dt + d
        log_s, log_e, log_u = self.log
        log_s(t0)
        log_e(t1)
        log_u((work + d * u) / (dt + d))
        return t1, t1


class _SpecTwoGPU:
    """DSD iteration: verdicts to the draft GPU, K drafts, ids then probabilities back."""

    def __init__(
        self,
        target: StepModel,
        draft: StepModel,
        k: int,
        vocab: int,
        fwd: Link,
        rev: Link,
        overlap: bool,
        busy_new: BusyLog,
        busy_old: BusyLog,
    ) -> None:
        self.tgt, self.drf, self.k1, self.js = target.time_util, draft.time_util, k + 1, range(1, k)
        self.ids_b, self.probs_b = k * _TOKEN_ID_BYTES, k * vocab * _PROB_BYTES
        self.fwd, self.rev, self.overlap = fwd.send, rev.send, overlap
        self.log_new = (busy_new.starts.append, busy_new.ends.append, busy_new.utils.append)
        self.log_old = (busy_old.starts.append, busy_old.ends.append, busy_old.utils.append)
        self.draft_free = 0.0

    def step(
        self, t0: float, b: int, ctx: int, ctok: int, cctx: int, nchunk: int
    ) -> tuple[float, float]:
        drf = self.drf
        ds = self.rev(t0, _VERDICT_BYTES * b + _TOKEN_ID_BYTES * ctok)
        if ds < self.draft_free:
            ds = self.draft_free
        dt, work = drf(b + ctok, ctx + cctx, b + nchunk)
        work *= dt
        if b:
            for j in self.js:
                d, u = drf(b, ctx + j * b, b)
                dt += d
                work += d * u
        de = ds + dt
        log_s, log_e, log_u = self.log_old
        log_s(ds)
        log_e(de)
        log_u(work / dt)
        self.draft_free = de
        d, u = self.tgt(b * self.k1 + ctok, ctx + cctx, b + nchunk)
        if b:
            t_ids = self.fwd(de, self.ids_b * b)
            t_probs = self.fwd(de, self.probs_b * b)  # queued behind the ids
            te = (t_ids if self.overlap else t_probs) + d
            end = te if te > t_probs else t_probs
        else:  # prompt chunks only: the target need not wait for the draft
            te = end = t0 + d
        log_s, log_e, log_u = self.log_new
        log_s(te - d)
        log_e(te)
        log_u(u)
        return end, te


def simulate(
    sim: SimPlan,
    requests: RequestSet,
    options: SimOptions,
    *,
    seed: int = 0,
    gbps: float | None = None,
    record_token_times: bool = False,
) -> SimOutcome:
    """Serve ``requests`` with the planned configuration."""
    kind, params = sim.configuration.kind, options.engine
    arr, inp, out = requests.arrival_s, requests.input_tokens, requests.output_tokens
    n = len(requests)
    horizon = (float(arr[-1]) if n else 0.0) + params.drain_timeout_s
    busy = tuple(BusyLog() for _ in sim.gpus)
    gbps = sim.configuration.link_gbps if gbps is None else gbps
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
        timeline = _SpecOneGPU(tgt, drf, k, busy[0])
    else:
        assert gbps is not None
        links = (Link(gbps, options.link_latency_s), Link(gbps, options.link_latency_s))
        timeline = _SpecTwoGPU(
            tgt,
            drf,
            k,
            sim.target.vocab_size,
            *links,
            overlap=options.dsd_overlap,
            busy_new=busy[0],
            busy_old=busy[1],
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
