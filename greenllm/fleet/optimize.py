"""The fleet's mixed-integer programme: replicas per (workload, configuration) and the load
split between them, within the GPU inventory, at the least carbon (or cost).

For workloads ``w`` with demand ``lambda_w`` (QPS) and candidate configurations ``c`` (a kind
on a pair of GPU types, with its draft), with ``Q_wc`` the most QPS one replica serves at the
workload's SLO target, the variables are the integer replicas ``n_wc >= 0`` and their load
``x_wc >= 0``::

    minimise   sum_wc  F_wc n_wc + V_wc x_wc                      (carbon, g per hour)
    subject to sum_c x_wc + s_w = lambda_w        for every w     (the load is covered)
               x_wc <= Q_wc n_wc                  for every w, c  (each replica within capacity)
               sum_wc u_ct n_wc <= N_t            for every GPU type t (the inventory)

``F_wc`` is a replica's carbon per hour whatever its load (its GPUs' idle power x intensity,
Eq. 2, plus their embodied carbon per hour, Eq. 1), ``V_wc`` the carbon per hour of each QPS
it serves (the energy above idle), ``u_ct`` the GPUs of type ``t`` one replica of ``c``
allocates. GPUs no replica allocates are off. The slack ``s_w`` (uncovered QPS, priced far
above any carbon) keeps the programme feasible, so that an inventory too small for the load
is reported as which workloads it cannot cover and by how much, not as a bare "infeasible".

The cost objective replaces ``F`` by the replica's GPU-hour price (and ``V`` by 0), with the
carbon as a tie-break; :func:`pareto` walks the carbon/cost trade-off between the two optima by
bounding the cost. Solved by HiGHS through :func:`scipy.optimize.milp`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from greenllm.errors import ConfigError

__all__ = ["FleetProblem", "FleetSolution", "InfeasibleFleetError", "pareto", "solve"]

Objective = Literal["carbon", "cost"]
_UNCOVERED_PENALTY = 1e9  # per uncovered QPS, above any fleet's carbon or cost per hour
_TOL = 1e-6


class InfeasibleFleetError(ConfigError):
    """The inventory cannot carry the load: names the workloads and what is missing."""

    def __init__(self, message: str, uncovered_qps: dict[str, float],
                 missing_gpus: dict[str, int]) -> None:  # fmt: skip
        super().__init__(message)
        self.uncovered_qps = uncovered_qps
        self.missing_gpus = missing_gpus


@dataclass(frozen=True)
class FleetProblem:
    """The programme's data (see the module docstring); arrays are ``(W, C)`` unless said."""

    workloads: tuple[str, ...]
    configs: tuple[str, ...]
    gpu_types: tuple[str, ...]
    demand_qps: np.ndarray
    """(W,) each workload's load."""
    inventory: np.ndarray
    """(T,) GPUs of each type."""
    uses: np.ndarray
    """(C, T) GPUs of each type one replica allocates."""
    capacity_qps: np.ndarray
    """Most QPS one replica serves at the SLO target (0: cannot serve the workload)."""
    fixed_g_per_h: np.ndarray
    var_g_per_qps_h: np.ndarray
    price_per_h: np.ndarray
    """(C,) one replica's GPU-hour price (NaN where unknown: no cost objective)."""

    def __post_init__(self) -> None:
        w, c, t = len(self.workloads), len(self.configs), len(self.gpu_types)
        shapes = {"demand_qps": (w,), "inventory": (t,), "uses": (c, t),
                  "capacity_qps": (w, c), "fixed_g_per_h": (w, c), "var_g_per_qps_h": (w, c),
                  "price_per_h": (c,)}  # fmt: skip
        for name, shape in shapes.items():
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.shape != shape:
                raise ConfigError(f"FleetProblem.{name}: shape {arr.shape}, expected {shape}")
            if name != "price_per_h" and (not np.isfinite(arr).all() or (arr < 0).any()):
                raise ConfigError(f"FleetProblem.{name}: must be finite numbers >= 0")
            object.__setattr__(self, name, arr)
        if not (self.uses.sum(axis=1) >= 1).all():
            raise ConfigError("FleetProblem.uses: every configuration allocates a GPU")


