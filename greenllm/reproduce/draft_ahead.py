"""DSD with and without draft-ahead on the paper's pairs (beyond the paper), on the simulator.

For each old GPU (T4, V100), draft (1B, 300M), K and load: the same Poisson ShareGPT requests
served by DSD on the A100 + old GPU, once as the paper's DSD and once with draft-ahead
(:mod:`greenllm.speculation.ahead`). Reported: median time per output token, the energy per
output token of both GPUs, and draft-ahead's hit rate and the share of the hits' drafting
hidden behind verification.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from greenllm.config import Configuration

__all__ = ["compare_draft_ahead"]


def compare_draft_ahead(
    olds: Sequence[str] = ("T4", "V100"),
    drafts: Sequence[str] = ("llama-1b", "llama-300m"),
    ks: Sequence[int] = (1, 2),
    qps_levels: Sequence[float] = (0.5, 4.0),
    n_requests: int = 300,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (old GPU, draft, K, QPS): ``tpot_ms`` and ``j_per_token`` without and
    with draft-ahead, ``hit_rate`` and ``hidden_share`` with it."""
    from greenllm.backends.sim import SimBackend
    from greenllm.workloads import workload

    paper, ahead = SimBackend(), SimBackend(dsd_draft_ahead=True)
    rows = []
    for old in olds:
        for draft in drafts:
            for k in ks:
                c = Configuration(kind="dsd", old_gpu=old, draft_model=draft,
                                  num_speculative_tokens=k)  # fmt: skip
                for qps in qps_levels:
                    w = workload("sharegpt", qps=qps)
                    runs = [b.run(c, w, duration_s=n_requests / qps, seed=seed)
                            for b in (paper, ahead)]  # fmt: skip
                    a = runs[1].extra
                    verdicts = a["ahead_hits"] + a["ahead_misses"]
                    drafted = a["ahead_hidden_s"] + a["ahead_exposed_s"]
                    rows.append({
                        "old_gpu": old, "draft": draft, "k": k, "qps": qps,
                        "tpot_ms": [float(np.nanmedian(r.requests.tpot_s)) * 1e3 for r in runs],
                        "j_per_token": [sum(g.energy_j for g in r.gpus) / r.output_tokens
                                        for r in runs],
                        "hit_rate": a["ahead_hits"] / verdicts if verdicts else None,
                        "hidden_share": a["ahead_hidden_s"] / drafted if drafted else None,
                    })  # fmt: skip
    return rows
