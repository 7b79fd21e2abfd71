"""Completion quality and speed: greenllm's methods vs scikit-surprise's SVD and baselines.

Synthetic low-rank log-normal matrices (rows = workloads, columns = configurations), like the
carbon matrix of Section 4.3: ``log C = mu + a_i + b_j + u_i . v_j (rank 3) + noise``. Every
method completes the same masked matrix in log space (``complete_carbon``), so all of them see
the same data and transform. "surprise SVD" is Surprise with its own defaults (100 factors,
20 epochs, lr 0.005, reg 0.02); "rank by CV" lets greenllm's rank search pick its factors;
"200 epochs" runs its SGD ten times longer (its defaults stop far from convergence here).
Reported: held-out relative RMSE ``sqrt(mean(((C_hat - C) / C)^2))`` over the hidden cells
(mean over seeds) and wall time, each method measured in this one run.

    python benchmarks/bench_completion.py            # ~2 min on 2 cores
    python benchmarks/bench_completion.py --quick    # a smoke run
    python benchmarks/bench_completion.py --default-call   # complete(M) vs Surprise only

The default-call table runs ``complete(M)`` exactly as a user would (no method, rank or
transform given; on these all-positive matrices it chooses the log transform) against
Surprise's SVD with its defaults, both in log space and on the raw values (Surprise's own
use), at 10, 20, 30 and 50% observed, on 300 x 24 and on the planner's shape, 41 x 9.

BLAS is pinned to one thread (unless OPENBLAS_NUM_THREADS is set): Surprise's Cython SGD is
single-threaded, and on a shared 2-core machine threaded BLAS on small matrices is erratic.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from greenllm.scheduler import (
    complete,
    complete_attainment,
    complete_carbon,
    schedule,
    surprise_available,
)

# name -> (method, extra keyword arguments); "surprise" uses Surprise's default 100 factors
METHODS: dict[str, tuple[str, dict]] = {
    "sgd (default)": ("sgd", {}),
    "als": ("als", {}),
    "softimpute": ("softimpute", {}),
    "surprise SVD": ("surprise", {"rank": 100}),
    "surprise SVD, rank by CV": ("surprise", {}),
    "surprise SVD, 200 epochs": ("surprise", {"rank": 100, "n_epochs": 200}),
    "column mean": ("mean", {}),
    "bias mu+b_i+c_j": ("bias", {}),
}
REFERENCE = "surprise SVD"


def lognormal_low_rank(n: int, m: int, seed: int, rank: int = 3, noise: float = 0.1) -> np.ndarray:
    """A positive ``n x m`` matrix whose log is rank ``rank`` plus main effects and noise."""
    rng = np.random.default_rng(seed)
    log_c = (
        -3.0
        + 0.5 * rng.normal(size=(n, 1))
        + 0.5 * rng.normal(size=(1, m))
        + 0.5 * rng.normal(size=(n, rank)) @ rng.normal(size=(rank, m)) / np.sqrt(rank)
        + noise * rng.normal(size=(n, m))
    )
    return np.exp(log_c)


def sample_mask(shape: tuple[int, int], density: float, seed: int) -> np.ndarray:
    """Observed cells at ``density``, with at least one per row and per column."""
    rng = np.random.default_rng(seed + 10_000)
    n, m = shape
    mask = rng.random(shape) < density
    mask[np.arange(n), rng.integers(0, m, n)] = True
    mask[rng.integers(0, n, m), np.arange(m)] = True
    return mask


def rel_rmse(pred: np.ndarray, truth: np.ndarray, hidden: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((pred[hidden] - truth[hidden]) / truth[hidden]) ** 2)))


def timed(fn: Callable[[], np.ndarray], repeats: int = 1) -> tuple[np.ndarray, float]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    assert out is not None
    return out, statistics.median(times)


def run_small(n: int, m: int, densities: list[float], seeds: int) -> None:
    names = [k for k in METHODS if "surprise" not in k or surprise_available()]
    print(f"\n### {n} x {m}, rank-3 log-normal, noise 0.1 (mean of {seeds} seeds)\n")
    header = "| observed | method | rel. RMSE | time (s) | RMSE / surprise | time / surprise |"
    print(header + "\n|---|---|---|---|---|---|")
    for density in densities:
        rmse: dict[str, list[float]] = {k: [] for k in names}
        secs: dict[str, list[float]] = {k: [] for k in names}
        for seed in range(seeds):
            truth = lognormal_low_rank(n, m, seed)
            mask = sample_mask(truth.shape, density, seed)
            x = np.where(mask, truth, np.nan)
            for name in names:
                method, kwargs = METHODS[name]
                out, dt = timed(partial(complete_carbon, x, method, seed=seed, **kwargs))
                rmse[name].append(rel_rmse(out, truth, ~mask))
                secs[name].append(dt)
        ref_r = np.mean(rmse.get(REFERENCE, [np.nan]))
        ref_t = np.mean(secs.get(REFERENCE, [np.nan]))
        for name in names:
            r, t = float(np.mean(rmse[name])), float(np.mean(secs[name]))
            ratios = f"{r / ref_r:.2f} | {t / ref_t:.2f}"
            print(f"| {density:.0%} | {name} | {r:.3f} | {t:.3f} | {ratios} |")


def run_default_call(n: int, m: int, densities: list[float], seeds: int) -> None:
    """The default call ``complete(M)`` (sgd, rank by CV, transform chosen from the data: log
    on these all-positive matrices) against Surprise's SVD with its defaults, side by side."""
    if not surprise_available():
        print("\n(default call vs Surprise: not run, scikit-surprise is not installed)")
        return
    print(f"\n### The default call complete(M) vs Surprise SVD, {n} x {m} "
          f"(mean of {seeds} seeds)\n")  # fmt: skip
    print("| observed | complete(M) rel. RMSE | surprise SVD (log) | surprise SVD (raw) "
          "| ratio vs surprise (log) | ratio vs surprise (raw) | complete(M) s | surprise s |")
    print("|---|---|---|---|---|---|---|---|")
    for density in densities:
        r_def, r_log, r_raw, t_def, t_sur = [], [], [], [], []
        for seed in range(seeds):
            truth = lognormal_low_rank(n, m, seed)
            mask = sample_mask(truth.shape, density, seed)
            x = np.where(mask, truth, np.nan)
            out, dt = timed(partial(complete, x))  # the default call, nothing else
            assert (out >= 0).all()
            r_def.append(rel_rmse(out, truth, ~mask))
            t_def.append(dt)
            sur, dt = timed(partial(complete, x, "surprise", rank=100, seed=seed, transform="log"))
            r_log.append(rel_rmse(sur, truth, ~mask))
            t_sur.append(dt)
            raw = complete(x, "surprise", rank=100, seed=seed, transform="identity")
            r_raw.append(rel_rmse(raw, truth, ~mask))
        d, lg, rw = float(np.mean(r_def)), float(np.mean(r_log)), float(np.mean(r_raw))
        print(f"| {density:.0%} | {d:.3f} | {lg:.3f} | {rw:.3f} | {d / lg:.2f} | {d / rw:.2f} "
              f"| {np.mean(t_def):.3f} | {np.mean(t_sur):.3f} |")  # fmt: skip


