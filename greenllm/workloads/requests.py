"""Request sets: what a backend is asked to serve (arrival times and sizes, columnar).

Columnar numpy arrays keep an hour of traffic at 10 QPS (36,000 requests) cheap to build and
to simulate. Prompts are optional: the simulator needs only sizes, real engines need text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from greenllm.checks import finite_number
from greenllm.config import RequestSize, RequestSizeDistribution
from greenllm.errors import ConfigError
from greenllm.units import MAX_QPS, MAX_REQUESTS, MAX_TIME_S, MAX_TOKENS, MIN_QPS

__all__ = ["RequestSet", "poisson_arrivals_s"]


def _integer(func: str, name: str, value: object, lo: int, hi: int | None = None) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not (ok and lo <= value and (hi is None or value <= hi)):  # type: ignore[operator]
        top = "" if hi is None else f" <= {hi}"
        raise ConfigError(f"{func}: {name} = {value!r:.60}: must be an integer {lo} <= {name}{top}")
    return int(value)  # type: ignore[call-overload]


def _column(name: str, value: object, kind: str) -> np.ndarray:
    """A 1-D column of numbers: ``kind`` "f" (finite floats) or "i" (whole numbers)."""
    try:
        raw = np.asarray(value)
        if raw.dtype.kind not in "iuf":
            raise TypeError(f"dtype {raw.dtype}")
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"RequestSet: {name} = {value!r:.100}: must be numbers") from err
    if raw.size > MAX_REQUESTS:
        raise ConfigError(f"RequestSet: {name} has {raw.size} entries; at most {MAX_REQUESTS}")
    if kind == "f" or raw.dtype.kind == "f":
        arr = raw.astype(float)
        if not np.all(np.isfinite(arr)):
            raise ConfigError(f"RequestSet: {name} must be finite (no NaN or inf)")
        if kind == "f":
            return arr
        if np.any(arr != np.round(arr)):
            raise ConfigError(f"RequestSet: {name} must be whole numbers of tokens")
    else:
        arr = raw
    if np.any(arr < 1) or np.any(arr > MAX_TOKENS):
        raise ConfigError(
            f"RequestSet: {name} must be >= 1 and <= {MAX_TOKENS} for every request"
        )
    return arr.astype(np.int64)


@dataclass(frozen=True, eq=False)
class RequestSet:
    """``n`` requests: arrival time (s from the start of the run), prompt and output tokens."""

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    prompts: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        arr = _column("arrival_s", self.arrival_s, "f")
        ins = _column("input_tokens", self.input_tokens, "i")
        outs = _column("output_tokens", self.output_tokens, "i")
        if not (arr.ndim == ins.ndim == outs.ndim == 1 and len(arr) == len(ins) == len(outs)):
            raise ConfigError(
                f"arrival_s ({arr.shape}), input_tokens ({ins.shape}) and output_tokens "
                f"({outs.shape}) must be 1-D arrays of one length"
            )
        if len(arr) and (arr.min() < 0 or arr.max() > MAX_TIME_S or np.any(np.diff(arr) < 0)):
            raise ConfigError(
                f"arrival_s must be finite, 0 <= arrival_s <= {MAX_TIME_S:g} and sorted "
                "(non-decreasing)"
            )
        if self.prompts is not None and (
            isinstance(self.prompts, (str, bytes))
            or not isinstance(self.prompts, (tuple, list))
            or not all(isinstance(p, str) for p in self.prompts)
        ):
            raise ConfigError(f"prompts = {self.prompts!r:.100}: must be a tuple of strings")
        if self.prompts is not None:
            object.__setattr__(self, "prompts", tuple(self.prompts))
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
        if not isinstance(size, (RequestSize, RequestSizeDistribution)):
            raise ConfigError(
                f"RequestSet.poisson: size = {size!r:.100}: must be a RequestSize or "
                "RequestSizeDistribution"
            )
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
    """Arrival times of a Poisson process at ``qps`` (exponential gaps), starting after 0.

    Limits (ConfigError beyond them): ``MIN_QPS <= qps <= MAX_QPS``; ``0 <= n <= MAX_REQUESTS``;
    ``0 < duration_s <= MAX_TIME_S`` with ``qps * duration_s <= MAX_REQUESTS`` expected
    arrivals; ``seed`` an integer >= 0.
    """
    func = "poisson_arrivals_s"
    qps = finite_number("qps", qps, MIN_QPS, MAX_QPS, where=func)
    seed = _integer(func, "seed", seed, 0)
    if (duration_s is None) == (n is None):
        raise ConfigError("give exactly one of duration_s or n")
    rng = np.random.default_rng(seed)
    if n is not None:
        n = _integer(func, "n", n, 0, MAX_REQUESTS)
        times = np.cumsum(rng.exponential(1.0 / qps, n))
        if len(times) and times[-1] > MAX_TIME_S:  # only near MIN_QPS with n near the limit
            raise ConfigError(
                f"{func}: {n} arrivals at qps = {qps:g} span {times[-1]:.3g} s, more than "
                f"{MAX_TIME_S:g} s"
            )
        return times
    duration_s = finite_number("duration_s", duration_s, 0.0, MAX_TIME_S, lo_open=True, where=func)
    expected = qps * duration_s
    if expected > MAX_REQUESTS:
        raise ConfigError(
            f"{func}: qps * duration_s = {expected:.4g} expected arrivals; at most "
            f"{MAX_REQUESTS} (lower qps or duration_s)"
        )
    guess = int(expected + 6 * np.sqrt(expected) + 16)
    times = np.cumsum(rng.exponential(1.0 / qps, guess))
    while times[-1] < duration_s:  # vanishingly rare: extend
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / qps, guess))])
    return times[times < duration_s]
