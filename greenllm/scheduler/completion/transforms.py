"""Monotone transforms under which the planner's matrices are closer to low rank.

Carbon per token is positive and multiplicative (energy x intensity / throughput), so it is
completed in log space. SLO attainment is a probability that saturates at 0 and 1, so it is
completed in logit space, with inputs clipped to ``[eps, 1 - eps]`` (``eps = 1e-3``): a
measured 1.0 becomes logit(0.999) = 6.9, and targets above ``1 - eps`` cannot be resolved.
The clipped entries are marked as censored (the truth is only known to be beyond the bound);
the ``"sgd"`` and ``"als"`` models then charge no error for predicting past the bound, so a
plateau of 1.0s does not bend the low-rank fit (a Tobit-style loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from greenllm.errors import ConfigError

__all__ = ["LOGIT_EPS", "TRANSFORMS", "Transform", "get_transform"]

LOGIT_EPS = 1e-3


@dataclass(frozen=True)
class Transform:
    """``forward`` maps a value to the fitting space, ``inverse`` maps a fit back.

    ``check(values)`` returns a boolean mask of the values outside the transform's domain;
    ``censor(values)`` the entries that ``forward`` clipped (+1: the truth may be higher, -1:
    lower), or None.
    """

    name: str
    forward: Callable[[np.ndarray], np.ndarray]
    inverse: Callable[[np.ndarray], np.ndarray]
    check: Callable[[np.ndarray], np.ndarray]
    domain: str
    censor: Callable[[np.ndarray], np.ndarray | None] = lambda values: None


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _logit_censor(p: np.ndarray) -> np.ndarray | None:
    cens = (p >= 1.0 - LOGIT_EPS).astype(np.int8) - (p <= LOGIT_EPS).astype(np.int8)
    return cens if cens.any() else None


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.clip(0.5 * (1.0 + np.tanh(0.5 * z)), 0.0, 1.0)


TRANSFORMS: dict[str, Transform] = {
    "identity": Transform(
        "identity", lambda x: x, lambda z: z, lambda x: np.zeros(np.shape(x), bool), "any"
    ),
    "log": Transform("log", np.log, np.exp, lambda x: ~(x > 0), "> 0"),
    "logit": Transform(
        "logit", _logit, _sigmoid, lambda x: ~((x >= 0) & (x <= 1)), "in [0, 1]", _logit_censor
    ),
}


def get_transform(name: str) -> Transform:
    """The transform called ``name``, or :class:`ConfigError` listing the valid names."""
    if name not in TRANSFORMS:
        raise ConfigError(f"transform = {name!r}: must be one of {sorted(TRANSFORMS)}")
    return TRANSFORMS[name]
