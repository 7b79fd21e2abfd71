"""The fleet MILP against brute-force enumeration on small instances, its monotonicity
(a GPU more never raises the optimal carbon; more load never lowers it), the cost objective
and its Pareto points, and infeasible inventories named by workload and missing GPUs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.errors import ConfigError
from greenllm.fleet import FleetProblem, InfeasibleFleetError, pareto, solve


def problem(rng: np.random.Generator, n_w: int = 2, n_c: int = 3, n_t: int = 2,
            inventory: int = 3) -> FleetProblem:  # fmt: skip
    uses = np.zeros((n_c, n_t), dtype=int)
    for c in range(n_c):
        uses[c, rng.integers(0, n_t)] += 1
        if rng.random() < 0.5:
            uses[c, rng.integers(0, n_t)] += 1
    cap = rng.uniform(0.5, 3.0, (n_w, n_c)) * (rng.random((n_w, n_c)) < 0.85)
    cap[:, 0] = np.maximum(cap[:, 0], 0.5)
    return FleetProblem(
        workloads=tuple(f"w{i}" for i in range(n_w)), configs=tuple(f"c{i}" for i in range(n_c)),
        gpu_types=tuple(f"t{i}" for i in range(n_t)),
        demand_qps=rng.uniform(0.2, 3.0, n_w), inventory=np.full(n_t, inventory),
        uses=uses, capacity_qps=cap, fixed_g_per_h=rng.uniform(10, 100, (n_w, n_c)),
        var_g_per_qps_h=rng.uniform(1, 50, (n_w, n_c)), price_per_h=rng.uniform(0.5, 4, n_c),
    )  # fmt: skip


def brute_force(p: FleetProblem, objective: str = "carbon") -> float:
    """Every replica vector within the inventory; for each, the load split is greedy by the
    variable carbon (exact: the rest is a knapsack of continuous items per workload)."""
    n_w, n_c = p.capacity_qps.shape
    best = math.inf
    bound = int(p.inventory.max())
    for flat in itertools.product(range(bound + 1), repeat=n_w * n_c):
        n = np.array(flat).reshape(n_w, n_c)
        if ((n.sum(axis=0) @ p.uses) > p.inventory).any():
            continue
        total = 0.0
        for w in range(n_w):
            left = p.demand_qps[w]
            for c in np.argsort(p.var_g_per_qps_h[w]):
                take = min(left, p.capacity_qps[w, c] * n[w, c])
                left -= take
                total += p.var_g_per_qps_h[w, c] * take if objective == "carbon" else 0.0
            if left > 1e-9:
                break
        else:
            fixed = p.fixed_g_per_h if objective == "carbon" else p.price_per_h[None, :]
            best = min(best, total + float((fixed * n).sum()))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_milp_matches_brute_force(seed: int) -> None:
    p = problem(np.random.default_rng(seed), n_w=2, n_c=2, n_t=2, inventory=3)
    exact = brute_force(p)
    if math.isinf(exact):
        with pytest.raises(InfeasibleFleetError):
            solve(p)
        return
    sol = solve(p)
    assert sol.carbon_g_per_h == pytest.approx(exact, rel=1e-6, abs=1e-6)
    assert (sol.gpus_used <= p.inventory).all()
    assert sol.load_qps.sum(axis=1) == pytest.approx(p.demand_qps)
    assert (sol.load_qps <= sol.replicas * p.capacity_qps + 1e-9).all()
    cheap = solve(p, "cost")
    assert cheap.cost_per_h == pytest.approx(brute_force(p, "cost"), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), extra=st.integers(0, 1))
def test_a_gpu_more_never_raises_the_optimum(seed: int, extra: int) -> None:
    p = problem(np.random.default_rng(seed), n_w=3, n_c=4, n_t=2, inventory=4)
    more = FleetProblem(**{**p.__dict__, "inventory": p.inventory + np.eye(2, dtype=int)[extra]})
    try:
        base = solve(p).carbon_g_per_h
    except InfeasibleFleetError:
        return
    assert solve(more).carbon_g_per_h <= base * (1 + 1e-7) + 1e-6


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), w=st.integers(0, 2), factor=st.floats(1.0, 1.5))
def test_more_load_never_lowers_the_optimum(seed: int, w: int, factor: float) -> None:
    p = problem(np.random.default_rng(seed), n_w=3, n_c=4, n_t=2, inventory=6)
    demand = p.demand_qps.copy()
    demand[w] *= factor
    heavier = FleetProblem(**{**p.__dict__, "demand_qps": demand})
    try:
        high = solve(heavier).carbon_g_per_h
    except InfeasibleFleetError:
        return
    assert solve(p).carbon_g_per_h <= high * (1 + 1e-7) + 1e-6


def test_an_inventory_too_small_names_the_workloads_and_the_missing_gpus() -> None:
    p = FleetProblem(
        workloads=("chat", "code"), configs=("A100", "T4"), gpu_types=("A100", "T4"),
        demand_qps=np.array([5.0, 0.5]), inventory=np.array([1, 1]), uses=np.eye(2, dtype=int),
        capacity_qps=np.array([[2.0, 0.5], [2.0, 1.0]]),
        fixed_g_per_h=np.full((2, 2), 10.0), var_g_per_qps_h=np.ones((2, 2)),
        price_per_h=np.array([4.0, 0.5]),
    )  # fmt: skip
    with pytest.raises(InfeasibleFleetError) as err:
        solve(p)
    assert "chat" in str(err.value) and "code" not in err.value.uncovered_qps
    assert err.value.uncovered_qps == {"chat": pytest.approx(3.0)}  # code on the T4
    assert err.value.missing_gpus == {"A100": 2}  # 3 QPS uncovered, 2 QPS per A100
    never = FleetProblem(**{**p.__dict__, "capacity_qps": np.array([[0.0, 0.0], [2.0, 1.0]])})
    with pytest.raises(InfeasibleFleetError, match="no candidate configuration serves chat"):
        solve(never)


def test_pareto_points_trade_cost_for_carbon() -> None:
    rng = np.random.default_rng(7)
    p = problem(rng, n_w=3, n_c=4, n_t=2, inventory=6)
    points = pareto(p, 5)
    costs = [s.cost_per_h for s in points]
    carbon = [s.carbon_g_per_h for s in points]
    assert costs == sorted(costs) and carbon == sorted(carbon, reverse=True)
    assert carbon[-1] == pytest.approx(solve(p).carbon_g_per_h)
    assert costs[0] == pytest.approx(solve(p, "cost").cost_per_h)


def test_bad_problems_are_config_errors() -> None:
    p = problem(np.random.default_rng(0))
    with pytest.raises(ConfigError, match="capacity_qps"):
        FleetProblem(**{**p.__dict__, "capacity_qps": np.ones((1, 1))})
    with pytest.raises(ConfigError, match="objective"):
        solve(p, "speed")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="price"):
        solve(FleetProblem(**{**p.__dict__, "price_per_h": np.full(3, np.nan)}), "cost")
