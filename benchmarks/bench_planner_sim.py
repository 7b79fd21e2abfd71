"""Decision quality of the planner on matrices profiled by the GPU simulator.

Reuses the demo's profile store (``greenllm demo --out out/demo``; missing cells are profiled),
hides all but X% of the cells at random (X is the true fraction profiled, counting the cell
kept in every row and column), plans with the Planner and compares with the oracle, Algorithm 1
on the full matrices:

* regret: chosen / oracle carbon per token - 1, over workloads where a feasible configuration
  exists and the chosen one is feasible in the full matrix (mean over all such decisions;
  "seed spread" is the lowest and highest per-seed mean, and their standard deviation);
* violations: workloads where a feasible configuration exists but the chosen one is not
  ("severe": its true attainment is more than 0.05 below the target).

Seeds: ``dev`` (0-29) were used while developing the planner; ``heldout-a`` (1000-1019),
``heldout-b`` (2000-2019), ``heldout-c`` (4000-4019) and ``heldout-d`` (5000-5019) never chose
anything (docs/planner.md).
The "verify" planners spend part of the same number of profiled cells on
:func:`~greenllm.scheduler.refine.verify_plan` instead of at random.

Usage::

    .venv/bin/python benchmarks/bench_planner_sim.py [--seeds dev|heldout-d|0-9] [--diagnose]
        [--densities 0.1,0.3] [--only NAME]

Before each density the script prints (as an HTML comment under the table) how many cells the
random masks profile and how many the verify planners can spend: at 10% of the 41 x 9 cells
the mask is already at its floor of one cell per row and per column (47-50 cells, 13%), so
the verify planners get no cell to verify and equal the planner without verify.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _sim_matrices import DEFAULT_STORE, full_matrices, masked, masked_to, parse_seeds

from greenllm.scheduler import Planner, ProfileMatrices, schedule
from greenllm.scheduler.carbon_factors import carbon_factors
from greenllm.scheduler.refine import reveal, verify_plan

Chooser = Callable[[ProfileMatrices, int], np.ndarray]  # sparse, seed -> column per row of full


def truth(full: ProfileMatrices, planner: Planner) -> tuple[np.ndarray, np.ndarray]:
    """Full carbon (1e9 where a configuration served nothing) and attainment (0 there)."""
    carbon = full.carbon_g_per_token(planner.intensity_g_per_kwh, planner.lifetimes_years)
    return np.where(np.isfinite(carbon), carbon, 1e9), np.nan_to_num(full.attainment, nan=0.0)


def planner_chooser(full: ProfileMatrices, planner: Planner) -> Chooser:
    def choose(sparse: ProfileMatrices, seed: int) -> np.ndarray:
        return np.array([full.column(e.configuration) for e in planner.plan(sparse).entries])

    return choose


def verifying_chooser(
    full: ProfileMatrices, planner: Planner, share: float, one_round: bool = False, **kw: float
) -> Chooser:
    """The same number of profiled cells as the random mask, but only ``1 - share`` of them at
    random (a mask of that density, same seed) and the rest spent by :func:`verify_plan` on the
    cells the plan chose (``one_round``: rounds of the whole budget; ``kw``: to verify_plan)."""

    def choose(sparse: ProfileMatrices, seed: int) -> np.ndarray:
        base = masked_to(full, (1.0 - share) * float(sparse.observed.mean()), seed)
        budget = int(sparse.observed.sum() - base.observed.sum())
        state = [base]

        def measure(cells: list) -> ProfileMatrices:
            state[0] = reveal(full, state[0], cells)
            return state[0]

        rounds = {"round_cells": max(1, budget)} if one_round else {}
        v = verify_plan(planner, base, measure, budget, **rounds, **kw)
        return np.array([full.column(e.configuration) for e in v.plan.entries])

    return choose


def diagnostic_chooser(full: ProfileMatrices, planner: Planner, true_part: str) -> Chooser:
    """The planner with one matrix replaced by the truth: where does the regret come from?"""
    carbon, attainment = truth(full, planner)

    def choose(sparse: ProfileMatrices, seed: int) -> np.ndarray:
        m, base = planner.candidates(sparse)
        cols = [full.column(c) for c in m.configs]
        filled = planner.complete(m)
        if true_part == "attainment":
            att = attainment[:, cols]
            z = np.where(att >= planner.slo_target, np.inf, -np.inf)
            filled = {**filled, "attainment": att, "attainment_lower": att, "attainment_z": z}
        else:
            filled = {**filled, "carbon": carbon[:, cols]}
        return np.array(cols)[planner.choose(filled, base)]

    return choose


def verify_budgets(full: ProfileMatrices, fraction: float, seeds: range | list[int],
                   share: float) -> tuple[int, int, int]:  # fmt: skip
    """(fewest, most profiled cells of the random mask, most cells left to ``verify_plan``) over
    ``seeds``: what :func:`verifying_chooser` gets at this density."""
    total, budget = [], []
    for seed in seeds:
        sparse = masked_to(full, fraction, seed)
        base = masked_to(full, (1.0 - share) * float(sparse.observed.mean()), seed)
        total.append(int(sparse.observed.sum()))
        budget.append(int(sparse.observed.sum() - base.observed.sum()))
    return min(total), max(total), max(budget)


def evaluate(full: ProfileMatrices, planner: Planner, choose: Chooser, fraction: float,
             seeds: range | list[int], list_violations: bool = False) -> dict:  # fmt: skip
    carbon, attainment = truth(full, planner)
    target = planner.slo_target
    oracle = schedule(carbon, attainment, target, "slo", full.default_column())
    feasible = attainment >= target
    has = feasible.any(axis=1)
    regrets, per_seed, violations, severe, seconds, observed = [], [], 0, 0, 0.0, []
    for seed in seeds:
        sparse = masked_to(full, fraction, seed)
        observed.append(float(sparse.observed.mean()))
        start = time.perf_counter()
        chosen = choose(sparse, seed)
        seconds += time.perf_counter() - start
        rows = np.flatnonzero(has)
        ok = feasible[rows, chosen[rows]]
        r = carbon[rows[ok], chosen[rows[ok]]] / carbon[rows[ok], oracle[rows[ok]]] - 1
        regrets.extend(r.tolist())
        per_seed.append(float(r.mean()) if r.size else float("nan"))
        bad = rows[~ok]
        violations += bad.size
        for r in bad if list_violations else ():
            ok_att = [f"{attainment[r, c]:.3f}" for c in np.flatnonzero(feasible[r])]
            print(f"  violation: seed {seed}, {full.rows[r].label}: chose "
                  f"{full.configs[chosen[r]].label} (attainment {attainment[r, chosen[r]]:.3f}); "
                  f"feasible ones: {ok_att}")  # fmt: skip
        severe += int((attainment[bad, chosen[bad]] < target - 0.05).sum())
    return {
        "regret": float(np.mean(regrets)) if regrets else float("nan"),
        "p95": float(np.percentile(regrets, 95)) if regrets else float("nan"),
        "seed_min": float(np.min(per_seed)),
        "seed_max": float(np.max(per_seed)),
        "seed_sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
        "violations": violations,
        "severe": severe,
        "n": int(has.sum()) * len(seeds),
        "s_per_plan": seconds / len(seeds),
        "observed": float(np.mean(observed)),
    }


def check_orders(full: ProfileMatrices, target: float = 0.9) -> None:
    """How often the demo's profiles obey the orders the planner assumes (adjacent pairs)."""
    f = carbon_factors(full)
    rate = f.offered_tokens_per_s[:, None] / f.time_factor
    quantities = {"attainment does not rise": (full.attainment, -1.0),
                  "time factor does not fall": (f.time_factor, 1.0),
                  "served token rate does not fall": (rate, 1.0),
                  "power does not fall": (f.power_w, 1.0)}  # fmt: skip
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(full.rows):
        groups.setdefault((k.application, k.input_tokens, k.output_tokens), []).append(i)
    by_qps = [sorted(idx, key=lambda i: full.rows[i].qps) for idx in groups.values()]
    by_size = []  # adjacent request sizes of one application at the same QPS
    for app in {k.application for k in full.rows}:
        sizes = sorted({g[1:] for g in groups if g[0] == app})
        for a, b in itertools.pairwise(sizes):
            if a[0] <= b[0] and a[1] <= b[1]:
                qa = {full.rows[i].qps: i for i in groups[(app, *a)]}
                qb = {full.rows[i].qps: i for i in groups[(app, *b)]}
                by_size += [[qa[q], qb[q]] for q in sorted(set(qa) & set(qb))]
    for name, (x, sign) in quantities.items():
        for axis, chains in (("QPS", by_qps), ("request size", by_size)):
            d = np.concatenate([np.diff(x[c], axis=0) for c in chains]) * sign
            ok = np.isfinite(d)
            print(f"{name} with {axis}: {int((d[ok] >= -1e-9).sum())} of {int(ok.sum())} pairs")
    meets = np.isfinite(f.time_factor) & (np.nan_to_num(full.attainment) >= target)
    tf = f.time_factor[meets]
    print(
        f"time factor of the {meets.sum()} cells meeting {target}: min {tf.min():.3f}, "
        f"99th percentile {np.percentile(tf, 99):.3f}, max {tf.max():.3f}\n"
    )


