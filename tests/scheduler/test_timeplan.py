"""Hourly planning under a time-varying intensity: exact DP, hysteresis, baselines."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.errors import ConfigError
from greenllm.scheduler import Hysteresis, plan_hourly

# Two configurations on one workload row: 0 = low embodied / high energy, 1 = the opposite.
EMB = np.array([[1.0, 3.0]])
EN = np.array([[0.02, 0.01]])  # kWh per token
ALLOWED = np.ones((1, 2), dtype=bool)


def _plan(alpha, **kw):
    alpha = np.asarray(alpha, dtype=float)
    return plan_hourly(
        EMB,
        EN,
        ALLOWED,
        row_of_hour=np.zeros(len(alpha), dtype=int),
        intensity_g_per_kwh=alpha,
        tokens_per_hour=np.ones(len(alpha)),
        **kw,
    )


def test_cheapest_configuration_follows_intensity_without_switching_cost() -> None:
    # Break-even at alpha* where 1 + 0.02a = 3 + 0.01a  ->  a* = 200 g/kWh.
    plan = _plan([100, 300, 100, 300])
    assert plan.choice.tolist() == [0, 1, 0, 1]
    assert plan.carbon_g.tolist() == pytest.approx([3.0, 6.0, 3.0, 6.0])
    assert plan.switches == 3 and plan.switch_g.sum() == 0
    # The static plan chooses at the mean intensity (200, a tie -> lower index 0).
    assert plan.static_choice.tolist() == [0, 0, 0, 0]
    assert plan.static_total_g == pytest.approx(3 + 7 + 3 + 7)
    assert plan.savings_vs_static == pytest.approx(1 - 18 / 20)


def test_switching_cost_suppresses_flapping() -> None:
    for solver in ("offline", "online"):
        plan = _plan([100, 300, 100, 300], switch_embodied_g=5.0, solver=solver)
        assert plan.switches == 0  # each swing saves only 1 g, a switch costs 5 g


def _brute_force(alpha, switch_g):
    cost = np.ones(len(alpha))[:, None] * (EMB[0] + np.asarray(alpha)[:, None] * EN[0])
    best = np.inf
    for path in itertools.product(range(2), repeat=len(alpha)):
        total = sum(cost[h, c] for h, c in enumerate(path))
        total += switch_g * sum(a != b for a, b in itertools.pairwise(path))
        best = min(best, total)
    return best


@given(st.lists(st.floats(0, 600), min_size=1, max_size=8), st.floats(0, 4))
def test_offline_solver_is_optimal(alpha, switch_g) -> None:
    plan = _plan(alpha, switch_embodied_g=switch_g)
    assert plan.total_g == pytest.approx(_brute_force(alpha, switch_g), rel=1e-9, abs=1e-9)


@given(st.lists(st.floats(0, 600), min_size=1, max_size=30), st.floats(0.1, 4))
def test_online_solver_never_beats_offline_and_pays_for_each_switch(alpha, switch_g) -> None:
    offline = _plan(alpha, switch_embodied_g=switch_g)
    online = _plan(alpha, switch_embodied_g=switch_g, solver="online")
    assert online.total_g >= offline.total_g - 1e-9
    # Hysteresis: a switch happens only once the newcomer has saved more than the switching
    # cost, so when all the hourly differences together are below it, nothing ever switches.
    hourly_gap = np.abs((EMB[0, 0] - EMB[0, 1]) + np.asarray(alpha) * (EN[0, 0] - EN[0, 1]))
    if hourly_gap.sum() < switch_g:
        assert online.switches == 0


def test_disallowed_configuration_is_never_chosen_and_forces_a_switch() -> None:
    emb = np.array([[1.0, 3.0], [1.0, 3.0]])
    en = np.array([[0.02, 0.01], [0.02, 0.01]])
    allowed = np.array([[True, True], [False, True]])  # row 1 (peak QPS): config 0 misses the SLO
    rows = np.array([0, 0, 1, 1, 0])
    for solver in ("offline", "online"):
        plan = plan_hourly(
            emb,
            en,
            allowed,
            row_of_hour=rows,
            intensity_g_per_kwh=np.full(5, 100.0),
            tokens_per_hour=np.ones(5),
            switch_embodied_g=0.5,
            solver=solver,
        )
        assert plan.choice[2:4].tolist() == [1, 1]
        assert plan.choice[0] == 0


def test_real_trace_year_runs_fast_and_saves_against_static() -> None:
    from greenllm.carbon import CarbonIntensityTrace

    trace = CarbonIntensityTrace.from_region("CISO")
    alpha = np.asarray(trace.g_per_kwh, dtype=float)
    plan = _plan(alpha, switch_embodied_g=0.5)
    assert len(plan.choice) == len(alpha) > 8000
    assert plan.total_g <= plan.static_total_g + 1e-9
    assert 0 < plan.switches < len(alpha) / 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"row_of_hour": np.array([0, 3])}, "row_of_hour must index rows"),
        ({"intensity_g_per_kwh": np.array([1.0, -1.0])}, "intensity must be finite and >= 0"),
        ({"baseline": 7}, "baseline = 7"),
        ({"solver": "magic"}, "solver = 'magic'"),
    ],
)
def test_bad_input_is_a_config_error(kwargs, message) -> None:
    args = {
        "row_of_hour": np.zeros(2, dtype=int),
        "intensity_g_per_kwh": np.ones(2),
        "tokens_per_hour": np.ones(2),
        **kwargs,
    }
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        plan_hourly(EMB, EN, ALLOWED, **args)


def test_row_without_allowed_configuration_is_rejected() -> None:
    with pytest.raises(ConfigError, match="row 0 allows no configuration"):
        plan_hourly(
            EMB,
            EN,
            np.zeros((1, 2), dtype=bool),
            row_of_hour=np.zeros(2, dtype=int),
            intensity_g_per_kwh=np.ones(2),
            tokens_per_hour=np.ones(2),
        )


def test_hysteresis_steps_one_period_at_a_time() -> None:
    """Config 1 saves 4 g per period over config 0; a switch costs 10 g (factor 1): it is taken
    in the third period (advantage 12 > 10), not before; an infeasible current one is left at
    once; the batch solver gives the same sequence."""
    rule = Hysteresis(2, factor=1.0)
    cost = np.array([[10.0, 12.0], [10.0, 6.0], [10.0, 6.0], [10.0, 6.0], [np.inf, 7.0]])
    got = [rule.step(row, 10.0) for row in cost[:4]]
    assert got == [0, 0, 0, 1] and rule.advantage_g.tolist() == [0.0, 0.0]
    rule.current = 0
    assert rule.step(cost[4], 1e9) == 1  # infeasible: leaves whatever the switching cost
    batch = plan_hourly(cost[:4], np.zeros((4, 2)), np.ones((4, 2), bool),
                        row_of_hour=np.arange(4), intensity_g_per_kwh=np.ones(4),
                        tokens_per_hour=np.ones(4), switch_embodied_g=10.0,
                        solver="online")  # fmt: skip
    assert batch.choice.tolist() == got
    for bad in ({"n_configs": 0}, {"n_configs": 2, "factor": -1.0}, {"n_configs": 2, "current": 5}):
        with pytest.raises(ConfigError):
            Hysteresis(**bad)
    with pytest.raises(ConfigError, match="cost_g"):
        rule.step(np.array([np.inf, np.inf]), 1.0)
