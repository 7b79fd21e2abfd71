"""Speculative-decoding verification by rejection sampling (Leviathan et al. 2023; the
paper's Section 3.2 SpecDecode and Disg-Spec-Decode), plus single-process reference loops.

Given K draft tokens ``x_i`` sampled from the draft rows ``p_i`` and K+1 target rows ``q_i``,
token ``x_i`` is accepted with probability ``min(1, q_i(x_i) / p_i(x_i))``; at the first
rejection a token is drawn from ``norm(max(0, q_i - p_i))`` and verification stops; if all K
are accepted a bonus token is drawn from ``q_K``. The emitted tokens are distributed exactly as
sampling from the target alone, for any draft.

Random draws are arranged so that greedy (one-hot) rows consume no randomness, and so that
:func:`verify` and :func:`verify_lean` consume the generator identically: one uniform per
position where ``0 < q(x) < p(x)`` (the only undecided case), one per non-one-hot residual or
bonus row (inverse CDF, :func:`greenllm.engine.sampling.sample_row`).

Lean mode (beyond the paper): the verifier needs only ``p_i(x_i)`` per draft token, plus the
full draft row at the single rejected position, so Disg-Spec-Decode can send K floats instead
of K vocabulary rows and fetch one row on rejection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from greenllm.engine._cache import CachedLM, as_token_list
from greenllm.engine.sampling import (
    SamplingParams,
    as_float64,
    probs_from_logits,
    sample_row,
    uniform,
)
from greenllm.errors import ConfigError, missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = [
    "GenerationResult",
    "VerifyResult",
    "autoregressive_generate",
    "rejection_sample",
    "rejection_sample_lean",
    "speculative_generate",
    "verify",
    "verify_lean",
]

logger = logging.getLogger(__name__)

_SUM_TOL = 1e-3  # float32 softmax rows over 50k tokens sum to 1 within ~1e-5


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of verifying one sequence's K draft tokens.

    tokens: accepted draft prefix plus one corrected (on rejection) or bonus token.
    n_accepted: draft tokens accepted (0..K); n_proposed: K.
    """

    tokens: list[int]
    n_accepted: int
    n_proposed: int

    @property
    def rejected(self) -> bool:
        return self.n_accepted < self.n_proposed


def _rows(x: Any, name: str, n_rows: int, vocab: int | None = None) -> np.ndarray:
    rows = as_float64(x)
    if rows.ndim == 1 and n_rows == 1 and name.endswith("row"):
        rows = rows[None]
    shape = rows.shape
    want_v = vocab if vocab is not None else "V"
    if rows.ndim != 2 or shape[0] != n_rows or (vocab is not None and shape[1] != vocab):
        raise ConfigError(f"{name} has shape {shape}: expected ({n_rows}, {want_v})")
    if shape[1] == 0:
        raise ConfigError(f"{name} has shape {shape}: the vocabulary dimension is empty")
    sums = rows.sum(axis=1)
    if rows.size and not (rows.min() >= 0 and np.isfinite(sums).all()):  # also catches NaN
        raise ConfigError(f"{name} holds negative or non-finite values: need probabilities")
    bad = np.abs(sums - 1) > _SUM_TOL
    if bad.any():
        i = int(bad.argmax())
        raise ConfigError(f"{name} row {i} sums to {sums[i]:.6g}: rows must sum to 1")
    return rows


def _tokens(draft_tokens: Any) -> list[int]:
    ids = np.asarray(draft_tokens.detach().cpu() if isinstance(draft_tokens, torch.Tensor)
                     else draft_tokens)
    if ids.ndim != 1 or (ids.size > 0 and ids.dtype.kind not in "iu"):
        raise ConfigError(
            f"draft_tokens has shape {ids.shape} and dtype {ids.dtype}: "
            "expected a 1-D sequence of K integer token ids"
        )
    return [int(t) for t in ids]


def _check_vocab(tokens: list[int], vocab: int) -> None:
    for i, t in enumerate(tokens):
        if not 0 <= t < vocab:
            raise ConfigError(f"draft_tokens[{i}] = {t}: outside the vocabulary [0, {vocab})")


def _accept(p: float, q: float, generator: Any) -> bool:
    """Accept with probability min(1, q/p); draw only when undecided (0 < q < p)."""
    if q >= p:
        return True
    if q <= 0:
        return False
    return uniform(generator) * p < q


def _residual_token(q_row: np.ndarray, p_row: np.ndarray, generator: Any) -> int:
    residual = np.maximum(q_row - p_row, 0.0)
    if residual.sum() <= 0:  # q == p up to rounding: rejection had probability ~0
        residual = q_row
    return sample_row(residual, generator)