def planners() -> dict[str, Planner]:
    return {
        "before: sgd, direct carbon, no margin": Planner(
            region="CISO", method="sgd", margin_sigmas=0.0, carbon_model="direct"
        ),
        "default (als, carbon factors, margin 2)": Planner(region="CISO"),
        "default, margin 1": Planner(region="CISO", margin_sigmas=1.0),
        "default, margin 0": Planner(region="CISO", margin_sigmas=0.0),
        "default, sgd": Planner(region="CISO", method="sgd"),
        "default, direct carbon": Planner(region="CISO", carbon_model="direct"),
        "default, no monotone": Planner(region="CISO", monotone=False),
        "default, row+column errors": Planner(region="CISO", error_by="row+column"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--densities", default="0.1,0.2,0.3,0.5")
    ap.add_argument("--seeds", default="dev", help="dev (0-29), heldout-a, -b, -c, -d, 0-9, 1,2")
    ap.add_argument("--only", default=None, help="run only planners whose name contains this")
    ap.add_argument(
        "--diagnose", action="store_true", help="also the default with true attainment / carbon"
    )
    ap.add_argument("--check-orders", action="store_true", help="check the load orders, exit")
    ap.add_argument("--list-violations", action="store_true", help="print every violation")
    args = ap.parse_args()
    full = full_matrices(args.store, args.requests)
    if args.check_orders:
        check_orders(full)
        return
    seeds = parse_seeds(args.seeds)
    print(
        f"simulator matrices: {full.shape[0]} workloads x {full.shape[1]} configurations "
        f"(CISO, 7-year lifetimes, SLO target 0.9), seeds {args.seeds} ({len(seeds)})\n"
    )
    choosers = {k: (p, planner_chooser(full, p)) for k, p in planners().items()}
    for margin, share in ((2.0, 1 / 3), (2.0, 0.5), (1.0, 1 / 3), (0.0, 1 / 3)):
        p = Planner(region="CISO", margin_sigmas=margin)
        name = f"default, margin {margin:g}, verify ({share:.0%} of the cells)"
        choosers[name] = (p, verifying_chooser(full, p, share))
    p = Planner(region="CISO")  # ablations of verify_plan's rounds and search bound
    choosers["ablation: verify (33%), one round per budget"] = (
        p, verifying_chooser(full, p, 1 / 3, one_round=True))  # fmt: skip
    choosers["ablation: verify (33%), no search bound"] = (
        p, verifying_chooser(full, p, 1 / 3, search_sigmas=float("inf")))  # fmt: skip
    if args.only:
        choosers = {k: v for k, v in choosers.items() if args.only in k}
    if args.diagnose:
        p = Planner(region="CISO")
        for part in ("attainment", "carbon"):
            choosers[f"diagnostic: default, true {part}"] = (p, diagnostic_chooser(full, p, part))
    print("| density | observed | planner | mean regret | seed spread (sd) | p95 regret "
          "| violations | severe | s/plan |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    floor = int(masked(full, 0.0, 0).observed.sum())
    for fraction in (float(x) for x in args.densities.split(",")):
        if any("verify" in name for name in choosers):
            lo, hi, most = verify_budgets(full, fraction, seeds, 1 / 3)
            note = (f"<!-- {fraction:.0%}: {lo}-{hi} of {full.observed.size} cells profiled "
                    f"(the mask keeps one per row and per column: about {floor}); verify "
                    f"(33%) gets at most {most} cells")  # fmt: skip
            if most == 0:
                note += ": none, so every verify row is the planner without verify"
            print(note + " -->", flush=True)
        for name, (planner, choose) in choosers.items():
            r = evaluate(full, planner, choose, fraction, seeds, args.list_violations)
            print(f"| {fraction:.0%} | {100 * r['observed']:.1f} % | {name} | "
                  f"{100 * r['regret']:.2f} % | "
                  f"{100 * r['seed_min']:.2f}-{100 * r['seed_max']:.2f} % "
                  f"({100 * r['seed_sd']:.2f}) | {100 * r['p95']:.1f} % | "
                  f"{r['violations']} / {r['n']} | {r['severe']} | {r['s_per_plan']:.2f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
