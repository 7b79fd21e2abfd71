"""A small, physically shaped synthetic profile set for planner tests (no simulator needed).

Each configuration has a capacity (QPS at which half the requests miss the SLO) and draws
idle + utilisation-dependent power on each of its GPUs for a 600 s window.
"""

from __future__ import annotations

import numpy as np

from greenllm.config import Configuration
from greenllm.scheduler import ProfileMatrices, RowKey

DURATION_S = 600.0
OUTPUT_TOKENS = 140
QPS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)

# (configuration, capacity qps, new-GPU utilisation scale, old-GPU utilisation scale)
CONFIGS = [
    (Configuration(kind="standalone"), 5.0, 1.0, 0.0),
    (Configuration(kind="spec_decode", draft_model="llama-1b"), 3.5, 0.4, 0.0),
    (Configuration(kind="dpd", old_gpu="T4"), 2.5, 0.35, 0.9),
    (Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b"), 6.0, 0.45, 0.5),
]
POWER_W = {"A100": (50.0, 400.0), "T4": (10.0, 70.0)}  # (idle, max)


def cell(qps: float, index: int, configs: list | None = None) -> dict:
    """One profiled cell of ``configs`` (default :data:`CONFIGS`) at ``qps``."""
    cfg, cap, new_scale, old_scale = (configs or CONFIGS)[index]
    util = min(1.0, qps / cap)
    energy = []
    for gpu, scale in zip(cfg.gpus, (new_scale, old_scale), strict=False):
        idle, peak = POWER_W[gpu]
        energy.append((idle + (peak - idle) * min(1.0, scale * util)) * DURATION_S)
    return {
        "row": RowKey("sharegpt", 160, OUTPUT_TOKENS, qps),
        "config": cfg,
        "seconds": [DURATION_S] * len(cfg.gpus),
        "energy_j": energy,
        "tokens": qps * DURATION_S * OUTPUT_TOKENS,
        "attainment": float(1.0 / (1.0 + np.exp((qps - cap) / 0.35))),
    }


def matrices(observed_fraction: float = 1.0, seed: int = 0) -> ProfileMatrices:
    """All cells, or a random subset keeping at least one cell per row and per column."""
    rng = np.random.default_rng(seed)
    n_rows, n_cfg = len(QPS), len(CONFIGS)
    keep = rng.random((n_rows, n_cfg)) < observed_fraction
    keep[np.arange(n_rows), rng.integers(0, n_cfg, n_rows)] = True
    keep[rng.integers(0, n_rows, n_cfg), np.arange(n_cfg)] = True
    cells = [cell(q, c) for r, q in enumerate(QPS) for c in range(n_cfg) if keep[r, c]]
    return ProfileMatrices.from_cells(cells, configs=[c[0] for c in CONFIGS])
