"""Single-process generation loops: target-only autoregressive decoding and speculative
decoding with :func:`~greenllm.engine.model.verifier.verify` (the reference the engine's workers are
tested against: greedy speculative output equals greedy target-only output token for token).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from greenllm.engine.model.cache import CachedLM, as_token_list
from greenllm.engine.model.sampling import SamplingParams, probs_from_logits, sample_row
from greenllm.engine.model.verifier import verify, verify_lean
from greenllm.errors import ConfigError, missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["GenerationResult", "autoregressive_generate", "speculative_generate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationResult:
    """Tokens generated for one prompt (prompt excluded) and how they were produced.

    token_times_s: seconds from the call's start at which each token was emitted.
    n_proposed / n_accepted: draft tokens proposed and accepted (0 without a draft).
    finish_reason: "length" (max_tokens reached) or "stop" (a stop token was emitted).
    """

    tokens: list[int]
    token_times_s: tuple[float, ...]
    n_proposed: int = 0
    n_accepted: int = 0
    n_steps: int = 0
    finish_reason: str = "length"

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed draft tokens (NaN when nothing was proposed)."""
        return self.n_accepted / self.n_proposed if self.n_proposed else float("nan")


def _emit(out: list[int], new: list[int], params: SamplingParams) -> tuple[list[int], bool]:
    """Append ``new`` to ``out`` up to max_tokens or a stop token; the added tokens and done."""
    added: list[int] = []
    for t in new:
        out.append(t)
        added.append(t)
        if t in params.stop_token_ids or len(out) >= params.max_tokens:
            return added, True
    return added, False


def _generator(params: SamplingParams, generator: Any) -> Any:
    return params.generator() if params.seed is not None else generator


def autoregressive_generate(
    model: Any, input_ids: Any, params: SamplingParams | None = None, generator: Any = None
) -> GenerationResult:
    """Plain one-token-per-forward generation with a KV cache (the target-only reference)."""
    params = params or SamplingParams()
    gen = _generator(params, generator)
    start_s = time.perf_counter()
    lm = CachedLM(model)
    out: list[int] = []
    times: list[float] = []
    logits = lm.feed(as_token_list(input_ids), last_only=True)[-1]
    steps = 0
    while True:
        steps += 1
        token = sample_row(probs_from_logits(logits, params), gen)
        added, done = _emit(out, [token], params)
        times += [time.perf_counter() - start_s] * len(added)
        if done:
            reason = "stop" if out[-1] in params.stop_token_ids else "length"
            return GenerationResult(out, tuple(times), n_steps=steps, finish_reason=reason)
        logits = lm.feed([token])[-1]


def speculative_generate(
    target: Any,
    draft: Any,
    input_ids: Any,
    k: int = 4,
    params: SamplingParams | None = None,
    generator: Any = None,
    *,
    lean: bool = False,
) -> GenerationResult:
    """Speculative decoding in one process: the draft proposes ``k`` tokens, the target scores
    them in one forward, :func:`verify` (or :func:`verify_lean`) accepts a prefix.

    Both models keep KV caches, cropped on rejection. The first token comes from the target's
    prefill. Output is distributed exactly as :func:`autoregressive_generate` of the target
    (token for token under greedy params).
    """
    params = params or SamplingParams()
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r}: the number of speculative tokens must be an integer >= 1")
    if target.config.vocab_size != draft.config.vocab_size:
        raise ConfigError(
            f"draft vocab {draft.config.vocab_size} != target vocab {target.config.vocab_size}: "
            "the draft must share the target's tokenizer"
        )
    gen = _generator(params, generator)
    start_s = time.perf_counter()
    prompt = as_token_list(input_ids)
    tgt, drf = CachedLM(target), CachedLM(draft)
    first = sample_row(probs_from_logits(tgt.feed(prompt, last_only=True)[-1], params), gen)
    out: list[int] = []
    _, done = _emit(out, [first], params)
    times = [time.perf_counter() - start_s]
    drf.feed(prompt, last_only=True)
    draft_pending = [first]  # emitted tokens not yet in the draft's cache
    n_proposed = n_accepted = steps = 0
    while not done:
        steps += 1
        k_step = min(k, params.max_tokens - len(out) - 1)
        proposal: list[int] = []
        draft_rows: list[torch.Tensor] = []
        feed = draft_pending
        for _ in range(k_step):
            row = probs_from_logits(drf.feed(feed)[-1], params)
            proposal.append(sample_row(row, gen))
            draft_rows.append(row)
            feed = proposal[-1:]
        base = tgt.length  # the target cache holds everything but the last emitted token
        target_rows = probs_from_logits(tgt.feed([out[-1], *proposal]), params)
        if lean:
            token_probs = [float(r[x]) for r, x in zip(draft_rows, proposal, strict=True)]
            result = verify_lean(
                proposal, token_probs, target_rows, lambda i, rows=draft_rows: rows[i], gen
            )
        else:
            stacked = torch.stack(draft_rows) if draft_rows else torch.empty(0, tgt.vocab_size)
            result = verify(proposal, stacked, target_rows, gen)
        n_proposed += k_step
        n_accepted += result.n_accepted
        tgt.crop(base + 1 + result.n_accepted)
        if result.n_accepted == k_step and k_step > 0:
            draft_pending = [proposal[-1], result.tokens[-1]]  # x_K was never fed to the draft
        else:
            drf.crop(drf.length - (k_step - 1 - result.n_accepted) if k_step else drf.length)
            draft_pending = [result.tokens[-1]] if k_step else [*draft_pending, result.tokens[-1]]
        added, done = _emit(out, result.tokens, params)
        times += [time.perf_counter() - start_s] * len(added)
    reason = "stop" if out[-1] in params.stop_token_ids else "length"
    logger.debug("speculative_generate: %d/%d accepted", n_accepted, n_proposed)
    return GenerationResult(out, tuple(times), n_proposed, n_accepted, steps, reason)
