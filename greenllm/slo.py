"""SLO attainment: per-request timings and the two rules over them (paper, Sections 2.1 and 7.1).

The default rule (:func:`slo_attainment`) looks at a request's
*mean* TPOT: ``(finish - first token) / (output tokens - 1) <= slo.tpot_s``. The per-token
rule looks at every gap between consecutive token times: a request meets its TPOT part when at
least ``fraction`` of its gaps are ``<= slo.tpot_s`` (``fraction=1``: every gap). Both rules
need TTFT ``<= slo.ttft_s``; a request with one token (no gap) meets the TPOT part; a failed
request meets neither. Since the mean of the gaps is the mean TPOT, a request meeting the
per-token rule with ``fraction=1`` also meets the mean rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from greenllm.config import SLO
from greenllm.errors import ConfigError
from greenllm.workloads import RequestSet

__all__ = [
    "RequestTimings",
    "inter_token_gaps",
    "slo_attainment",
    "slo_attainment_per_token",
]


@dataclass(frozen=True)
class RequestTimings:
    """Per-request timing, columnar (one entry per request; NaN where a request was not served).

    ``token_times_s`` (optional) holds every output token's time, concatenated over requests;
    request ``i``'s tokens are ``token_times_s[token_offsets[i]:token_offsets[i + 1]]``.
    """

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    token_times_s: np.ndarray | None = None
    token_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def served(self) -> np.ndarray:
        return np.isfinite(self.finish_s)

    @property
    def ttft_s(self) -> np.ndarray:
        """Time to first token (NaN if never served)."""
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """Mean time per output token after the first (NaN for one-token requests)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                self.output_tokens > 1,
                (self.finish_s - self.first_token_s) / (self.output_tokens - 1),
                np.nan,
            )

    def tokens_of(self, i: int) -> np.ndarray:
        if self.token_times_s is None or self.token_offsets is None:
            raise ConfigError("token times were not recorded; run with record_token_times=True")
        return self.token_times_s[self.token_offsets[i] : self.token_offsets[i + 1]]

    @classmethod
    def from_requests(cls, requests: RequestSet) -> RequestTimings:
        """Timings for ``requests`` with nothing served yet (NaN times)."""
        n = len(requests)
        return cls(
            requests.arrival_s,
            np.full(n, np.nan),
            np.full(n, np.nan),
            requests.input_tokens,
            requests.output_tokens,
        )


def _column(func: str, name: str, value: object) -> np.ndarray:
    """``value`` as a 1-D float array (NaN allowed, the caller decides); ConfigError for
    strings, None, ragged or non-numeric input."""
    try:
        if isinstance(value, (str, bytes)) or value is None:
            raise TypeError(type(value).__name__)
        raw = np.asarray(value)
        if raw.dtype.kind not in "iuf":
            raise TypeError(f"dtype {raw.dtype}")
        return raw.astype(float).ravel()
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{func}: {name} = {value!r:.100}: must be an array of numbers") from err


def _check_common(func: str, slo: object, n_failed: object) -> int:
    if not isinstance(slo, SLO):
        raise ConfigError(f"{func}: slo = {slo!r:.100}: must be an SLO(ttft_s=..., tpot_s=...)")
    if isinstance(n_failed, bool) or not isinstance(n_failed, (int, np.integer)) or n_failed < 0:
        raise ConfigError(
            f"n_failed = {n_failed!r:.60}: must be an integer >= 0 (requests that never completed)"
        )
    return int(n_failed)


def slo_attainment(
    ttft_s: Sequence[float] | np.ndarray,
    tpot_s: Sequence[float] | np.ndarray,
    slo: SLO,
    n_failed: int = 0,
) -> tuple[float, float, float]:
    """(both, TTFT-only, TPOT-only) fractions of requests meeting ``slo`` (rule in the module doc).

    ``ttft_s[i]`` and ``tpot_s[i]`` belong to request ``i``; ``tpot_s[i]`` is NaN for a request
    with one output token. ``n_failed`` requests that never completed count as misses.
    """
    n_failed = _check_common("slo_attainment", slo, n_failed)
    ttft = _column("slo_attainment", "ttft_s", ttft_s)
    tpot = _column("slo_attainment", "tpot_s", tpot_s)
    if ttft.shape != tpot.shape:
        raise ConfigError(
            f"ttft_s has {ttft.size} requests but tpot_s has {tpot.size}: "
            "give one value per request in each"
        )
    if np.isnan(ttft).any():
        raise ConfigError("ttft_s contains NaN: count requests that produced no token in n_failed")
    n = ttft.size + n_failed
    if n == 0:
        return 0.0, 0.0, 0.0
    ok_ttft = ttft <= slo.ttft_s
    ok_tpot = np.isnan(tpot) | (tpot <= slo.tpot_s)
    return float((ok_ttft & ok_tpot).sum() / n), float(ok_ttft.sum() / n), float(ok_tpot.sum() / n)


