"""Worker roles without a peer: ``standalone`` (the target alone) and ``spec_decode`` (target
and draft in one worker, verified by :func:`~greenllm.engine.model.verifier.verify`).

Standalone serves concurrent requests with continuous batching
(:class:`~greenllm.engine.model.batching.BatchDecoder`: left padding, attention mask, position
ids); spec_decode serves requests one after another, each in one call, and emits its tokens
when it is done. Aborts: standalone drops an aborted request from the batch at the next step;
spec_decode skips aborted requests still queued and does not emit one aborted while it ran.
"""

from __future__ import annotations

import logging
import time

from greenllm.engine.model.batching import BatchDecoder
from greenllm.engine.model.generate import speculative_generate
from greenllm.engine.model.sampling import SamplingParams
from greenllm.engine.worker.context import SeqOutput, WorkerContext, make_generators

__all__ = ["run_spec_decode", "run_standalone"]

logger = logging.getLogger(__name__)


def run_standalone(ctx: WorkerContext) -> None:
    """The target alone, continuous batching over whatever requests are waiting."""
    decoder = BatchDecoder(ctx.model, ctx.counters, max_batch=ctx.max_batch)
    while not ctx.stopping.is_set():
        msg = ctx.next_request(block=not decoder.active)
        while msg is not None and not ctx.stopping.is_set():
            ctx.counters.requests += 1
            params = SamplingParams.from_dict(msg["sampling"])
            out = SeqOutput(int(msg["rid"]), params)
            decoder.admit_prompt(
                out, [int(t) for t in msg["prompt"]], make_generators(params)[0], ctx
            )
            msg = ctx.next_request(block=False) if decoder.has_room else None
        if ctx.stopping.is_set():
            return
        ctx.drop_aborted(r.out for r in decoder.rows)  # dropped (and finished) by this step
        decoder.step(ctx)


def run_spec_decode(ctx: WorkerContext) -> None:
    """Target and draft in one worker: speculative decoding per request (Section 3.2 SpecDecode)."""
    k = int(ctx.init.get("k", 4))
    lean = bool(ctx.init.get("lean", False))
    while True:
        msg = ctx.next_request(block=True)
        if msg is None:
            return
        ctx.counters.requests += 1
        rid = int(msg["rid"])
        params = SamplingParams.from_dict(msg["sampling"])
        gen = make_generators(params)[0]
        start_epoch = time.time()
        try:
            with ctx.counters.busy():
                result = speculative_generate(
                    ctx.model, ctx.draft, [int(t) for t in msg["prompt"]], k, params, gen, lean=lean
                )
        except Exception as err:
            logger.exception("spec_decode request %d failed", rid)
            ctx.fail_request(rid, f"{type(err).__name__}: {err}")
            continue
        ctx.counters.proposed += result.n_proposed
        ctx.counters.accepted += result.n_accepted
        ctx.counters.steps += result.n_steps
        if ctx.is_aborted(rid):  # aborted while it ran: it cannot stop mid-request
            ctx.finish(rid, "abort", result.n_proposed, result.n_accepted)
            continue
        ctx.emit(rid, list(result.tokens), [start_epoch + t for t in result.token_times_s])
        ctx.finish(rid, result.finish_reason, result.n_proposed, result.n_accepted)