def _verify(
    tokens: list[int],
    draft_token_probs: Sequence[float],
    target: np.ndarray,
    draft_row: Callable[[int], np.ndarray],
    generator: Any,
) -> VerifyResult:
    k = len(tokens)
    for i, x in enumerate(tokens):
        p = float(draft_token_probs[i])
        if p <= 0:
            raise ConfigError(
                f"draft token {x} at position {i} has draft probability {p}: a draft token "
                "must be sampled from its draft row (probability > 0)"
            )
        if not _accept(p, float(target[i, x]), generator):
            corrected = _residual_token(target[i], draft_row(i), generator)
            return VerifyResult([*tokens[:i], corrected], n_accepted=i, n_proposed=k)
    return VerifyResult([*tokens, sample_row(target[k], generator)], n_accepted=k, n_proposed=k)


def verify(
    draft_tokens: Any, draft_probs: Any, target_probs: Any, generator: Any = None
) -> VerifyResult:
    """:func:`rejection_sample` returning a :class:`VerifyResult` (tokens and counts)."""
    tokens = _tokens(draft_tokens)
    target = _rows(target_probs, "target_probs", len(tokens) + 1)
    vocab = target.shape[1]
    _check_vocab(tokens, vocab)
    draft = _rows(draft_probs, "draft_probs", len(tokens), vocab)
    token_probs = [float(draft[i, x]) for i, x in enumerate(tokens)]
    return _verify(tokens, token_probs, target, lambda i: draft[i], generator)


def rejection_sample(
    draft_tokens: Any, draft_probs: Any, target_probs: Any, generator: Any = None
) -> list[int]:
    """Verify K draft tokens; the accepted prefix plus one corrected or bonus token.

    draft_tokens: K token ids; draft_probs: (K, V) draft rows they were sampled from;
    target_probs: (K+1, V) target rows at the same positions plus the bonus position.
    Tensors or numpy arrays; ``generator`` is a torch.Generator, numpy Generator or None.
    """
    return verify(draft_tokens, draft_probs, target_probs, generator).tokens


def verify_lean(
    draft_tokens: Any,
    draft_token_probs: Any,
    target_probs: Any,
    fetch_draft_row: Callable[[int], Any],
    generator: Any = None,
) -> VerifyResult:
    """:func:`rejection_sample_lean` returning a :class:`VerifyResult`."""
    probs = as_float64(draft_token_probs).reshape(-1)
    k = probs.size
    tokens = _tokens(draft_tokens)
    if len(tokens) != k:
        raise ConfigError(
            f"draft_token_probs has {k} values but draft_tokens has {len(tokens)}: "
            "need one probability p_i(x_i) per draft token"
        )
    target = _rows(target_probs, "target_probs", k + 1)
    vocab = target.shape[1]
    _check_vocab(tokens, vocab)
    if not np.isfinite(probs).all() or (probs > 1 + _SUM_TOL).any():
        raise ConfigError(f"draft_token_probs = {probs.tolist()}: need probabilities in (0, 1]")
    fetched: list[int] = []

    def draft_row(i: int) -> np.ndarray:
        fetched.append(i)
        row = _rows(fetch_draft_row(i), f"fetch_draft_row({i}) row", 1, vocab)[0]
        if abs(float(row[tokens[i]]) - float(probs[i])) > 1e-6:
            raise ConfigError(
                f"fetch_draft_row({i}) gives p({tokens[i]}) = {float(row[tokens[i]]):.6g} but "
                f"draft_token_probs[{i}] = {float(probs[i]):.6g}: they must come from one row"
            )
        return row

    return _verify(tokens, probs.tolist(), target, draft_row, generator)


def rejection_sample_lean(
    draft_tokens: Any,
    draft_token_probs: Any,
    target_probs: Any,
    fetch_draft_row: Callable[[int], Any],
    generator: Any = None,
) -> list[int]:
    """:func:`rejection_sample` from only ``p_i(x_i)`` per draft token (K floats).

    ``fetch_draft_row(i)`` returns the full draft row at position ``i``; it is called at most
    once, and only when position ``i`` is rejected (to draw from the residual). Same tokens as
    :func:`rejection_sample` for the same generator state.
    """
    return verify_lean(
        draft_tokens, draft_token_probs, target_probs, fetch_draft_row, generator
    ).tokens


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
    logits = lm.feed(as_token_list(input_ids))[-1]
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
    first = sample_row(probs_from_logits(tgt.feed(prompt)[-1], params), gen)
    out: list[int] = []
    _, done = _emit(out, [first], params)
    times = [time.perf_counter() - start_s]
    drf.feed(prompt)
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
