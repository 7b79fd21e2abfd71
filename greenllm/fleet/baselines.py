"""The deployments the optimiser is compared with, on the same :class:`FleetProblem`.

* :func:`paper_rule`: per workload, the configuration Algorithm 1 would pick from one
  replica's profile (the least carbon per request at the load one replica carries, within the
  SLO), replicated until the load is covered and split evenly; the inventory is not consulted
  (the paper plans one configuration at a time), so the result may not fit it.
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


def paper_rule(p: FleetProblem) -> FleetSolution:
    """Algorithm 1 per workload, replicated (see the module docstring)."""
    replicas = np.zeros(p.capacity_qps.shape, dtype=np.int64)
    load = np.zeros(p.capacity_qps.shape)
    for w, demand in enumerate(p.demand_qps):
        cap = p.capacity_qps[w]
        ok = np.nonzero(cap > 0)[0]
        if not len(ok):
            raise InfeasibleFleetError(f"no configuration serves {p.workloads[w]} at its SLO",
                                       {p.workloads[w]: float(demand)}, {})  # fmt: skip
        per_replica = np.minimum(cap[ok], demand)
        g_per_query = (p.fixed_g_per_h[w, ok] + p.var_g_per_qps_h[w, ok] * per_replica) / (
            per_replica
        )
        c = int(ok[int(np.argmin(g_per_query))])
        replicas[w, c] = math.ceil(demand / cap[c] - 1e-9)
        load[w, c] = demand
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
    """Standalone on the newest GPU type only (``standalone_on``: those configurations), with
    as many of those GPUs as the load needs (:func:`fits` says whether the inventory has them)."""
    return restricted(p, standalone_on, buy=True)
