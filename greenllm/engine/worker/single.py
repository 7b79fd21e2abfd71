"""Worker roles without a peer: ``standalone`` (the target alone) and ``spec_decode`` (target
and draft in one worker, verified by :func:`~greenllm.engine.model.verifier.verify`), plus what every
role shares: model loading, per-request output bookkeeping and token emission.

Standalone serves concurrent requests with continuous batching
(:class:`~greenllm.engine.model.batching.BatchDecoder`: left padding, attention mask, position ids);
spec_decode serves requests one after another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from greenllm.engine.model.sampling import SamplingParams
from greenllm.errors import ConfigError, missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["SeqOutput", "load_models", "make_generators", "run_spec_decode", "run_standalone"]

logger = logging.getLogger(__name__)

_DRAFT_STREAM = 1_000_003  # offset of the draft's RNG seed from the request seed


def load_models(ctx: Any) -> None:
    """Load the worker's model (``ctx.model``) and, for spec_decode, its draft (``ctx.draft``)."""
    from greenllm.engine.worker.main import load_causal_lm

    init = ctx.init
    start_s = time.perf_counter()
    ctx.model = load_causal_lm(init["model"], init["device"], init.get("dtype", "float32"))
    ctx.draft = None
    if ctx.role == "spec_decode":
        if not init.get("draft_model"):
            raise ConfigError("spec_decode needs a draft model: pass draft=...")
        ctx.draft = load_causal_lm(
            init["draft_model"], init["device"], init.get("dtype", "float32")
        )
    logger.info("%s: models loaded in %.2f s", ctx.role, time.perf_counter() - start_s)


def parse_sampling(data: dict[str, Any]) -> SamplingParams:
    return SamplingParams(
        temperature=float(data.get("temperature", 0.0)),
        top_p=float(data.get("top_p", 1.0)),
        max_tokens=int(data.get("max_tokens", 64)),
        seed=None if data.get("seed") is None else int(data["seed"]),
        stop_token_ids=tuple(int(t) for t in data.get("stop_token_ids", ())),
    )


def make_generators(params: SamplingParams) -> tuple[torch.Generator, torch.Generator]:
    """(target, draft) generators: seeded from the request seed, else from fresh entropy."""
    target, draft = torch.Generator(), torch.Generator()
    if params.seed is None:
        target.seed()
        draft.seed()
    else:
        target.manual_seed(params.seed)
        draft.manual_seed(params.seed + _DRAFT_STREAM)
    return target, draft


@dataclass
class SeqOutput:
    """The tokens emitted for one request, cut at ``max_tokens`` or a stop token."""

    rid: int
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)
    done: bool = False
    reason: str = "length"

    @property
    def remaining(self) -> int:
        return self.params.max_tokens - len(self.tokens)

    def add(self, new: list[int]) -> list[int]:
        added: list[int] = []
        for t in new:
            if self.done:
                break
            self.tokens.append(t)
            added.append(t)
            if t in self.params.stop_token_ids:
                self.done, self.reason = True, "stop"
            elif len(self.tokens) >= self.params.max_tokens:
                self.done = True
        return added

    def emit(self, ctx: Any, new: list[int]) -> list[int]:
        """Add ``new`` and send the accepted part to the driver with one timestamp."""
        added = self.add(new)
        if added:
            now = time.time()
            ctx.emit(self.rid, added, [now] * len(added))
        return added


def run_standalone(ctx: Any) -> None:
    """The target alone, continuous batching over whatever requests are waiting."""
    from greenllm.engine.model.batching import BatchDecoder

    decoder = BatchDecoder(ctx.model, ctx.counters, max_batch=int(ctx.init.get("max_batch", 8)))
    while not ctx.stopping.is_set():
        msg = ctx.next_request(block=not decoder.active)
        while msg is not None and not ctx.stopping.is_set():
            ctx.counters.requests += 1
            params = parse_sampling(msg["sampling"])
            out = SeqOutput(int(msg["rid"]), params)
            decoder.admit_prompt(
                out, [int(t) for t in msg["prompt"]], make_generators(params)[0], ctx
            )
            msg = ctx.next_request(block=False) if decoder.has_room else None
        if ctx.stopping.is_set():
            return
        decoder.step(ctx)


def run_spec_decode(ctx: Any) -> None:
    """Target and draft in one worker: speculative decoding per request (Section 3.2 SpecDecode)."""
    from greenllm.engine.model.generate import speculative_generate

    k = int(ctx.init.get("k", 4))
    lean = bool(ctx.init.get("lean", False))
    while True:
        msg = ctx.next_request(block=True)
        if msg is None:
            return
        ctx.counters.requests += 1
        rid = int(msg["rid"])
        params = parse_sampling(msg["sampling"])
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
        ctx.emit(rid, list(result.tokens), [start_epoch + t for t in result.token_times_s])
        ctx.finish(rid, result.finish_reason, result.n_proposed, result.n_accepted)
