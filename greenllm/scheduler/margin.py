"""SLO attainment under uncertainty: the planner's safety margin and fallback (beyond the paper).

The completed attainment of a filled cell is an estimate with an error ``sigma`` estimated in
logit space (:func:`~greenllm.scheduler.completion.complete.complete_with_uncertainty`), where the
errors are roughly symmetric. With a margin of ``k`` errors a filled cell counts as feasible
only when its lower bound reaches the target::

    lower = sigmoid(logit(point) - k * sigma)       (filled cells; measured: as measured)

raised, with ``monotone``, to the largest *measured* attainment at more load (a cell with a
measured cell above the target at more load meets it too, whatever its error). Mapping a
symmetric interval through the sigmoid, as ``stderr`` does, would understate the downside of
an estimate near 1. Where no configuration is confidently feasible, the fallback takes the
one most likely to meet the target, the largest ``z = (logit(point) - logit(target)) / sigma``
(a measured miss has no chance), instead of the highest point estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from greenllm.scheduler.algorithm import schedule
from greenllm.scheduler.completion.complete import CompletionResult
from greenllm.scheduler.completion.transforms import get_transform
from greenllm.scheduler.constraints import monotone_in_load
from greenllm.scheduler.matrix import RowKey

__all__ = ["AttainmentBounds", "attainment_bounds", "choose_with_margin"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttainmentBounds:
    """``point``: the completed attainment (clamped to the load order with ``monotone``);
    ``lower``: what Algorithm 1 compares with the target; ``z``: errors by which a filled
    cell clears the target (+inf / -inf on measured cells that meet / miss it)."""

    point: np.ndarray
    lower: np.ndarray
    z: np.ndarray


def attainment_bounds(
    att: CompletionResult,
    rows: Sequence[RowKey],
    slo_target: float,
    margin_sigmas: float,
    monotone: bool = True,
) -> AttainmentBounds:
    """Point estimate, lower bound after the margin and z-score of every cell (module doc)."""
    t = get_transform("logit")
    observed = att.observed_mask
    point = np.clip(att.values, 0.0, 1.0)
    if monotone:
        point = monotone_in_load(point, observed, rows)
    z = t.forward(point)
    sigma = att.sigma_transformed
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.nan_to_num((z - t.forward(np.array(slo_target))) / sigma)
    score = np.where(observed, np.where(point >= slo_target, np.inf, -np.inf), score)
    if margin_sigmas == 0:
        return AttainmentBounds(point, point, score)
    lower = np.where(observed, point, np.minimum(t.inverse(z - margin_sigmas * sigma), point))
    if monotone:
        lower = monotone_in_load(lower, observed, rows)
    return AttainmentBounds(point, lower, score)


def choose_with_margin(
    carbon: np.ndarray,
    bounds: AttainmentBounds,
    slo_target: float,
    priority: str = "slo",
    default: int = 0,
    margin_sigmas: float = 0.0,
) -> np.ndarray:
    """Algorithm 1 (:func:`~greenllm.scheduler.algorithm.schedule`) on ``carbon`` and
    ``bounds.lower``. With a margin and ``priority="slo"``, a workload without a feasible
    configuration gets the largest ``z``, then the highest point attainment, lower carbon,
    lower index; without a margin, the paper's fallback (the highest attainment)."""
    choice = schedule(carbon, bounds.lower, slo_target, priority, default)
    if margin_sigmas == 0 or priority != "slo":
        return choice
    none = ~(bounds.lower >= slo_target).any(axis=1)
    order = np.lexsort((carbon, -bounds.point, -bounds.z), axis=1)
    return np.where(none, order[:, 0], choice).astype(np.intp)