def inter_token_gaps(timings: RequestTimings, *, served_only: bool = True) -> list[np.ndarray]:
    """Gaps between consecutive token times of each request (``len(tokens) - 1`` each).

    With ``served_only`` (default) the list holds served requests only, in request order, so it
    lines up with ``timings.ttft_s[timings.served]``. Needs recorded token times.
    """
    if not isinstance(timings, RequestTimings):
        raise ConfigError(f"inter_token_gaps: timings = {timings!r:.60}: must be RequestTimings")
    if not isinstance(served_only, (bool, np.bool_)):
        raise ConfigError(f"inter_token_gaps: served_only = {served_only!r:.60}: must be a bool")
    if timings.token_times_s is None or timings.token_offsets is None:
        raise ConfigError(
            "token times were not recorded: run the load with record_token_times=True "
            "(the HTTP client always records them)"
        )
    index = np.flatnonzero(timings.served) if served_only else range(len(timings))
    return [np.diff(timings.tokens_of(int(i))) for i in index]


def slo_attainment_per_token(
    ttft_s: Sequence[float] | np.ndarray,
    gaps_s: Sequence[Sequence[float] | np.ndarray],
    slo: SLO,
    *,
    fraction: float = 1.0,
    n_failed: int = 0,
) -> tuple[float, float, float]:
    """(both, TTFT-only, TPOT-only) fractions of requests meeting ``slo`` by the per-token rule.

    ``ttft_s[i]`` and ``gaps_s[i]`` (its inter-token gaps, possibly empty) belong to served
    request ``i``; a request meets the TPOT part when at least ``fraction`` of its gaps are
    ``<= slo.tpot_s``. ``n_failed`` requests count as misses of both parts.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ConfigError(f"fraction = {fraction!r}: must be a number in (0, 1]")
    if not 0 < fraction <= 1:  # NaN fails this too
        raise ConfigError(
            f"fraction = {fraction!r}: must be in (0, 1] (share of a request's inter-token "
            "gaps that must meet the TPOT target; 1 = every gap)"
        )
    n_failed = _check_common("slo_attainment_per_token", slo, n_failed)
    ttft = _column("slo_attainment_per_token", "ttft_s", ttft_s)
    if isinstance(gaps_s, (str, bytes)) or not hasattr(gaps_s, "__len__"):
        raise ConfigError(f"gaps_s = {gaps_s!r:.100}: must be one array of gaps per request")
    if len(gaps_s) != ttft.size:
        raise ConfigError(
            f"ttft_s has {ttft.size} requests but gaps_s has {len(gaps_s)}: give one gap array "
            "per served request"
        )
    if np.isnan(ttft).any():
        raise ConfigError("ttft_s contains NaN: count requests that produced no token in n_failed")
    n = ttft.size + int(n_failed)
    if n == 0:
        return 0.0, 0.0, 0.0
    ok_tpot = np.ones(ttft.size, dtype=bool)
    for i, gaps in enumerate(gaps_s):
        g = _column("slo_attainment_per_token", f"gaps_s[{i}]", gaps)
        if g.size == 0:
            continue
        if np.isnan(g).any() or (g < 0).any():
            raise ConfigError(f"gaps_s[{i}] has NaN or negative gaps: token times must not go back")
        need = math.ceil(fraction * g.size - 1e-9)
        ok_tpot[i] = int((g <= slo.tpot_s).sum()) >= need
    ok_ttft = ttft <= slo.ttft_s
    return float((ok_ttft & ok_tpot).sum() / n), float(ok_ttft.sum() / n), float(ok_tpot.sum() / n)
