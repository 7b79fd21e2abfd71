"""Domain knowledge applied to completed matrices (beyond the paper).

SLO attainment cannot rise with load: for one application and request size, serving more
queries per second on the same configuration never makes more requests meet the SLO. Low-rank
completion knows nothing of this and, on a row where every observed entry is saturated at 0,
can extrapolate a high attainment for an unobserved cell (seen in tests/scheduler). Clamping
each filled cell between its neighbours along QPS removes those impossible values; observed
cells are never changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from greenllm.scheduler.matrix import RowKey

__all__ = ["monotone_in_qps"]


def monotone_in_qps(values: np.ndarray, observed: np.ndarray, rows: Sequence[RowKey]) -> np.ndarray:
    """Clamp filled attainment so it does not increase with QPS within each workload group.

    For each (application, request size) group and each configuration, a filled cell is capped
    by the smallest value at any lower QPS (observed or already clamped) and floored by the
    largest *observed* value at any higher QPS. Vectorised over configurations.
    """
    out = np.array(values, dtype=float, copy=True)
    groups: dict[tuple[str, int, int], list[int]] = {}
    for i, key in enumerate(rows):
        groups.setdefault((key.application, key.input_tokens, key.output_tokens), []).append(i)
    for idx in groups.values():
        order = np.array(sorted(idx, key=lambda i: rows[i].qps))
        if len(order) < 2:
            continue
        vals, obs = out[order], observed[order]
        floor = np.where(obs, vals, -np.inf)
        floor = np.maximum.accumulate(floor[::-1], axis=0)[::-1]  # max observed at >= this QPS
        for k in range(len(order)):
            cap = vals[k - 1] if k else np.full(vals.shape[1], np.inf)
            clamped = np.clip(vals[k], floor[k], np.maximum(cap, floor[k]))
            vals[k] = np.where(obs[k], vals[k], clamped)
        out[order] = vals
    return out
