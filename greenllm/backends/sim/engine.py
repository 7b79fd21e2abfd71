"""The serving event loop: one model set on one GPU (or a lock-stepped GPU pair), FCFS.

An *instance* serves requests in arrival order with continuous batching (Orca, OSDI 2022;
vLLM): every iteration runs one forward pass over all decoding sequences (one new token each)
plus chunks of waiting prompts, FCFS, up to a token budget (``max_batched_tokens``) and a
sequence cap (``max_num_seqs``) -- vLLM V1's chunked-prefill scheduler with its defaults for
GPUs under 70 GB (2,048 tokens, 256 sequences; ``EngineArgs.get_batch_defaults``).

KV memory: a request is admitted (FCFS, never skipping the head) when its *final* KV size,
prompt + output (+ K speculative slots) tokens rounded up to 16-token blocks, fits in what is
left of the GPU's KV capacity; it keeps that reservation until it finishes. This never needs
preemption; vLLM instead allocates blocks on demand and preempts when they run out, so it
packs up to ~1.3x more sequences (prompt + output/2 on average) at the price of recomputation.
Admission looks ahead: a request not yet ready (not arrived, or DPD's KV still to come) may
reserve memory early; since it is FCFS that changes nothing but lets the DPD link start a
transfer the moment the prefill ends.

Overload: the run stops with ``overloaded=True`` when the oldest request not yet started has
waited more than ``max_queue_delay_s`` (the queue grows without bound), when the clock passes
the last arrival + ``drain_timeout_s``, or when a request can never fit in KV memory. Requests
not finished then keep NaN times (they count as SLO misses).

Speed: per-request state lives in Python lists and numpy arrays; the batch's total context is
kept incrementally; completions come off a heap keyed by the decode iteration in which each
request finishes, known when it joins (speculative draws are dealt out up front), so an
iteration does no work per sequence. Step times come from
:class:`~greenllm.backends.sim.roofline.StepModel`. The instance's knobs, busy log, result and
timelines are in :mod:`~greenllm.backends.sim.instance`, the acceptance sampler in
:mod:`~greenllm.backends.sim.speculation`.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from collections.abc import Callable

import numpy as np

from greenllm.backends.sim.instance import (
    EngineParams,
    InstanceResult,
    Timeline,
)
from greenllm.backends.sim.speculation import AcceptanceSampler

__all__ = ["serve"]

logger = logging.getLogger(__name__)
_NAN = float("nan")


def serve(
    ready_s: np.ndarray,
    prefill_tokens: np.ndarray,
    decode_tokens: np.ndarray,
    context0: np.ndarray,
    reserve_tokens: np.ndarray,
    capacity_tokens: int,
    timeline: Timeline,
    params: EngineParams,
    *,
    sampler: AcceptanceSampler | None = None,
    admit: Callable[[int, float], float] | None = None,
    record_tokens: bool = False,
    horizon_s: float = math.inf,
) -> InstanceResult:
    """Serve requests FCFS with continuous batching on one instance.

    Request ``i`` becomes ready at ``ready_s[i]`` (sorted; FCFS = index order), prefills
    ``prefill_tokens[i]`` prompt tokens on top of ``context0[i]`` cached ones (0 prompt
    tokens: its KV arrives ready-made, DPD decode) -- its first token comes out when that
    prefill ends -- then decodes ``decode_tokens[i]`` more tokens: one per iteration, or with
    a ``sampler``, ``1 + X`` per speculation step (decode tokens then weigh ``K + 1`` in the
    budget). The sampler deals each request its draws up front, which fixes its steps and lets
    the loop keep the batch's context total incrementally (no per-sequence work per step).
    ``admit(i, t)``, if given, is called when ``i``'s memory is reserved at time ``t`` and
    returns when it becomes ready (DPD: the KV transfer's arrival).
    """
    n = len(ready_s)
    ready = np.asarray(ready_s, dtype=float).tolist()
    pre = np.asarray(prefill_tokens, dtype=np.int64).tolist()
    dec = np.asarray(decode_tokens, dtype=np.int64).tolist()
    ctx0 = np.asarray(context0, dtype=np.int64).tolist()
    res = np.asarray(reserve_tokens, dtype=np.int64).tolist()
    first = [_NAN] * n
    finish = [_NAN] * n
    started = [False] * n
    join_it = [-1] * n  # decode iterations done when the request joined the decode batch
    k1 = sampler.k + 1 if sampler is not None else 1
    max_tok, max_seqs, chunked = (
        params.max_batched_tokens,
        params.max_num_seqs,
        params.chunked_prefill,
    )
    max_wait = params.max_queue_delay_s
    d_ctx = np.zeros(1 << 12, np.int64)  # tokens the batch emits in each iteration (speculating)
    if sampler is not None:
        d_start, d_steps = sampler.assign(decode_tokens)
        draws, cum = sampler.draws, sampler.cum.tolist()
    iter_end: list[float] = []
    fifo: deque[tuple[int, float]] = deque()  # admitted, waiting to be ready
    prefilling: deque[list[int]] = deque()  # [request, prompt tokens done]
    to_decode: deque[int] = deque()  # prefilled, waiting for a sequence slot
    heap: list[tuple[int, int]] = []  # (decode iterations done when it finishes, request)
    step = timeline.step
    free = capacity_tokens
    nxt = oldest = rejected = it = iters = b = ctx_total = seq_steps = 0  # it: decode iterations
    t = 0.0
    overloaded, reason = False, ""
    while True:
        while nxt < n and res[nxt] <= free:  # FCFS admission with look-ahead
            free -= res[nxt]
            fifo.append((nxt, ready[nxt] if admit is None else admit(nxt, t)))
            nxt += 1
        if nxt < n and res[nxt] > capacity_tokens:  # can never fit: fail it, keep going
            started[nxt] = True
            rejected += 1
            nxt += 1
            continue
        while fifo and fifo[0][1] <= t:
            i = fifo.popleft()[0]
            if pre[i] > 0:
                prefilling.append([i, 0])
            else:
                to_decode.append(i)
        while to_decode and b < max_seqs:
            i = to_decode.popleft()
            started[i] = True
            join_it[i] = it
            if sampler is None:
                heapq.heappush(heap, (it + dec[i], i))
            else:
                p, steps = d_start[i], d_steps[i]
                if it + steps > len(d_ctx):
                    d_ctx = np.concatenate([d_ctx, np.zeros(max(len(d_ctx), it + steps), np.int64)])
                d_ctx[it : it + steps] += draws[p : p + steps]
                d_ctx[it + steps - 1] -= cum[p + steps] - cum[p] - dec[i]
                heapq.heappush(heap, (it + steps, i))
            ctx_total += ctx0[i] + pre[i]
            b += 1
        if b == 0 and not prefilling:
            if fifo:
                t = max(t, fifo[0][1])
                continue
            if nxt >= n:
                break
            raise AssertionError(
                "idle with memory reserved and nothing in flight"
            )  # pragma: no cover
        while oldest < n and started[oldest]:
            oldest += 1
        if oldest < n and t - ready[oldest] > max_wait:
            overloaded, reason = True, f"a request waited over {max_wait:g} s (queue unbounded)"
            break
        if t > horizon_s:
            overloaded, reason = True, "did not drain before the drain timeout"
            break
        # the batch: every decoding sequence, then prompt chunks FCFS within the budget; without
        # chunked prefill, waiting prompts get an iteration of their own (vLLM V0)
        bd = 0 if prefilling and not chunked and b < max_seqs else b
        room, slots = max_tok - bd * k1, max_seqs - b
        ctok = cctx = nchunk = 0
        for entry in prefilling:
            if room <= 0 or nchunk >= slots:
                break
            i, done = entry
            left = pre[i] - done
            if left <= room:
                take = left
            elif chunked:
                take = room
            elif nchunk == 0:
                take = left  # a prompt over the budget runs alone
            else:
                break
            started[i] = True
            entry.append(take)
            ctok += take
            cctx += ctx0[i] + done
            room -= take
            nchunk += 1
        t1, t_first = step(t, bd, ctx_total if bd else 0, ctok, cctx, nchunk)
        iters += 1
        if bd:
            if record_tokens:
                iter_end.append(t1)
            ctx_total += b if sampler is None else int(d_ctx[it])
            seq_steps += b
            it += 1
            while heap and heap[0][0] <= it:
                i = heapq.heappop(heap)[1]
                finish[i] = t1
                free += res[i]
                ctx_total -= ctx0[i] + pre[i] + dec[i]
                b -= 1
        for _ in range(nchunk):
            entry = prefilling[0]
            i, done, take = entry
            if done + take < pre[i]:
                entry[1] = done + take
                del entry[2]
                break
            prefilling.popleft()
            first[i] = t_first
            if dec[i] == 0:
                finish[i] = t_first
                free += res[i]
            else:
                to_decode.append(i)
        t = t1
    spec = None
    accepted = 0
    if sampler is not None:  # steps each joined request has done, and what they emitted
        joined = np.flatnonzero(np.asarray(join_it) >= 0)
        st = np.asarray(d_start, np.int64)[joined]
        full = np.asarray(d_steps, np.int64)[joined]
        done = np.minimum(full, it - np.asarray(join_it, np.int64)[joined])
        c = sampler.cum
        accepted = int(np.sum(c[st + done] - c[st] - done))
        spec = (joined, st, done, full)
    events = None
    if record_tokens:
        events = _events(first, join_it, dec, iter_end, it, spec, sampler)
    return InstanceResult(
        np.array(first),
        np.array(finish),
        t,
        overloaded or rejected > 0,
        rejected,
        iters,
        reason or ("a request needs more KV memory than the GPU has" if rejected else ""),
        seq_steps,
        accepted,
        events,
    )


def _events(
    first: list[float],
    join_it: list[int],
    dec: list[int],
    iter_end: list[float],
    iters: int,
    spec: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
    sampler: AcceptanceSampler | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token events: each first token, then each decode step's tokens at its iteration end."""
    f = np.asarray(first)
    ids = [np.flatnonzero(np.isfinite(f))]
    times = [f[ids[0]]]
    counts = [np.ones(len(ids[0]), np.int64)]
    ends = np.asarray(iter_end)
    if spec is None:
        for i, lo in enumerate(join_it):
            if lo >= 0:
                seg = ends[lo : min(lo + dec[i], iters)]
                ids.append(np.full(len(seg), i))
                times.append(seg)
                counts.append(np.ones(len(seg), np.int64))
    else:
        assert sampler is not None
        for i, p, done, full in zip(*(x.tolist() for x in spec), strict=True):
            lo = join_it[i]
            e = sampler.draws[p : p + done].copy()
            if done == full and done:
                e[-1] -= int(sampler.cum[p + done] - sampler.cum[p]) - dec[i]
            ids.append(np.full(done, i))
            times.append(ends[lo : lo + done])
            counts.append(e)
    return (
        np.concatenate(ids).astype(np.int64),
        np.concatenate(times),
        np.concatenate(counts).astype(np.int64),
    )
