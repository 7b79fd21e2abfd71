"""Completion quality and speed on the simulator's matrices (issue 3, benchmark 1 (b)).

The demo's full matrices (41 workloads x 9 configurations, ``greenllm demo --out out/demo``),
with all but X% of the cells hidden at random (X counts the one served cell kept in every row and
column, as in ``bench_planner_sim.py``). Two matrices are completed separately:

* carbon per token (embodied + operational at CISO's 261 g/kWh, 7-year lifetimes), in log
  space (``complete_carbon``); cells where a configuration served no token have no carbon
  and are left out. Metrics over the hidden cells: relative RMSE
  ``sqrt(mean(((C^ - C) / C)^2))`` and the median relative error;
* SLO attainment in logit space (``complete_attainment``). Metrics: RMSE (attainment is a
  fraction already) and how many hidden cells land on the wrong side of the 0.9 target.

Methods: greenllm's ``sgd`` (the default of ``complete``), ``als``, ``softimpute``, Surprise's
SVD (its defaults, rank chosen by greenllm's CV, or 200 epochs), column mean and
``mu + b_i + c_j``; and the planner's own estimates (``Planner().complete``: carbon through
its physical factors, attainment by ALS clamped to the load order). Wall time: completing
both matrices, mean over seeds.

    .venv/bin/python benchmarks/bench_completion_sim.py [--seeds 0-9]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _sim_matrices import DEFAULT_STORE, full_matrices, masked_to, parse_seeds
from bench_completion import METHODS, REFERENCE

from greenllm.scheduler import Planner, complete_attainment, complete_carbon, surprise_available

INTENSITY = 261.0  # CISO, g/kWh
LIFETIME_YEARS = 7.0
TARGET = 0.9
PLANNER = "planner (carbon factors; als + load order)"


def _metrics(c_hat: np.ndarray, a_hat: np.ndarray, truth: tuple, hidden: tuple) -> list[float]:
    carbon, att = truth
    hc, ha = hidden
    rel = (c_hat[hc] - carbon[hc]) / carbon[hc]
    wrong = (a_hat[ha] >= TARGET) != (att[ha] >= TARGET)
    return [float(np.sqrt(np.mean(rel**2))), float(np.median(np.abs(rel))),
            float(np.sqrt(np.mean((a_hat[ha] - att[ha]) ** 2))), float(wrong.sum())]  # fmt: skip


def run(store: Path, densities: list[float], seeds: range | list[int]) -> None:
    full = full_matrices(store)
    carbon = full.carbon_g_per_token(INTENSITY, LIFETIME_YEARS)
    att = full.attainment
    names = [k for k in METHODS if "surprise" not in k or surprise_available()] + [PLANNER]
    planner = Planner(intensity_g_per_kwh=INTENSITY, lifetimes_years=LIFETIME_YEARS)
    print(f"simulator matrices {full.shape[0]} x {full.shape[1]}; {len(seeds)} seeds per density")
    print("\n| observed | method | carbon rel. RMSE | carbon median rel. err | attainment RMSE "
          "| wrong side of 0.9 | time (s) | carbon RMSE / surprise |\n"
          "|---|---|---|---|---|---|---|---|")  # fmt: skip
    for density in densities:
        scores = {k: [] for k in names}
        secs = {k: [] for k in names}
        hidden_att = 0
        for seed in seeds:
            sparse = masked_to(full, density, seed)
            c_obs = sparse.carbon_g_per_token(INTENSITY, LIFETIME_YEARS)
            hidden = (np.isfinite(carbon) & ~sparse.carbon_observed, ~sparse.observed)
            hidden_att += int(hidden[1].sum())
            for name in names:
                t0 = time.perf_counter()
                if name == PLANNER:
                    filled = planner.complete(sparse)
                    c_hat, a_hat = filled["carbon"], filled["attainment"]
                    t = [time.perf_counter() - t0]
                else:
                    method, kwargs = METHODS[name]
                    c_hat = complete_carbon(c_obs, method, seed=seed, **kwargs)
                    t = [time.perf_counter() - t0]
                    t0 = time.perf_counter()
                    a_hat = complete_attainment(sparse.attainment, method, seed=seed, **kwargs)
                    t.append(time.perf_counter() - t0)
                scores[name].append(_metrics(c_hat, a_hat, (carbon, att), hidden))
                secs[name].append(float(np.sum(t)))
        ref = np.mean(scores.get(REFERENCE, [[np.nan]]), axis=0)[0]
        for name in names:
            rmse, med, a_rmse, _ = np.mean(scores[name], axis=0)
            wrong = int(np.sum(scores[name], axis=0)[3])
            print(f"| {density:.0%} | {name} | {rmse:.3f} | {med:.3f} | {a_rmse:.3f} | "
                  f"{wrong} / {hidden_att} | {np.mean(secs[name]):.3f} | {rmse / ref:.2f} |",
                  flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE)
    ap.add_argument("--densities", default="0.1,0.2,0.3,0.5")
    ap.add_argument("--seeds", default="0-9")
    args = ap.parse_args()
    run(args.store, [float(x) for x in args.densities.split(",")], parse_seeds(args.seeds))


if __name__ == "__main__":
    main()