@dataclass(frozen=True)
class FleetSolution:
    """An optimal deployment of a :class:`FleetProblem`."""

    problem: FleetProblem
    objective: Objective
    replicas: np.ndarray
    """(W, C) integer replicas."""
    load_qps: np.ndarray
    """(W, C) QPS each (workload, configuration) serves, over all its replicas."""

    @property
    def carbon_g_per_h(self) -> float:
        p = self.problem
        return float((p.fixed_g_per_h * self.replicas + p.var_g_per_qps_h * self.load_qps).sum())

    @property
    def cost_per_h(self) -> float:
        return float((self.replicas * self.problem.price_per_h[None, :]).sum())

    @property
    def gpus_used(self) -> np.ndarray:
        """(T,) GPUs of each type allocated (the rest are off)."""
        return self.replicas.sum(axis=0) @ self.problem.uses

    def carbon_g_per_query(self) -> float:
        return self.carbon_g_per_h / (3600.0 * float(self.problem.demand_qps.sum()))


def _variables(p: FleetProblem) -> tuple[np.ndarray, np.ndarray]:
    """The (w, c) pairs that can serve (capacity > 0), as index arrays."""
    wi, ci = np.nonzero(p.capacity_qps > 0)
    return wi, ci


def solve(
    problem: FleetProblem,
    objective: Objective = "carbon",
    *,
    max_cost_per_h: float | None = None,
    time_limit_s: float = 30.0,
) -> FleetSolution:
    """The optimal deployment (see the module docstring); ``max_cost_per_h`` bounds the cost
    (a Pareto point). :class:`InfeasibleFleetError` names the workloads the inventory cannot
    cover (or that no configuration serves at their SLO) and the GPUs missing."""
    p = problem
    if objective not in ("carbon", "cost"):
        raise ConfigError(f"objective = {objective!r}: must be 'carbon' or 'cost'")
    if (objective == "cost" or max_cost_per_h is not None) and np.isnan(p.price_per_h).any():
        unknown = [c for c, v in zip(p.configs, p.price_per_h, strict=True) if math.isnan(v)]
        raise ConfigError(f"the cost objective needs GPU-hour prices; none for {unknown[0]}"
                          f"{f' and {len(unknown) - 1} more' if len(unknown) > 1 else ''}: give "
                          "price_per_hour for its GPUs in the fleet file")  # fmt: skip
    never = [w for i, w in enumerate(p.workloads)
             if p.demand_qps[i] > 0 and not (p.capacity_qps[i] > 0).any()]  # fmt: skip
    if never:
        raise InfeasibleFleetError(
            f"no candidate configuration serves {', '.join(never)} at its SLO target, at any "
            "load: relax the SLO, or add GPU types or drafts", {w: math.nan for w in never}, {})
    wi, ci = _variables(p)
    k, n_w = len(wi), len(p.workloads)
    # variables: n (k integers), x (k), s (W slacks)
    if objective == "carbon":
        c_n, c_x = p.fixed_g_per_h[wi, ci], p.var_g_per_qps_h[wi, ci]
    else:
        scale = 1e-6 / max(1.0, float(p.fixed_g_per_h.max()))  # carbon only breaks ties
        c_n = p.price_per_h[ci] + scale * p.fixed_g_per_h[wi, ci]
        c_x = scale * p.var_g_per_qps_h[wi, ci]
    cost = np.concatenate([c_n, c_x, np.full(n_w, _UNCOVERED_PENALTY)])
    rows, lo, hi = [], [], []
    cover = np.zeros((n_w, 2 * k + n_w))
    cover[wi, k + np.arange(k)] = 1.0
    cover[np.arange(n_w), 2 * k + np.arange(n_w)] = 1.0
    rows.append(cover)
    lo.append(p.demand_qps)
    hi.append(p.demand_qps)
    cap = np.zeros((k, 2 * k + n_w))
    cap[np.arange(k), np.arange(k)] = -p.capacity_qps[wi, ci]
    cap[np.arange(k), k + np.arange(k)] = 1.0
    rows.append(cap)
    lo.append(np.full(k, -np.inf))
    hi.append(np.zeros(k))
    inv = np.zeros((len(p.gpu_types), 2 * k + n_w))
    inv[:, :k] = p.uses[ci].T
    rows.append(inv)
    lo.append(np.full(len(p.gpu_types), -np.inf))
    hi.append(p.inventory.astype(float))
    if max_cost_per_h is not None:
        budget = np.zeros((1, 2 * k + n_w))
        budget[0, :k] = p.price_per_h[ci]
        rows.append(budget)
        lo.append(np.array([-np.inf]))
        hi.append(np.array([float(max_cost_per_h)]))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_type = np.where(p.uses[ci] > 0, p.inventory[None, :] // np.maximum(p.uses[ci], 1),
                            np.inf)  # fmt: skip
    n_max = per_type.min(axis=1)
    upper = np.concatenate([n_max, p.demand_qps[wi], p.demand_qps])
    integrality = np.concatenate([np.ones(k), np.zeros(k + n_w)])
    res = milp(cost, constraints=LinearConstraint(np.vstack(rows), np.concatenate(lo),
                                                  np.concatenate(hi)),
               integrality=integrality, bounds=Bounds(np.zeros(2 * k + n_w), upper),
               options={"time_limit": time_limit_s})  # fmt: skip
    if res.x is None:
        raise ConfigError(f"the fleet programme was not solved: {res.message}")
    n = np.rint(res.x[:k])
    x = np.clip(res.x[k : 2 * k], 0.0, None)
    slack = res.x[2 * k :]
    if (slack > _TOL * np.maximum(1.0, p.demand_qps)).any():
        raise _uncovered(p, slack, n, wi, ci)
    replicas = np.zeros(p.capacity_qps.shape, dtype=np.int64)
    load = np.zeros(p.capacity_qps.shape)
    replicas[wi, ci] = n.astype(np.int64)
    load[wi, ci] = x
    return FleetSolution(p, objective, replicas, load)