def run_large(n: int, m: int, density: float, repeats: int) -> None:
    truth = lognormal_low_rank(n, m, seed=0)
    mask = sample_mask(truth.shape, density, seed=0)
    x = np.where(mask, truth, np.nan)
    names = ["sgd (default)", "als", "column mean", "bias mu+b_i+c_j"]
    if surprise_available():
        names.insert(1, REFERENCE)
    print(f"\n### {n} x {m} at {density:.0%} observed (median of {repeats} runs)\n")
    print("| method | rel. RMSE | time (s) | RMSE / surprise | time / surprise |")
    print("|---|---|---|---|---|")
    results = {}
    for name in names:
        method, kwargs = METHODS[name]
        out, dt = timed(partial(complete_carbon, x, method, **kwargs), repeats)
        results[name] = (rel_rmse(out, truth, ~mask), dt)
    ref_r, ref_t = results.get(REFERENCE, (np.nan, np.nan))
    for name, (r, t) in results.items():
        print(f"| {name} | {r:.3f} | {t:.3f} | {r / ref_r:.2f} | {t / ref_t:.3f} |")
    print("| softimpute | not run: a full SVD per iteration, minutes at this size | | | |")

    # the planner's whole job on this size: complete both matrices, then Algorithm 1
    rng = np.random.default_rng(1)
    qps = rng.uniform(0.5, 8.0, (n, 1))
    att = 1.0 / (1.0 + np.exp(1.5 * (qps - rng.uniform(1.0, 8.0, (1, m)))))
    att_x = np.where(mask, att, np.nan)

    def plan() -> np.ndarray:
        return schedule(complete_carbon(x), complete_attainment(att_x), 0.9)

    _, dt = timed(plan, repeats)
    print(f"\ncomplete carbon + complete attainment + schedule, {n} x {m}: {dt:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, small sizes only")
    ap.add_argument(
        "--default-call", action="store_true",
        help="only the default call complete(M) vs Surprise at 10/20/30/50%% observed",
    )  # fmt: skip
    args = ap.parse_args()
    print(f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    if args.default_call:
        run_default_call(300, 24, [0.1, 0.2, 0.3, 0.5], seeds=5)
        run_default_call(41, 9, [0.1, 0.2, 0.3, 0.5], seeds=10)
        return
    if args.quick:
        run_small(120, 16, [0.2, 0.5], seeds=1)
        return
    run_small(300, 24, [0.1, 0.2, 0.3, 0.5], seeds=3)
    run_default_call(300, 24, [0.1, 0.2, 0.3, 0.5], seeds=5)
    run_default_call(41, 9, [0.1, 0.2, 0.3, 0.5], seeds=10)
    run_large(10_000, 200, 0.2, repeats=3)


if __name__ == "__main__":
    main()
