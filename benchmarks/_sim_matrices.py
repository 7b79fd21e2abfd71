"""Shared by the simulator benchmarks: the demo's full matrices, and random masks of them.

``full_matrices`` profiles the paper's grid on the GPU simulator into a store (resumable: cells
already in the store are not profiled again, so on ``out/demo/profiles.sqlite`` written by
``greenllm demo --out out/demo`` it only reads) and builds the ProfileMatrices of the paper's
nine configurations at 16 Gbps. ``masked`` hides all but a random fraction of the cells.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path

import numpy as np

from greenllm.profiler.store import ProfileStore
from greenllm.profiler.sweep import paper_configurations
from greenllm.reproduce import Experiment, run_cells
from greenllm.scheduler import ProfileMatrices
from greenllm.scheduler.matrix import cells_from_records

DEFAULT_STORE = Path("out/demo/profiles.sqlite")
DEV_SEEDS = range(0, 30)  # used while developing the planner
# Held-out masks, never used to choose anything: A and B at the nominal densities of the first
# planner work (A before error_by="column", B after); C at the true observed density (masked_to),
# run once on the planner with verify_plan; D once on verify_plan's rounds and search bound.
HELDOUT_SEEDS = {
    "heldout-a": range(1000, 1020),
    "heldout-b": range(2000, 2020),
    "heldout-c": range(4000, 4020),
    "heldout-d": range(5000, 5020),
}


def full_matrices(store_path: Path = DEFAULT_STORE, n_requests: int = 400) -> ProfileMatrices:
    """Every cell of the paper's grid (41 workloads x 9 configurations) from the simulator."""
    store_path.parent.mkdir(parents=True, exist_ok=True)
    with ProfileStore(store_path) as store:
        run_cells(Experiment().cells(), store, backend="sim", n_requests=n_requests)
        records = store.query(backend="sim")
    configs = paper_configurations()
    ids = {c.id for c in configs}
    cells = [c for c in cells_from_records(records) if c["config"].id in ids]
    measured = [c for c in configs if any(x["config"].id == c.id for x in cells)]
    return ProfileMatrices.from_cells(cells, configs=measured)


def masked(m: ProfileMatrices, fraction: float, seed: int) -> ProfileMatrices:
    """``m`` with all but about ``fraction`` of the cells hidden at random, keeping at least
    one cell that served tokens in every row and every column."""
    rng = np.random.default_rng(seed)
    n, k = m.shape
    keep = rng.random((n, k)) < fraction
    served = m.carbon_observed
    for r in range(n):  # at least one cell that served tokens per row ...
        keep[r, rng.choice(np.flatnonzero(served[r]))] = True
    for c in np.flatnonzero(served.any(axis=0)):  # ... and per column
        keep[rng.choice(np.flatnonzero(served[:, c])), c] = True
    return m.where(keep)


def masked_to(m: ProfileMatrices, observed: float, seed: int) -> ProfileMatrices:
    """:func:`masked` at the density whose mask (same seed) has about ``observed`` of the cells
    profiled, counting the cells kept in every row and column (never fewer than those)."""
    lo, hi = 0.0, 1.0
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if masked(m, mid, seed).observed.mean() < observed else (lo, mid)
    return masked(m, hi, seed)


def parse_seeds(text: str) -> range | list[int]:
    """``"0-9"`` -> range(0, 10); ``"dev"``, ``"heldout-a"`` .. ``"heldout-d"``; ``"1,5"``."""
    if text == "dev":
        return DEV_SEEDS
    if text in HELDOUT_SEEDS:
        return HELDOUT_SEEDS[text]
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return range(lo, hi + 1)
    return [int(x) for x in text.split(",")]
