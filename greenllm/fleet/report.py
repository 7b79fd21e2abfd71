"""A fleet planned end to end: replica models, the programme, its optimum, the baselines beside
it and the simulator's check of each (what ``greenllm fleet plan|compare`` print)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from greenllm.fleet.baselines import fits, paper_rule, standalone_new
from greenllm.fleet.capacity import ReplicaModel, replica_models
from greenllm.fleet.check import simulated_attainment
from greenllm.fleet.deployment import build_problem, deployment, newest_type
from greenllm.fleet.optimize import (
    FleetProblem,
    FleetSolution,
    InfeasibleFleetError,
    pareto,
    solve,
)
from greenllm.fleet.spec import FleetSpec

__all__ = ["FleetPlan", "compare_fleet", "plan_fleet"]


@dataclass(frozen=True)
class FleetPlan:
    """The models, the programme and its optimum for one objective."""

    spec: FleetSpec
    models: tuple[ReplicaModel, ...]
    problem: FleetProblem
    solution: FleetSolution

    def deployment(self, name: str = "") -> dict[str, Any]:
        return deployment(self.spec, self.solution, self.models, name)


def plan_fleet(
    spec: FleetSpec,
    store_path: str | Path,
    objective: Literal["carbon", "cost"] = "carbon",
    *,
    duration_s: float = 60.0,
    measured: str | Path | None = None,
) -> FleetPlan:
    """Profile what is missing on the simulator (kept in ``store_path``; ``measured``: your own
    records first, see :func:`~greenllm.fleet.replica_models`), build the programme and solve
    it; :class:`InfeasibleFleetError` when the inventory cannot carry the load."""
    models = tuple(replica_models(spec, store_path, duration_s=duration_s, measured=measured))
    problem = build_problem(spec, models)
    return FleetPlan(spec, models, problem, solve(problem, objective))


def compare_fleet(
    plan: FleetPlan, check_store: str | Path | None = None, *, duration_s: float = 60.0
) -> dict[str, Any]:
    """The optimum (carbon) beside (a) the paper's rule (as planned, and fitted into the
    inventory), (b) Standalone on the most capable GPU type and (c) the cost optimum: carbon
    and cost per hour, GPUs used, whether it fits the
    inventory, and (with ``check_store``) SLO attainment simulated at every replica's load;
    and ``pareto``: the carbon optimum under cost budgets between the two optima (when every
    GPU has a price)."""
    p = plan.problem
    rows: dict[str, FleetSolution | str] = {"optimum": plan.solution}
    rows["paper_rule"] = _or_reason(lambda: paper_rule(p))
    rows["paper_rule_fitted"] = _or_reason(lambda: paper_rule(p, within_inventory=True))
    new = newest_type(plan.spec)
    keep = [i for i, label in enumerate(p.configs) if label == f"Standalone {new}"]
    rows["standalone_new"] = (_or_reason(lambda: standalone_new(p, keep)) if keep
                              else f"no Standalone on {new} serves these workloads")  # fmt: skip
    rows["min_cost"] = _or_reason(lambda: solve(p, "cost"))
    configs = {m.configuration.label: m.configuration for m in plan.models}
    out: dict[str, Any] = {}
    for name, sol in rows.items():
        if isinstance(sol, str):
            out[name] = {"error": sol}
            continue
        entry: dict[str, Any] = {
            "carbon_g_per_h": sol.carbon_g_per_h, "carbon_g_per_query": sol.carbon_g_per_query(),
            "cost_per_h": None if math.isnan(sol.cost_per_h) else sol.cost_per_h,
            "gpus_used": {t: int(k) for t, k in zip(p.gpu_types, sol.gpus_used, strict=True)},
            "fits_inventory": fits(sol),
            "replicas": {f"{p.workloads[w]}: {p.configs[c]}": int(sol.replicas[w, c])
                         for w in range(len(p.workloads)) for c in range(len(p.configs))
                         if sol.replicas[w, c]},
        }  # fmt: skip
        if check_store is not None:
            entry["slo_attainment"] = simulated_attainment(plan.spec, sol, configs, check_store,
                                                           duration_s=duration_s)  # fmt: skip
        out[name] = entry
    if not any(math.isnan(v) for v in p.price_per_h):
        out["pareto"] = [{"cost_per_h": sol.cost_per_h, "carbon_g_per_h": sol.carbon_g_per_h,
                          "gpus_used": {t: int(k) for t, k in zip(p.gpu_types, sol.gpus_used,
                                                                   strict=True)}}
                         for sol in pareto(p, 5)]  # fmt: skip
    best = plan.solution.carbon_g_per_h
    for name, entry in out.items():  # against deployments the inventory can hold
        if isinstance(entry, dict) and entry.get("fits_inventory") and name != "optimum":
            entry["optimum_saves"] = 1.0 - best / entry["carbon_g_per_h"]
    return out


def _or_reason(make: Any) -> FleetSolution | str:
    try:
        sol: FleetSolution = make()
    except InfeasibleFleetError as err:
        return str(err)
    return sol
