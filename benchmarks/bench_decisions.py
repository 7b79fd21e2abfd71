"""Decision quality: the planner (completion + Algorithm 1) on sparse data vs the full-data oracle.

A *provider* gives the full carbon and SLO-attainment matrices ``(n_workloads, n_configs)`` of a
problem; the planner sees only a random X% of the cells (at least one per row and column),
completes both matrices (carbon in log space, attainment in logit space) and runs Algorithm 1,
with or without the uncertainty margin. The oracle runs Algorithm 1 on the full matrices.
Reported, against the full matrices:

* regret: mean of ``C[chosen] / C[oracle] - 1`` over workloads where a feasible configuration
  exists and the chosen one is feasible;
* violations: workloads where a feasible configuration exists but the chosen one is not
  (severe: its attainment is more than 0.05 below the target);
* fallback mismatches: workloads with no feasible configuration where the choice differs from
  the oracle's fallback (max attainment).

    python benchmarks/bench_decisions.py                      # synthetic provider, ~30 s
    python benchmarks/bench_decisions.py --provider pkg.mod:fn  # fn(seed) -> (carbon, att)

From Python: ``evaluate(provider, densities, seeds, method, target)`` returns the rows.

The default provider is synthetic but shaped like the real problem: rows are application x
request size x QPS, columns are configurations, each with a capacity; attainment falls with
load ``rho = qps / capacity`` as ``1 / (1 + rho^h)``; carbon per served token falls with QPS
(idle power and embodied carbon amortised over more tokens) and, once throughput saturates at
capacity, rises slowly with overload (queueing, preemption and recompute).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import importlib
import time
from collections.abc import Callable

import numpy as np

from greenllm.scheduler import complete, complete_with_uncertainty, schedule, schedule_with_margin

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
                overload = 1 + 0.5 * np.maximum(rho - 0.7, 0)  # queueing, preemption, recompute
                joules = fixed_w / served + dyn_j * (tokens / output) * overload
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


def planners(method: str, truth: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """name -> fn(carbon_x, att_x, mask, target) -> chosen config per workload.

    With ``truth`` (the full matrices), two diagnostic planners complete one matrix and take
    the other one true, to show which completion the decisions suffer from.
    """

    def plain(cx, ax, mask, target):
        return schedule(
            complete(cx, method, transform="log"), complete(ax, method, transform="logit"), target
        )

    def margin(sigmas: float) -> Callable:
        def plan(cx, ax, mask, target):
            c = complete_with_uncertainty(cx, method, transform="log")
            a = complete_with_uncertainty(ax, method, transform="logit")
            return schedule_with_margin(c.values, a.values, mask, a.stderr, target, sigmas).choice

        return plan

    def measured_only(cx, ax, mask, target):
        # no completion: an unmeasured configuration is treated as infeasible
        return schedule(np.where(mask, cx, 1e9), np.where(mask, ax, 0.0), target)

    def half(which: str) -> Callable:
        def plan(cx, ax, mask, target):
            assert truth is not None
            c = truth[0] if which == "att" else complete(cx, method, transform="log")
            a = truth[1] if which == "carbon" else complete(ax, method, transform="logit")
            return schedule(c, a, target)

        return plan

    diagnostic = {}
    if truth is not None:
        diagnostic = {
            f"diagnostic: CF carbon ({method}), true attainment": half("carbon"),
            f"diagnostic: true carbon, CF attainment ({method})": half("att"),
        }
    return {
        **diagnostic,
        f"CF ({method}) + Algorithm 1": plain,
        f"CF ({method}) + margin 1 sigma": margin(1.0),
        f"CF ({method}) + margin 2 sigma": margin(2.0),
        "measured cells only": measured_only,
    }


def score(carbon, att, chosen, oracle, target) -> tuple[list[float], int, int, int]:
    """Regrets of feasible choices, violations, severe violations (att < target - 0.05), and
    fallback mismatches."""
    rows = np.arange(carbon.shape[0])
    has = (att >= target).any(axis=1)
    got = att[rows, chosen]
    regret = carbon[rows, chosen] / carbon[rows, oracle] - 1.0
    violations = int((has & (got < target)).sum())
    severe = int((has & (got < target - 0.05)).sum())
    mismatches = int((~has & (chosen != oracle)).sum())
    return list(regret[has & (got >= target)]), violations, severe, mismatches


def evaluate(
    provider: Provider,
    densities: list[float],
    seeds: int = 3,
    method: str = "sgd",
    target: float = 0.9,
    diagnose: bool = False,
) -> list[dict]:
    """One dict per (density, planner): regrets, violations, timing, over ``seeds`` problems."""
    out = []
    for density in densities:
        stats: dict[str, list] = {}
        n_rows = 0
        for seed in range(seeds):
            carbon, att = provider(seed)
            n_rows += carbon.shape[0]
            oracle = schedule(carbon, att, target)
            mask = sample_mask(carbon.shape, density, seed)
            cx, ax = np.where(mask, carbon, np.nan), np.where(mask, att, np.nan)
            for name, plan in planners(method, (carbon, att) if diagnose else None).items():
                t0 = time.perf_counter()
                chosen = plan(cx, ax, mask, target)
                dt = time.perf_counter() - t0
                reg, vio, sev, mis = score(carbon, att, chosen, oracle, target)
                acc = stats.setdefault(name, [[], 0, 0, 0, 0.0])
                acc[0] += reg
                for k, v in enumerate((vio, sev, mis, dt), start=1):
                    acc[k] += v
        for name, (reg, vio, sev, mis, secs) in stats.items():
            r = np.array(reg) if reg else np.zeros(1)
            out.append(
                {
                    "observed": density,
                    "planner": name,
                    "mean_regret": float(r.mean()),
                    "p95_regret": float(np.percentile(r, 95)),
                    "violations": vio,
                    "severe": sev,
                    "fallback_diff": mis,
                    "workloads": n_rows,
                    "seconds_per_run": secs / seeds,
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--provider", default=None, help="module:function, fn(seed) -> (C, att)")
    ap.add_argument("--method", default="sgd", help="completion method (default sgd)")
    ap.add_argument("--target", type=float, default=0.9, help="SLO attainment target")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--densities", default="0.1,0.2,0.3,0.5")
    ap.add_argument("--diagnose", action="store_true", help="add the half-true planners")
    args = ap.parse_args()
    provider = load_provider(args.provider) if args.provider else synthetic_problem
    densities = [float(d) for d in args.densities.split(",")]
    carbon0, _ = provider(0)
    print(
        f"provider {args.provider or 'synthetic_problem'}: {carbon0.shape[0]} workloads x "
        f"{carbon0.shape[1]} configs, target {args.target}, {args.seeds} seeds, "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}\n"
    )
    print(
        "| observed | planner | mean regret | p95 regret | violations | severe | fallback diff "
        "| s/run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = evaluate(provider, densities, args.seeds, args.method, args.target, args.diagnose)
    for row in rows:
        print(
            f"| {row['observed']:.0%} | {row['planner']} | {100 * row['mean_regret']:.2f} % | "
            f"{100 * row['p95_regret']:.1f} % | {row['violations']} / {row['workloads']} | "
            f"{row['severe']} | {row['fallback_diff']} | {row['seconds_per_run']:.2f} |"
        )


if __name__ == "__main__":
    main()
