"""Decision quality of the planner on matrices profiled by the GPU simulator.

Profiles the paper's grid on the simulator (or reuses the demo's store), then hides all but
X% of the cells, plans with the Planner (completion + Algorithm 1; monotone attainment on and
off; with and without a safety margin) and compares with the oracle that sees every cell:

* regret: chosen / oracle carbon per token - 1, over workloads where a feasible configuration
  exists and the chosen one is feasible in the full matrix;
* violations: workloads where a feasible configuration exists but the chosen one is not
  ("severe": its true attainment is more than 0.05 below the target).

Usage::

    .venv/bin/python benchmarks/bench_planner_sim.py [--store out/demo/profiles.sqlite]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from greenllm.profiler.store import ProfileStore
from greenllm.reproduce import Experiment, paper_configurations, run_cells
from greenllm.scheduler import Planner, schedule
from greenllm.scheduler.matrix import ProfileMatrices, cells_from_records


def full_matrices(store_path: Path, n_requests: int) -> ProfileMatrices:
    with ProfileStore(store_path) as store:
        run_cells(Experiment().cells(), store, backend="sim", n_requests=n_requests)
        records = store.query(backend="sim")
    configs = paper_configurations()
    ids = {c.id for c in configs}
    cells = [c for c in cells_from_records(records) if c["config"].id in ids]
    measured = [c for c in configs if any(x["config"].id == c.id for x in cells)]
    return ProfileMatrices.from_cells(cells, configs=measured)


def masked(m: ProfileMatrices, fraction: float, seed: int) -> ProfileMatrices:
    rng = np.random.default_rng(seed)
    n, k = m.shape
    keep = rng.random((n, k)) < fraction
    served = m.carbon_observed
    for r in range(n):  # at least one cell that served tokens per row ...
        keep[r, rng.choice(np.flatnonzero(served[r]))] = True
    for c in np.flatnonzero(served.any(axis=0)):  # ... and per column
        keep[rng.choice(np.flatnonzero(served[:, c])), c] = True
    hide = ~keep
    return ProfileMatrices(
        rows=m.rows, configs=m.configs,
        seconds=np.where(hide[..., None], np.nan, m.seconds),
        energy_j=np.where(hide[..., None], np.nan, m.energy_j),
        tokens=np.where(hide, np.nan, m.tokens),
        attainment=np.where(hide, np.nan, m.attainment),
    )  # fmt: skip


def evaluate(full: ProfileMatrices, planner: Planner, fraction: float, seeds: range) -> dict:
    carbon = full.carbon_g_per_token(planner.intensity_g_per_kwh, planner.lifetimes_years)
    # A configuration that served nothing (or could not run) is never a feasible choice.
    attainment = np.nan_to_num(full.attainment, nan=0.0)
    carbon = np.where(np.isfinite(carbon), carbon, 1e9)
    oracle = schedule(carbon, attainment, planner.slo_target, "slo", full.default_column())
    feasible = attainment >= planner.slo_target
    regrets, violations, severe, n, seconds = [], 0, 0, 0, 0.0
    for seed in seeds:
        sparse = masked(full, fraction, seed)
        start = time.perf_counter()
        plan = planner.plan(sparse)
        seconds += time.perf_counter() - start
        chosen = np.array([full.column(e.configuration) for e in plan.entries])
        for r, c in enumerate(chosen):
            if not feasible[r].any():
                continue
            n += 1
            if feasible[r, c]:
                regrets.append(carbon[r, c] / carbon[r, oracle[r]] - 1)
            else:
                violations += 1
                severe += int(attainment[r, c] < planner.slo_target - 0.05)
    return {
        "regret": float(np.mean(regrets)) if regrets else float("nan"),
        "p95": float(np.percentile(regrets, 95)) if regrets else float("nan"),
        "violations": violations,
        "severe": severe,
        "n": n,
        "s_per_plan": seconds / len(seeds),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=Path("out/demo/profiles.sqlite"))
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--densities", default="0.1,0.2,0.3,0.5")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    args.store.parent.mkdir(parents=True, exist_ok=True)
    full = full_matrices(args.store, args.requests)
    print(
        f"simulator matrices: {full.shape[0]} workloads x {full.shape[1]} configurations "
        f"(CISO, 7-year lifetimes, SLO target 0.9), {args.seeds} seeds per density\n"
    )
    planners = {
        "CF (sgd) + Algorithm 1 + monotone": Planner(region="CISO"),
        "CF (sgd) + Algorithm 1, no monotone": Planner(region="CISO", monotone=False),
        "CF (sgd) + monotone + margin 1 sigma": Planner(region="CISO", margin_sigmas=1.0),
        "CF (als) + monotone": Planner(region="CISO", method="als"),
    }
    print("| observed | planner | mean regret | p95 regret | violations | severe | s/plan |")
    print("|---|---|---|---|---|---|---|")
    for fraction in (float(x) for x in args.densities.split(",")):
        for name, planner in planners.items():
            r = evaluate(full, planner, fraction, range(args.seeds))
            print(f"| {fraction:.0%} | {name} | {100 * r['regret']:.2f} % | "
                  f"{100 * r['p95']:.1f} % | {r['violations']} / {r['n']} | {r['severe']} | "
                  f"{r['s_per_plan']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
