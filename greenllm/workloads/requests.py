"""Request sets: what a backend is asked to serve (arrival times and sizes, columnar).

Columnar numpy arrays keep an hour of traffic at 10 QPS (36,000 requests) cheap to build and
to simulate. Prompts are optional: the simulator needs only sizes, real engines need text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from greenllm.config import RequestSize, RequestSizeDistribution
from greenllm.errors import ConfigError

__all__ = ["RequestSet", "poisson_arrivals_s"]


@dataclass(frozen=True, eq=False)
class RequestSet:
    """``n`` requests: arrival time (s from the start of the run), prompt and output tokens."""

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    prompts: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        arr = np.asarray(self.arrival_s, dtype=float)
        ins = np.asarray(self.input_tokens, dtype=np.int64)
        outs = np.asarray(self.output_tokens, dtype=np.int64)
        if not (arr.ndim == ins.ndim == outs.ndim == 1 and len(arr) == len(ins) == len(outs)):
            raise ConfigError(
                f"arrival_s ({arr.shape}), input_tokens ({ins.shape}) and output_tokens "
                f"({outs.shape}) must be 1-D arrays of one length"
            )
        if len(arr) and (not np.all(np.isfinite(arr)) or arr.min() < 0 or np.any(np.diff(arr) < 0)):
            raise ConfigError("arrival_s must be finite, >= 0 and sorted (non-decreasing)")
        if len(arr) and (ins.min() < 1 or outs.min() < 1):
            raise ConfigError("input_tokens and output_tokens must be >= 1 for every request")
        if self.prompts is not None and len(self.prompts) != len(arr):
            raise ConfigError(f"{len(self.prompts)} prompts for {len(arr)} requests")
        object.__setattr__(self, "arrival_s", arr)
        object.__setattr__(self, "input_tokens", ins)
        object.__setattr__(self, "output_tokens", outs)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestSet):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, k), getattr(other, k))
            for k in ("arrival_s", "input_tokens", "output_tokens")
        ) and self.prompts == other.prompts

    __hash__ = None  # type: ignore[assignment]

    @property
    def duration_s(self) -> float:
        """Time of the last arrival (0 for an empty set)."""
        return float(self.arrival_s[-1]) if len(self) else 0.0

    @classmethod
    def poisson(
        cls,
        qps: float,
        size: RequestSize | RequestSizeDistribution,
        *,
        duration_s: float | None = None,
        n: int | None = None,
        seed: int = 0,
    ) -> RequestSet:
        """Open-loop Poisson arrivals at ``qps`` for ``duration_s`` seconds (or ``n`` requests).

        A fixed :class:`RequestSize` gives every request that size (the paper truncates prompts
        to the percentile); a distribution samples sizes independently with the same seed.
        """
        arrivals = poisson_arrivals_s(qps, duration_s=duration_s, n=n, seed=seed)
        count = len(arrivals)
        if isinstance(size, RequestSize):
            ins = np.full(count, size.input_tokens)
            outs = np.full(count, size.output_tokens)
        else:
            rng = np.random.default_rng([seed, 1])
            ins = size.quantile(rng.uniform(0.005, 0.995, count), "input_tokens")
            outs = size.quantile(rng.uniform(0.005, 0.995, count), "output_tokens")
        return cls(arrivals, ins, outs)


def poisson_arrivals_s(
    qps: float, *, duration_s: float | None = None, n: int | None = None, seed: int = 0
) -> np.ndarray:
    """Arrival times of a Poisson process at ``qps`` (exponential gaps), starting after 0."""
    if not np.isfinite(qps) or qps <= 0:
        raise ConfigError(f"qps = {qps!r}: must be a finite number > 0")
    if (duration_s is None) == (n is None):
        raise ConfigError("give exactly one of duration_s or n")
    rng = np.random.default_rng(seed)
    if n is not None:
        if n < 0:
            raise ConfigError(f"n = {n}: must be >= 0")
        return np.cumsum(rng.exponential(1.0 / qps, n))
    assert duration_s is not None  # exactly one of the two was given
    if not np.isfinite(duration_s) or duration_s <= 0:
        raise ConfigError(f"duration_s = {duration_s!r}: must be a finite number > 0")
    expected = qps * duration_s
    guess = int(expected + 6 * np.sqrt(expected) + 16)
    times = np.cumsum(rng.exponential(1.0 / qps, guess))
    while times[-1] < duration_s:  # vanishingly rare: extend
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / qps, guess))])
    return times[times < duration_s]
