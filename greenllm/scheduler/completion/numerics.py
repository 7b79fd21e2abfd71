"""Numerical helpers of the completion methods: scaling, fold splits, row samples, SVD."""

from __future__ import annotations

import numpy as np

from greenllm.scheduler.completion.base import Observed

__all__ = ["sample_rows", "split_folds", "standardize", "top_svd"]


def standardize(values: np.ndarray) -> tuple[float, float]:
    """Centre and scale of ``values`` so that ``(v - centre) / scale`` has unit variance."""
    centre = float(values.mean())
    scale = float(values.std())
    return centre, scale if scale > 1e-12 * max(1.0, abs(centre)) else 1.0


def split_folds(obs: Observed, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Assign each observed entry a fold ``0..n_folds-1``, or -1 if it must stay in training.

    One random entry of every row and of every column is protected (-1), so holding out any
    fold never empties a row or a column; the others are dealt round-robin in random order.
    """
    perm = rng.permutation(obs.size)
    protected = np.zeros(obs.size, dtype=bool)
    # the first entry of each row / column in the random order is protected
    _, first_row = np.unique(obs.rows[perm], return_index=True)
    _, first_col = np.unique(obs.cols[perm], return_index=True)
    protected[perm[first_row]] = True
    protected[perm[first_col]] = True
    folds = np.full(obs.size, -1, dtype=np.intp)
    free = perm[~protected[perm]]
    folds[free] = np.arange(free.size) % max(n_folds, 1)
    return folds


def sample_rows(obs: Observed, target_entries: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of random rows holding about ``target_entries`` observed entries.

    Rows are added in random order until the target is reached; then, for every column the
    sample misses, the first row (in the same order) that observes it.
    """
    n, m = obs.shape
    perm = rng.permutation(n)
    counts = np.bincount(obs.rows, minlength=n)[perm]
    k = int(np.searchsorted(np.cumsum(counts), target_entries)) + 1
    chosen = np.zeros(n, dtype=bool)
    chosen[perm[:k]] = True
    covered = np.zeros(m, dtype=bool)
    covered[obs.cols[chosen[obs.rows]]] = True
    if not covered.all():
        rank_of_row = np.empty(n, dtype=np.intp)
        rank_of_row[perm] = np.arange(n)
        first = np.full(m, n, dtype=np.intp)
        np.minimum.at(first, obs.cols, rank_of_row[obs.rows])
        chosen[perm[first[~covered]]] = True
    return np.flatnonzero(chosen)


def top_svd(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` leading singular triplets ``(U, s, Vt)`` of a dense matrix.

    For a few triplets of a larger matrix, randomized subspace iteration (Halko, Martinsson &
    Tropp 2011: ``k + 8`` probes, 3 power iterations, fixed seed) in float32; otherwise LAPACK.
    """
    n, m = a.shape
    k = max(0, min(k, n, m))
    if k + 8 >= min(n, m) // 2 or min(n, m) <= 32:
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        return u[:, :k], s[:k], vt[:k]
    a32 = a.astype(np.float32)
    probes = np.random.default_rng(12345).standard_normal((m, k + 8)).astype(np.float32)
    y, _ = np.linalg.qr(a32 @ probes)
    for _ in range(3):
        w, _ = np.linalg.qr(a32.T @ y)
        y, _ = np.linalg.qr(a32 @ w)
    ub, s, vt = np.linalg.svd((y.T @ a32).astype(np.float64), full_matrices=False)
    return (y.astype(np.float64) @ ub)[:, :k], s[:k], vt[:k]
