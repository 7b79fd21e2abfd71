"""Adaptive speculation length: K per request from its running acceptance, off when it cannot pay.

A round proposes K draft tokens and verifies them in one target forward of K + 1 tokens; with a
per-token acceptance rate alpha it emits (Leviathan et al., ICML 2023, Eq. 1)

    E[tokens](K, alpha) = (1 - alpha^(K+1)) / (1 - alpha)

in the time ``draft(K) + target(K + 1)``, against one token per ``target(1)`` without
speculation. :class:`AdaptiveK` picks the K in ``1..k_max`` with the highest rate and turns
speculation off (K = 0) when even the best is not faster than plain decoding: speculation need
never be slower than not speculating (Timor et al., DSI, ICLR 2025, make the same argument).
Alpha is the posterior mean of a Beta prior updated with the request's accepted and rejected
draft tokens; the costs are measured (:class:`ForwardCost`) or given.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from greenllm.errors import ConfigError

__all__ = ["AdaptiveK", "ForwardCost", "expected_tokens"]


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens one round of ``k`` proposals emits at acceptance ``alpha`` (accepted + 1)."""
    if k <= 0:
        return 1.0
    if alpha >= 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


class ForwardCost:
    """A forward's time as ``base_s + per_token_s x n`` for ``n`` new tokens, fitted by least
    squares on the last ``window`` timings (one distinct ``n`` only: all of it is base time)."""

    def __init__(self, window: int = 64) -> None:
        self._seen: deque[tuple[int, float]] = deque(maxlen=window)

    def add(self, n_tokens: int, seconds: float) -> None:
        if n_tokens >= 1 and math.isfinite(seconds) and seconds >= 0:
            self._seen.append((n_tokens, seconds))

    @property
    def known(self) -> bool:
        return bool(self._seen)

    def coefficients(self) -> tuple[float, float]:
        """(base_s, per_token_s), both >= 0; (0, 0) before any timing."""
        if not self._seen:
            return 0.0, 0.0
        ns = [n for n, _ in self._seen]
        ts = [t for _, t in self._seen]
        n_mean, t_mean = sum(ns) / len(ns), sum(ts) / len(ts)
        var = sum((n - n_mean) ** 2 for n in ns)
        if var == 0:
            return t_mean, 0.0
        slope = sum((n - n_mean) * (t - t_mean) for n, t in self._seen) / var
        slope = max(slope, 0.0)
        return max(t_mean - slope * n_mean, 0.0), slope

    def seconds(self, n_tokens: int) -> float:
        base, per_token = self.coefficients()
        return base + per_token * n_tokens


@dataclass
class AdaptiveK:
    """K for the next round of one request.

    ``k_max``: the most tokens a round proposes. ``prior_alpha`` and ``prior_weight``: the Beta
    prior of the acceptance rate (mean and pseudo-count of draft tokens). ``min_gain``: the rate
    the best K must beat plain decoding by (1.0: any gain) before speculating.
    """

    k_max: int
    prior_alpha: float = 0.6
    prior_weight: float = 4.0
    min_gain: float = 1.0
    accepted: int = field(default=0, init=False)
    rejected: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.k_max, bool) or not isinstance(self.k_max, int) or self.k_max < 1:
            raise ConfigError(f"AdaptiveK.k_max = {self.k_max!r}: must be an integer >= 1")
        if not 0.0 < self.prior_alpha < 1.0:
            raise ConfigError(f"AdaptiveK.prior_alpha = {self.prior_alpha!r}: must be in (0, 1)")
        if not self.prior_weight > 0:
            raise ConfigError(f"AdaptiveK.prior_weight = {self.prior_weight!r}: must be > 0")
        if not self.min_gain >= 1.0:
            raise ConfigError(f"AdaptiveK.min_gain = {self.min_gain!r}: must be >= 1")

    def observe(self, proposed: int, accepted: int) -> None:
        """One verified round: ``accepted`` of ``proposed`` draft tokens (a rejection ends the
        round, so a round below ``proposed`` saw exactly one rejected token)."""
        if not 0 <= accepted <= proposed:
            raise ConfigError(f"accepted = {accepted} of proposed = {proposed}: 0..proposed")
        self.accepted += accepted
        self.rejected += int(accepted < proposed)

    @property
    def alpha(self) -> float:
        """Posterior mean acceptance rate."""
        a = self.prior_alpha * self.prior_weight + self.accepted
        return a / (self.prior_weight + self.accepted + self.rejected)

    def gain(self, k: int, draft: ForwardCost | float, target: ForwardCost) -> float:
        """Tokens per second with ``k`` proposals over tokens per second without (k = 0: 1).
        ``draft``: what drafting ``k`` tokens adds to a round, as a cost line in ``k`` or
        seconds per token."""
        if k <= 0:
            return 1.0
        plain_s = target.seconds(1)
        draft_s = draft.seconds(k) if isinstance(draft, ForwardCost) else k * draft
        round_s = draft_s + target.seconds(k + 1)
        if round_s <= 0 or plain_s <= 0:
            return expected_tokens(self.alpha, k)  # no costs yet: tokens per round
        return expected_tokens(self.alpha, k) * plain_s / round_s

    def next_k(
        self, draft: ForwardCost | float, target: ForwardCost, limit: int | None = None
    ) -> int:
        """The K in ``1..min(k_max, limit)`` with the highest :meth:`gain`, or 0 (speculation
        off) when none beats plain decoding by ``min_gain``; ``draft`` as for :meth:`gain`
        (the time the target waits for the draft, not the draft's busy time)."""
        top = self.k_max if limit is None else min(self.k_max, limit)
        if top < 1:
            return 0
        best = max(range(1, top + 1), key=lambda k: self.gain(k, draft, target))
        return best if self.gain(best, draft, target) > self.min_gain else 0
