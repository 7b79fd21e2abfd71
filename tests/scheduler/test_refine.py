"""Verify before serving: profiling the cells a plan chose, then planning again."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from greenllm.errors import ConfigError
from greenllm.scheduler import Planner
from greenllm.scheduler.planner import measured_feasible
from greenllm.scheduler.refine import reveal, to_verify, verify_plan
from tests.scheduler import synthetic

FULL = synthetic.matrices()


class Revealer:
    """``measure`` that copies cells from the fully profiled matrices and logs each call."""

    def __init__(self, start):
        self.state = start
        self.calls: list[list] = []

    def __call__(self, cells):
        self.calls.append(list(cells))
        self.state = reveal(FULL, self.state, cells)
        return self.state


def _chosen_cells(plan):
    return [(synthetic.QPS.index(e.qps), FULL.column(e.configuration)) for e in plan.entries]


def test_fully_profiled_matrices_need_no_verification() -> None:
    planner = Planner(intensity_g_per_kwh=261.0)
    measure = Revealer(FULL)
    v = verify_plan(planner, FULL, measure, budget_cells=10)
    assert (v.rounds, v.profiled, measure.calls) == (0, (), [])
    assert _chosen_cells(v.plan) == _chosen_cells(planner.plan(FULL))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_choice_ends_measured_and_feasible_when_the_budget_allows(seed: int) -> None:
    sparse = synthetic.matrices(observed_fraction=0.3, seed=seed)
    planner = Planner(intensity_g_per_kwh=261.0, margin_sigmas=0.0)
    measure = Revealer(sparse)
    v = verify_plan(planner, sparse, measure, budget_cells=FULL.observed.size)
    # Every choice is measured, unless nothing measured meets the SLO in its row and the filled
    # choice is the fallback (no configuration is predicted to meet it).
    assert all(e.measured or e.fallback for e in v.plan.entries)
    # Only cells that were not profiled yet were profiled, each once.
    profiled = [(synthetic.QPS.index(k.qps), FULL.column(c)) for k, c in v.profiled]
    assert len(set(profiled)) == len(profiled)
    assert not any(sparse.observed[r, c] for r, c in profiled)
    assert v.matrices.observed.sum() == sparse.observed.sum() + len(profiled)
    # Each measured, non-fallback choice really meets the target (it was measured to).
    for (r, c), e in zip(_chosen_cells(v.plan), v.plan.entries, strict=True):
        if not e.fallback:
            assert FULL.attainment[r, c] >= 0.9
    # And the verified plan is the plan of the matrices it ended with.
    final = planner.plan(v.matrices)
    assert _chosen_cells(v.plan) == _chosen_cells(final)


def test_budget_is_never_exceeded_and_the_most_valuable_cell_goes_first() -> None:
    sparse = synthetic.matrices(observed_fraction=0.3, seed=1)
    planner = Planner(intensity_g_per_kwh=261.0, margin_sigmas=0.0)  # what verify_plan explores
    todo = to_verify(planner, sparse)
    assert len(todo) >= 2
    measure = Revealer(sparse)
    v = verify_plan(Planner(intensity_g_per_kwh=261.0), sparse, measure, budget_cells=1)
    assert v.profiled == (todo[0],) and v.rounds == 1
    assert v.plan.margin_sigmas == 2.0  # the final plan keeps the planner's own margin
    # The first cell is a row with nothing measured that meets the SLO, or the largest saving.
    m, base = planner.candidates(sparse)
    filled = planner.complete(m)
    choice = planner.choose(filled, base)
    ok = measured_feasible(m, 0.9)
    gains = []
    for key, config in todo:
        r = m.rows.index(key)
        assert m.column(config) == choice[r] and not m.observed[r, choice[r]]
        best = filled["carbon"][r][ok[r]].min() if ok[r].any() else np.inf
        gains.append(1 - filled["carbon"][r, choice[r]] / best if ok[r].any() else np.inf)
    assert gains == sorted(gains, reverse=True) and min(gains) > 0


def test_prefer_measured_serves_a_measured_cell_wherever_one_meets_the_slo() -> None:
    sparse = synthetic.matrices(observed_fraction=0.5, seed=4)
    planner = Planner(intensity_g_per_kwh=261.0, margin_sigmas=0.0)
    plain = planner.plan(sparse)
    safe = planner.plan(sparse, prefer_measured=True)
    ok = measured_feasible(sparse, 0.9)
    for e, p in zip(safe.entries, plain.entries, strict=True):
        r = synthetic.QPS.index(e.qps)
        if ok[r].any():
            assert e.measured and sparse.attainment[r, sparse.column(e.configuration)] >= 0.9
        else:
            assert e.configuration == p.configuration
    assert any(not e.measured for e in plain.entries if ok[synthetic.QPS.index(e.qps)].any())


def test_zero_budget_returns_the_plain_plan() -> None:
    sparse = synthetic.matrices(observed_fraction=0.3, seed=2)
    planner = Planner(intensity_g_per_kwh=261.0)
    v = verify_plan(planner, sparse, Revealer(sparse), budget_cells=0, prefer_measured=False)
    assert v.profiled == () and v.rounds == 0
    assert _chosen_cells(v.plan) == _chosen_cells(planner.plan(sparse))


def test_a_measure_that_profiles_nothing_stops_the_loop(caplog) -> None:
    sparse = synthetic.matrices(observed_fraction=0.3, seed=2)
    calls = []

    def measure(cells):
        calls.append(cells)
        return sparse

    with caplog.at_level(logging.WARNING, logger="greenllm.scheduler.refine"):
        v = verify_plan(Planner(intensity_g_per_kwh=261.0), sparse, measure, budget_cells=50)
    assert len(calls) == 1 and v.profiled == ()
    assert "profiled none" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"budget_cells": -1}, "budget_cells"),
        ({"max_rounds": -1}, "max_rounds"),
        ({"explore_margin_sigmas": float("nan")}, "explore_margin_sigmas"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, needle) -> None:
    args = {"budget_cells": 5, **kwargs}
    with pytest.raises(ConfigError, match=needle):
        verify_plan(Planner(intensity_g_per_kwh=261.0), FULL, Revealer(FULL), **args)


def test_measure_must_keep_the_shape() -> None:
    sparse = synthetic.matrices(observed_fraction=0.3, seed=0)
    with pytest.raises(ConfigError, match="shape"):
        verify_plan(Planner(intensity_g_per_kwh=261.0), sparse,
                    lambda cells: FULL.select_columns([0, 1]), budget_cells=5)  # fmt: skip


def test_reveal_copies_exactly_the_cells_asked_for() -> None:
    sparse = synthetic.matrices(observed_fraction=0.3, seed=0)
    hidden = np.argwhere(~sparse.observed)
    r, c = (int(x) for x in hidden[0])
    out = reveal(FULL, sparse, [(FULL.rows[r], FULL.configs[c])])
    assert out.observed.sum() == sparse.observed.sum() + 1
    assert out.attainment[r, c] == FULL.attainment[r, c]
    np.testing.assert_array_equal(out.energy_j[r, c], FULL.energy_j[r, c])
    with pytest.raises(ConfigError, match="same rows"):
        reveal(FULL.select_columns([0, 1]), sparse, [])
