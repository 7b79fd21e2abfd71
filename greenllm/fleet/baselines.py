"""The deployments the optimiser is compared with, on the same :class:`FleetProblem`.

* :func:`paper_rule`: per workload, the configuration Algorithm 1 would pick from one
  replica's profile (the least carbon per request at the load one replica carries, within the
  SLO), replicated until the load is covered and split evenly; the inventory is not consulted
  (the paper plans one configuration at a time), so the result may not fit it; or, within the
  inventory, workloads by load each taking the best configuration that still fits.
* :func:`standalone_new`: the optimiser restricted to Standalone on the newest GPU type of the
  inventory (what a fleet without old GPUs would run).
* minimum cost: :func:`~greenllm.fleet.optimize.solve` with ``objective="cost"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from greenllm.fleet.optimize import FleetProblem, FleetSolution, InfeasibleFleetError, solve

__all__ = ["fits", "paper_rule", "restricted", "standalone_new"]


def paper_rule(p: FleetProblem, *, within_inventory: bool = False) -> FleetSolution:
    """Algorithm 1 per workload, replicated (see the module docstring). With
    ``within_inventory``, the workloads take their turn by load (the largest first) and each
    takes its best configuration whose replicas still fit in the GPUs left (a greedy
    operator's reading of the rule); :class:`InfeasibleFleetError` if one finds none."""
    replicas = np.zeros(p.capacity_qps.shape, dtype=np.int64)
    load = np.zeros(p.capacity_qps.shape)
    left = p.inventory.astype(float).copy()
    order = np.argsort(-p.demand_qps, kind="stable") if within_inventory else None
    for w in order if order is not None else range(len(p.workloads)):
        demand, cap = p.demand_qps[w], p.capacity_qps[w]
        ok = np.nonzero(cap > 0)[0]
        per_replica = np.minimum(cap[ok], demand)
        g_per_query = (p.fixed_g_per_h[w, ok] + p.var_g_per_qps_h[w, ok] * per_replica) / (
            np.maximum(per_replica, 1e-12)
        )
        chosen = None
        for c in ok[np.argsort(g_per_query, kind="stable")]:
            n = math.ceil(demand / cap[c] - 1e-9)
            if not within_inventory or (n * p.uses[c] <= left).all():
                chosen = (int(c), n)
                break
        if chosen is None:
            why = "at its SLO" if not len(ok) else "in the GPUs left by the larger workloads"
            raise InfeasibleFleetError(f"the paper's rule finds no configuration for "
                                       f"{p.workloads[w]} {why}", {p.workloads[w]: float(demand)},
                                       {})  # fmt: skip
        c, n = chosen
        replicas[w, c], load[w, c] = n, demand
        left -= n * p.uses[c]
    return FleetSolution(p, "carbon", replicas, load)


def fits(solution: FleetSolution) -> bool:
    """Whether ``solution``'s GPUs are within the inventory."""
    return bool((solution.gpus_used <= solution.problem.inventory).all())


def restricted(
    p: FleetProblem, keep: Sequence[int], objective: str = "carbon", *, buy: bool = False
) -> FleetSolution:
    """The optimiser over the configurations ``keep`` only (the others cannot serve);
    ``buy``: as many GPUs of their types as needed (:func:`fits` says if it is more than the
    inventory has)."""
    mask = np.zeros(len(p.configs), bool)
    mask[list(keep)] = True
    change: dict[str, object] = {"capacity_qps": np.where(mask[None, :], p.capacity_qps, 0.0)}
    if buy:
        need = np.ceil(p.demand_qps.sum() / np.min(p.capacity_qps[:, mask][p.capacity_qps[:, mask]
                                                                           > 0]))  # fmt: skip
        change["inventory"] = p.inventory + int(need) * p.uses[mask].max(axis=0)
    sol = solve(FleetProblem(**{**p.__dict__, **change}), objective)  # type: ignore[arg-type]
    return FleetSolution(p, sol.objective, sol.replicas, sol.load_qps)


def standalone_new(p: FleetProblem, standalone_on: Sequence[int]) -> FleetSolution:
    """Standalone on the most capable GPU type only (``standalone_on``: those configurations), with
    as many of those GPUs as the load needs (:func:`fits` says whether the inventory has them)."""
    return restricted(p, standalone_on, buy=True)