def _uncovered(p: FleetProblem, slack: np.ndarray, n: np.ndarray, wi: np.ndarray,
               ci: np.ndarray) -> InfeasibleFleetError:  # fmt: skip
    """What the inventory lacks: per uncovered workload, replicas of the configuration that
    serves it on the fewest GPUs per QPS, and the GPUs they need beyond what is free."""
    free = p.inventory - (n[:, None] * p.uses[ci]).sum(axis=0)
    need = np.zeros(len(p.gpu_types))
    uncovered: dict[str, float] = {}
    for w in np.nonzero(slack > _TOL * np.maximum(1.0, p.demand_qps))[0]:
        uncovered[p.workloads[w]] = float(slack[w])
        cfgs = np.nonzero(p.capacity_qps[w] > 0)[0]
        gpus_per_qps = p.uses[cfgs].sum(axis=1) / p.capacity_qps[w, cfgs]
        best = cfgs[int(np.argmin(gpus_per_qps))]
        need += math.ceil(slack[w] / p.capacity_qps[w, best] - _TOL) * p.uses[best]
    missing = {t: int(m) for t, m in zip(p.gpu_types, np.maximum(need - np.maximum(free, 0), 0),
                                         strict=True) if m > 0}  # fmt: skip
    what = ", ".join(f"{q:.3g} of {w}'s QPS" for w, q in uncovered.items())
    gpus = ", ".join(f"{m} x {t}" for t, m in missing.items()) or "GPUs in other proportions"
    return InfeasibleFleetError(
        f"the inventory cannot carry the load: {what} uncovered; missing about {gpus} "
        f"(or lower those workloads' QPS)", uncovered, missing)


def pareto(problem: FleetProblem, points: int = 5) -> list[FleetSolution]:
    """Carbon-optimal deployments under cost budgets from the cost optimum's cost to the
    carbon optimum's, ``points`` of them (both ends included; duplicates dropped)."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ConfigError(f"points = {points!r}: must be an integer >= 2")
    cheapest, greenest = solve(problem, "cost"), solve(problem, "carbon")
    lo, hi = cheapest.cost_per_h, greenest.cost_per_h
    out = [greenest]
    for budget in np.linspace(hi, lo, points)[1:]:
        sol = solve(problem, "carbon", max_cost_per_h=float(budget) + 1e-9)
        if all(not np.array_equal(sol.replicas, o.replicas) for o in out):
            out.append(sol)
    return sorted(out, key=lambda s: s.cost_per_h)
