"""Speculative-decoding verification by rejection sampling (Leviathan et al. 2023; the
paper's Section 3.2 SpecDecode and Disg-Spec-Decode). The single-process generation loops that
use it are in :mod:`greenllm.engine.model.generate`.

Given K draft tokens ``x_i`` sampled from the draft rows ``p_i`` and K+1 target rows ``q_i``,
token ``x_i`` is accepted with probability ``min(1, q_i(x_i) / p_i(x_i))``; at the first
rejection a token is drawn from ``norm(max(0, q_i - p_i))`` and verification stops; if all K
are accepted a bonus token is drawn from ``q_K``. The emitted tokens are distributed exactly as
sampling from the target alone, for any draft.

Random draws are arranged so that greedy (one-hot) rows consume no randomness, and so that
:func:`verify` and :func:`verify_lean` consume the generator identically: one uniform per
position where ``0 < q(x) < p(x)`` (the only undecided case), one per non-one-hot residual or
bonus row (inverse CDF, :func:`greenllm.engine.model.sampling.sample_row`).

Lean mode (beyond the paper): the verifier needs only ``p_i(x_i)`` per draft token, plus the
full draft row at the single rejected position, so Disg-Spec-Decode can send K floats instead
of K vocabulary rows and fetch one row on rejection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from greenllm.engine.model.sampling import (
    as_float64,
    sample_row,
    uniform,
)
from greenllm.errors import ConfigError, missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["VerifyResult", "rejection_sample", "rejection_sample_lean", "verify", "verify_lean"]

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
