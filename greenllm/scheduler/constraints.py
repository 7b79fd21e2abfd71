"""Domain knowledge applied to completed matrices (beyond the paper).

Low-rank completion knows nothing of the physics of serving; three orders do hold:

* **SLO attainment never rises with load.** For one application, serving more queries per
  second, or larger requests (more prompt *and* more output tokens) at the same rate, on the
  same configuration never makes more requests meet the application's SLO. On a row where
  every observed entry was saturated at 0, completion extrapolated 0.96 for an unprofiled
  cell whose truth was 0.003.
* **Time per offered token never falls with load**: a configuration that keeps up finishes
  the run just after the last arrival; one that falls behind takes longer per token offered.
* **Average power never falls with QPS** (more work per second on the same GPUs).

:func:`monotone_in_load` clamps each *filled* cell between the cells it is ordered with;
measured cells are never changed. The load order is partial: row ``a`` carries no more load
than row ``b`` when both are the same application and ``a`` has no more QPS, prompt tokens
and output tokens than ``b`` (``axes="qps"``: same request size and no more QPS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from greenllm.errors import ConfigError
from greenllm.scheduler.matrix import RowKey

__all__ = ["load_order", "monotone_in_load", "monotone_in_qps"]

Axes = Literal["qps", "qps+size"]


def load_order(rows: Sequence[RowKey], axes: Axes = "qps+size") -> list[np.ndarray]:
    """Per application, its row indices sorted by (QPS, prompt, output tokens).

    The sort is a linear extension of the load order: a row never comes after a row that
    carries more load.
    """
    if axes not in ("qps", "qps+size"):
        raise ConfigError(f"axes = {axes!r}: must be 'qps' or 'qps+size'")
    groups: dict[object, list[int]] = {}
    for i, key in enumerate(rows):
        group = key.application if axes == "qps+size" else (
            key.application, key.input_tokens, key.output_tokens)  # fmt: skip
        groups.setdefault(group, []).append(i)

    def load(i: int) -> tuple[float, int, int]:
        return (rows[i].qps, rows[i].input_tokens, rows[i].output_tokens)

    return [np.array(sorted(idx, key=load)) for idx in groups.values()]


def monotone_in_load(
    values: np.ndarray,
    observed: np.ndarray,
    rows: Sequence[RowKey],
    *,
    decreasing: bool = True,
    axes: Axes = "qps+size",
) -> np.ndarray:
    """Clamp filled cells so that ``values`` falls (``decreasing``) or rises with load.

    For a decreasing quantity, a filled cell is capped by the smallest value (observed or
    already clamped) of any row with less load, and floored by the largest *observed* value
    of any row with more load; where the two conflict (noise in the measurements) the
    measured floor wins. Increasing quantities are handled by symmetry. Vectorised over
    configurations; O(rows per application ^ 2) per application.
    """
    sign = 1.0 if decreasing else -1.0
    out = sign * np.array(values, dtype=float, copy=True)
    observed = np.asarray(observed, dtype=bool)
    if out.shape != observed.shape or out.ndim != 2 or out.shape[0] != len(rows):
        raise ConfigError(
            f"values {out.shape}, observed {observed.shape} and {len(rows)} rows do not match"
        )
    for order in load_order(rows, axes):
        if len(order) < 2:
            continue
        q = np.array([rows[i].qps for i in order])
        t_in = np.array([rows[i].input_tokens for i in order])
        t_out = np.array([rows[i].output_tokens for i in order])
        vals, obs = out[order], observed[order]
        measured = np.where(obs, vals, -np.inf)
        inf = np.full(vals.shape[1], np.inf)
        for k in range(len(order)):
            below = (q <= q[k]) & (t_in <= t_in[k]) & (t_out <= t_out[k])
            above = (q >= q[k]) & (t_in >= t_in[k]) & (t_out >= t_out[k])
            below[k] = above[k] = False
            if not (below.any() or above.any()) or obs[k].all():
                continue
            cap = vals[below].min(axis=0) if below.any() else inf
            floor = measured[above].max(axis=0) if above.any() else -inf
            clamped = np.clip(vals[k], floor, np.maximum(cap, floor))
            vals[k] = np.where(obs[k], vals[k], clamped)
        out[order] = vals
    return sign * out


def monotone_in_qps(values: np.ndarray, observed: np.ndarray, rows: Sequence[RowKey]) -> np.ndarray:
    """Clamp filled attainment so it does not increase with QPS within each workload group
    (application and request size): :func:`monotone_in_load` with ``axes="qps"``."""
    return monotone_in_load(values, observed, rows, decreasing=True, axes="qps")
