"""Decision quality: the planner (completion + Algorithm 1) on sparse data vs the full-data oracle.

A *provider* gives the full carbon and SLO-attainment matrices ``(n_workloads, n_configs)`` of a
problem; the planner sees only a random X% of the cells (at least one per row and column),
completes both matrices (carbon in log space, attainment in logit space) and runs Algorithm 1,
with or without the uncertainty margin. The oracle runs Algorithm 1 on the full matrices.
Reported, against the full matrices:

* regret: mean of ``C[chosen] / C[oracle] - 1`` over workloads where a feasible configuration
  exists and the chosen one is feasible;
* violations: workloads where a feasible configuration exists but the chosen one is not;
* fallback mismatches: workloads with no feasible configuration where the choice differs from
  the oracle's fallback (max attainment).

    python benchmarks/bench_decisions.py                      # synthetic provider, ~1 min
    python benchmarks/bench_decisions.py --provider pkg.mod:fn  # fn(seed) -> (carbon, att)

The default provider is synthetic but shaped like the real problem: rows are application x
request size x QPS, columns are configurations, each with a capacity; attainment falls with
load (``1 / (1 + rho^h)``), carbon per token falls with QPS (fixed power and embodied carbon
amortised) and rises past capacity (queueing).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from greenllm.scheduler.algorithm import schedule, schedule_with_margin  # noqa: E402
from greenllm.scheduler.completion import complete, complete_with_uncertainty  # noqa: E402

Provider = Callable[[int], tuple[np.ndarray, np.ndarray]]

APPS = {"conversation": (256, 140), "code": (512, 200), "summarisation": (2048, 120)}
SIZE_SCALES = (0.5, 1.0, 2.0)
QPS = tuple(np.round(np.geomspace(0.25, 8.0, 16), 3))
N_CONFIGS = 24


def synthetic_problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Full ``(carbon g/token, attainment)`` matrices: 3 apps x 3 sizes x 16 QPS, 24 configs."""
    rng = np.random.default_rng(seed)
    cap = rng.uniform(0.8, 8.0, N_CONFIGS)  # QPS at 50 % attainment for a 1x request
    sens = rng.uniform(0.5, 1.5, N_CONFIGS)  # how capacity shrinks with request size
    steep = rng.uniform(4.0, 10.0, N_CONFIGS)  # how fast attainment collapses past capacity
    fixed_w = 150.0 * cap**0.8 * rng.uniform(0.7, 1.3, N_CONFIGS)  # idle + embodied, W-eq.
    dyn_j = 0.8 * rng.uniform(0.6, 1.4, N_CONFIGS)  # J per token at light load
    app_fit = np.exp(0.15 * rng.normal(size=(len(APPS), N_CONFIGS)))  # app x config affinity
    carbon, att = [], []
    for a, (prompt, output) in enumerate(APPS.values()):
        for scale in SIZE_SCALES:
            tokens = scale * (prompt / 8 + output)  # prefill counts less than decode per token
            cap_ij = cap * app_fit[a] * (scale * prompt / 512) ** (-0.3 * sens) / scale**sens
            for qps in QPS:
                rho = qps / cap_ij
                att.append(1.0 / (1.0 + rho**steep))
                served = np.minimum(qps, cap_ij) * scale * output  # tokens/s actually served
                joules = fixed_w / served + dyn_j * (tokens / output) * (1 + 0.5 * rho**2)
                carbon.append(joules * 261 / 3.6e6)  # g/token at 261 g/kWh (CISO)
    noise = np.exp(0.03 * rng.normal(size=(len(carbon), N_CONFIGS)))
    att_m = np.round(np.array(att) * 200) / 200  # measured over 200 requests
    return np.array(carbon) * noise, att_m


def load_provider(spec: str) -> Provider:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def sample_mask(shape: tuple[int, int], density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 10_000)
    n, m = shape
    mask = rng.random(shape) < density
    mask[np.arange(n), rng.integers(0, m, n)] = True
    mask[rng.integers(0, n, m), np.arange(m)] = True
    return mask


def planners(method: str) -> dict[str, Callable]:
    """name -> fn(carbon_x, att_x, mask, target) -> chosen config per workload."""

    def plain(cx, ax, mask, target):
        return schedule(
            complete(cx, method, transform="log"), complete(ax, method, transform="logit"), target
        )

    def margin(cx, ax, mask, target):
        c = complete_with_uncertainty(cx, method, transform="log")
        a = complete_with_uncertainty(ax, method, transform="logit")
        return schedule_with_margin(c.values, a.values, mask, a.stderr, target, 1.0).choice

    def measured_only(cx, ax, mask, target):
        # no completion: an unmeasured configuration is treated as infeasible
        return schedule(np.where(mask, cx, 1e9), np.where(mask, ax, 0.0), target)

    return {
        f"CF ({method}) + Algorithm 1": plain,
        f"CF ({method}) + margin 1 sigma": margin,
        "measured cells only": measured_only,
    }


def score(carbon, att, chosen, oracle, target) -> tuple[list[float], int, int]:
    rows = np.arange(carbon.shape[0])
    has = (att >= target).any(axis=1)
    ok = att[rows, chosen] >= target
    regret = carbon[rows, chosen] / carbon[rows, oracle] - 1.0
    violations = int((has & ~ok).sum())
    mismatches = int((~has & (chosen != oracle)).sum())
    return list(regret[has & ok]), violations, mismatches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--provider", default=None, help="module:function, fn(seed) -> (C, att)")
    ap.add_argument("--method", default="sgd", help="completion method (default sgd)")
    ap.add_argument("--target", type=float, default=0.9, help="SLO attainment target")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--densities", default="0.1,0.2,0.3,0.5")
    args = ap.parse_args()
    provider = load_provider(args.provider) if args.provider else synthetic_problem
    densities = [float(d) for d in args.densities.split(",")]
    carbon0, _ = provider(0)
    print(
        f"provider {args.provider or 'synthetic_problem'}: {carbon0.shape[0]} workloads x "
        f"{carbon0.shape[1]} configs, target {args.target}, {args.seeds} seeds, "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}\n"
    )
    print("| observed | planner | mean regret | p95 regret | violations | fallback diff | s/run |")
    print("|---|---|---|---|---|---|---|")
    for density in densities:
        stats: dict[str, tuple[list[float], int, int, float, int]] = {}
        for seed in range(args.seeds):
            carbon, att = provider(seed)
            oracle = schedule(carbon, att, args.target)
            mask = sample_mask(carbon.shape, density, seed)
            cx, ax = np.where(mask, carbon, np.nan), np.where(mask, att, np.nan)
            for name, plan in planners(args.method).items():
                t0 = time.perf_counter()
                chosen = plan(cx, ax, mask, args.target)
                dt = time.perf_counter() - t0
                reg, vio, mis = score(carbon, att, chosen, oracle, args.target)
                old = stats.get(name, ([], 0, 0, 0.0, 0))
                stats[name] = (old[0] + reg, old[1] + vio, old[2] + mis, old[3] + dt, old[4] + 1)
        n_rows = carbon0.shape[0] * args.seeds
        for name, (reg, vio, mis, secs, runs) in stats.items():
            r = np.array(reg) if reg else np.zeros(1)
            p95 = np.percentile(r, 95)
            print(
                f"| {density:.0%} | {name} | {100 * r.mean():.2f} % | {100 * p95:.1f} % | "
                f"{vio} / {n_rows} | {mis} | {secs / runs:.2f} |"
            )


if __name__ == "__main__":
    main()
