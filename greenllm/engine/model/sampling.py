"""Token sampling: temperature, top-p (nucleus) filtering, and draws from a torch generator.

:func:`probs_from_logits` turns logits into the distribution the engine samples from; the
speculative verifier (:mod:`greenllm.engine.model.verifier`) compares the draft's and the target's
distributions built by this same function, so speculative decoding reproduces exactly the
distribution of plain sampling with the same :class:`SamplingParams`.

Temperature 0 means greedy: a one-hot row on the argmax (ties to the lowest index), and
:func:`sample` returns its token without consuming randomness.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from greenllm.errors import ConfigError, missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = [
    "SamplingDict",
    "SamplingParams",
    "as_float64",
    "probs_from_logits",
    "sample",
    "sample_row",
    "uniform",
]

logger = logging.getLogger(__name__)


class SamplingDict(TypedDict):
    """:class:`SamplingParams` as JSON (in the engine's messages)."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    stop_token_ids: list[int]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token.

    temperature: softmax temperature; 0 means greedy (argmax, ties to the lowest token id).
    top_p: keep the smallest set of most likely tokens whose mass reaches ``top_p`` (1 = all).
    max_tokens: stop after this many generated tokens.
    seed: seed of the per-request torch generator (None: the caller's or torch's global RNG).
    stop_token_ids: stop after emitting any of these (the stop token is included).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature={self.temperature!r}: must be a finite float >= 0")
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature}: must be >= 0 (0 = greedy)")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p={self.top_p!r}: must be in (0, 1] (1 = no filtering)")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise ConfigError(f"max_tokens={self.max_tokens!r}: must be an integer >= 1")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens={self.max_tokens}: must be an integer >= 1")
        bad_seed = isinstance(self.seed, bool) or not isinstance(self.seed, int)
        if self.seed is not None and bad_seed:
            raise ConfigError(f"seed={self.seed!r}: must be an integer or None")
        stops = tuple(self.stop_token_ids)
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in stops):
            raise ConfigError(f"stop_token_ids={self.stop_token_ids!r}: must be integers >= 0")
        object.__setattr__(self, "stop_token_ids", stops)

    def to_dict(self) -> SamplingDict:
        """These parameters as JSON-ready values."""
        return {"temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "seed": self.seed,
                "stop_token_ids": list(self.stop_token_ids)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingParams:
        """Parameters from :meth:`to_dict`'s form; missing keys take the defaults."""
        return cls(
            temperature=float(data.get("temperature", 0.0)),
            top_p=float(data.get("top_p", 1.0)),
            max_tokens=int(data.get("max_tokens", 64)),
            seed=None if data.get("seed") is None else int(data["seed"]),
            stop_token_ids=tuple(int(t) for t in data.get("stop_token_ids", ())),
        )

    @property
    def greedy(self) -> bool:
        """True when temperature is 0 (deterministic argmax decoding)."""
        return self.temperature == 0

    def generator(self) -> torch.Generator | None:
        """A fresh CPU generator seeded with :attr:`seed`, or None when no seed is set."""
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(self.seed)


def probs_from_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Sampling distribution(s) over the last dimension of ``logits`` (float32, rows sum to 1).

    Greedy (temperature 0): one-hot on the argmax (ties to the lowest index). Otherwise
    ``softmax(logits / temperature)`` restricted to the top-p nucleus and renormalised; the
    most likely token is always kept.
    """
    logits = torch.as_tensor(logits).float()
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ConfigError(f"logits of shape {tuple(logits.shape)}: need a last (vocab) dim >= 1")
    if params.greedy:
        index = logits.argmax(dim=-1, keepdim=True)  # first maximum = lowest index
        return torch.zeros_like(logits).scatter_(-1, index, 1.0)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return probs
    # Order by the logits, not the probabilities: two logits closer than float32 resolves after
    # softmax must still keep the logits' argmax first (the one greedy decoding picks).
    order = (logits / params.temperature).argsort(dim=-1, descending=True, stable=True)
    sorted_probs = probs.gather(-1, order)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop = mass_before >= params.top_p  # the first token always has mass_before == 0
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    filtered = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return filtered / filtered.sum(dim=-1, keepdim=True)


def uniform(generator: Any = None) -> float:
    """One U[0, 1) draw from a torch generator, a numpy Generator, or torch's global RNG."""
    if generator is None or isinstance(generator, torch.Generator):
        return float(torch.rand((), generator=generator, dtype=torch.float64))
    if hasattr(generator, "random"):  # numpy.random.Generator
        return float(generator.random())
    raise ConfigError(
        f"generator of type {type(generator).__name__}: use a torch.Generator, "
        "a numpy.random.Generator, or None"
    )


def as_float64(x: Any) -> np.ndarray:
    """A float64 numpy copy/view of a tensor (any device, grad or not) or an array-like."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.numpy().astype(np.float64) if x.dtype != torch.bfloat16 else x.double().numpy()
    return np.asarray(x, dtype=np.float64)


def sample_row(row: Any, generator: Any = None) -> int:
    """Draw one token from a 1-D distribution by inverse CDF with one uniform draw.

    A one-hot row returns its token without a draw. Rows need not be normalised (their sum is
    used), which lets the verifier sample residuals directly.
    """
    values = as_float64(row)
    top = int(values.argmax())
    total = float(values.sum())
    if values[top] >= total:  # all mass on one token
        return top
    u = uniform(generator) * total
    index = int(np.searchsorted(np.cumsum(values), u, side="right"))
    if index >= values.size or values[index] <= 0:  # rounding at the very top of the CDF
        index = int(np.flatnonzero(values > 0)[-1])
    return index


def sample(probs: torch.Tensor, generator: Any = None) -> int | torch.Tensor:
    """Draw from ``probs``: an int for a 1-D row, a LongTensor of one token per row for 2-D.

    Rows are sampled in order with :func:`sample_row` (one uniform draw per non-one-hot row).
    """
    probs = torch.as_tensor(probs)
    if probs.ndim == 1:
        return sample_row(probs, generator)
    if probs.ndim == 2:
        return torch.tensor([sample_row(row, generator) for row in probs], dtype=torch.long)
    raise ConfigError(f"probs of shape {tuple(probs.shape)}: need 1-D (vocab) or 2-D (rows, vocab)")
