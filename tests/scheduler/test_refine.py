"""Verify before serving: profiling the cells a plan chose, then planning again."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from greenllm.errors import ConfigError
from greenllm.scheduler import Planner, ProfileMatrices
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
        ({"round_cells": 0}, "round_cells"),
        ({"search_sigmas": -1.0}, "search_sigmas"),
        ({"search_sigmas": float("nan")}, "search_sigmas"),
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


def test_where_hides_or_merges_cells_and_checks_shapes() -> None:
    keep = np.zeros(FULL.shape, dtype=bool)
    keep[:, 0] = keep[0, :] = True  # a profiled cell in every row and column
    hidden = FULL.where(keep)
    np.testing.assert_array_equal(hidden.observed, keep)
    assert np.isnan(hidden.energy_j[1, 1]).all() and np.isnan(hidden.attainment[1, 1])
    assert hidden.attainment[1, 0] == FULL.attainment[1, 0]
    merged = hidden.where(keep, FULL)  # the hidden cells taken from FULL: FULL again
    np.testing.assert_array_equal(merged.seconds, FULL.seconds)
    np.testing.assert_array_equal(merged.attainment, FULL.attainment)
    with pytest.raises(ConfigError, match="mask shape"):
        FULL.where(keep[:, :1])
    swapped = FULL.select_columns([1, 0, *range(2, FULL.shape[1])])
    with pytest.raises(ConfigError, match="same rows"):
        FULL.where(keep, swapped)


# A world with a cliff: DSD (column 3) keeps up to 3.8 QPS, so at 4 QPS (row 4) only Standalone
# (column 0, attainment 0.946) meets 0.9, and the two cheaper ones miss it (SD 0.193, DSD 0.361).
CLIFF_CONFIGS = [(c[0], cap, c[2], c[3]) for c, cap in zip(synthetic.CONFIGS, (5.0, 3.5, 2.5, 3.8),
                                                            strict=True)]  # fmt: skip
CLIFF = ProfileMatrices.from_cells(
    [synthetic.cell(q, j, CLIFF_CONFIGS) for q in synthetic.QPS for j in range(4)],
    configs=[c[0] for c in CLIFF_CONFIGS],
)
ST, SD, DPD, DSD = range(4)
# What is profiled (1) and, for the rest, what a (wrong) completion predicts: rows 0-2 get SD
# right, row 3's SD (0.807) and row 4's SD and DSD are predicted to meet the SLO, rows 5-6
# (6 and 8 QPS, where nothing meets it) are predicted hopeless.
CLIFF_KEEP = np.array([[1, 0, 1, 1]] * 4 + [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
CLIFF_PRED = np.array([[1, 0.99, 1, 1]] * 3 + [[1, 0.95, 1, 1], [0.95, 0.97, 1, 0.96]]
                      + [[1, 0.3, 0.3, 0.3], [0.2, 1, 0.2, 0.2]])  # fmt: skip
SIGMA = 0.6  # the predictions' error in logit space


class FixedPlanner(Planner):
    """A planner whose completion is the table CLIFF_PRED (error SIGMA in logit space) where a
    cell is not profiled, and true carbon: the search of ``verify_plan`` without CF noise."""

    def __init__(self, margin_sigmas: float = 2.0, pred: np.ndarray = CLIFF_PRED) -> None:
        super().__init__(intensity_g_per_kwh=261.0, margin_sigmas=margin_sigmas)
        self.pred = pred

    def complete(self, m: ProfileMatrices) -> dict[str, np.ndarray]:
        def logit(p):
            p = np.clip(p, 1e-9, 1 - 1e-9)
            return np.log(p / (1 - p))

        obs, target = m.observed, self.slo_target
        point = np.where(obs, np.nan_to_num(m.attainment), self.pred)
        z = np.where(obs, np.where(point >= target, np.inf, -np.inf),
                     (logit(point) - logit(target)) / SIGMA)  # fmt: skip
        lower = np.where(obs, point, 1 / (1 + np.exp(SIGMA * self.margin_sigmas - logit(point))))
        emb, energy = CLIFF.embodied_g_per_token(self.lifetimes_years), CLIFF.energy_kwh_per_token()
        opr = self.intensity_g_per_kwh * energy
        return {"embodied": emb, "energy_kwh": energy, "operational": opr, "carbon": emb + opr,
                "attainment": point, "attainment_stderr": np.where(obs, 0.0, 0.05),
                "attainment_lower": lower, "attainment_z": z}  # fmt: skip


def _cliff_sparse(keep: np.ndarray = CLIFF_KEEP) -> ProfileMatrices:
    return CLIFF.where(keep)


class CliffRevealer(Revealer):
    def __call__(self, cells):
        self.calls.append([(CLIFF.rows.index(k), CLIFF.column(c)) for k, c in cells])
        self.state = reveal(CLIFF, self.state, cells)
        return self.state


def test_cliff_world_is_what_the_tests_below_assume() -> None:
    att = CLIFF.attainment
    np.testing.assert_allclose(att[4], [0.946, 0.193, 0.014, 0.361], atol=1e-3)
    assert att[3, SD] < 0.9 <= att[3, DSD] and (att[5:] < 0.1).all()
    carbon = CLIFF.carbon_g_per_token(261.0, {"default": 7.0})
    assert carbon[4, SD] < carbon[4, DSD] < carbon[4, ST]  # the cheap ones miss at 4 QPS
    assert (carbon[:4, SD] < carbon[:4, [ST, DSD]].min(axis=1)).all()


def test_an_open_workload_is_searched_until_a_configuration_is_measured_to_meet_the_slo() -> None:
    sparse = _cliff_sparse()
    measure = CliffRevealer(sparse)
    v = verify_plan(FixedPlanner(), sparse, measure, budget_cells=4)
    # Rounds of a quarter of the budget: row 4's cheapest candidates, each a miss, then
    # Standalone; then the largest predicted saving elsewhere (row 3's SD, a miss too).
    assert measure.calls == [[(4, SD)], [(4, DSD)], [(4, ST)], [(3, SD)]]
    assert v.rounds == 4 and len(v.profiled) == 4
    e = v.plan.entries[4]
    assert (CLIFF.column(e.configuration), e.measured, e.fallback) == (ST, True, False)
    assert e.slo_attainment == pytest.approx(0.946, abs=1e-3)
    assert CLIFF.column(v.plan.entries[3].configuration) == DSD  # SD measured as a miss
    # The whole budget in one round leaves row 4 at its fallback, DSD, which misses the SLO.
    one = verify_plan(FixedPlanner(), sparse, CliffRevealer(sparse), 4, round_cells=4)
    e = one.plan.entries[4]
    assert (CLIFF.column(e.configuration), e.measured, e.fallback) == (DSD, False, True)
    assert CLIFF.attainment[4, DSD] < 0.9


def test_the_search_gives_up_where_no_configuration_can_plausibly_meet_the_slo() -> None:
    sparse = _cliff_sparse()
    explorer = FixedPlanner(margin_sigmas=0.0)
    rows = {CLIFF.rows.index(k) for k, _ in to_verify(explorer, sparse)}
    assert rows == {0, 1, 2, 3, 4}  # 6 and 8 QPS: 0.3 and 0.2 are 5 and 6 errors short
    unbounded = to_verify(explorer, sparse, search_sigmas=float("inf"))
    assert {CLIFF.rows.index(k) for k, _ in unbounded} == set(range(7))
    assert not any(sparse.observed[CLIFF.rows.index(k), CLIFF.column(c)] for k, c in unbounded)
    # With budget to spare the search stops early instead of profiling the hopeless rows.
    measure = CliffRevealer(sparse)
    v = verify_plan(FixedPlanner(), sparse, measure, budget_cells=20)
    profiled = [c for call in measure.calls for c in call]
    assert not any(r >= 5 for r, _ in profiled) and len(profiled) < 20
    assert all(e.measured for e in v.plan.entries[:5])
    assert all(e.fallback and not e.measured for e in v.plan.entries[5:])
    # Without the bound it profiles every cell of the hopeless rows, each once.
    measure = CliffRevealer(sparse)
    v = verify_plan(FixedPlanner(), sparse, measure, 30, search_sigmas=float("inf"))
    profiled = [c for call in measure.calls for c in call]
    assert len(set(profiled)) == len(profiled) == len(v.profiled)
    assert sorted(c for c in profiled if c[0] >= 5) == [(5, 1), (5, 2), (5, 3), (6, 0),
                                                       (6, 2), (6, 3)]  # fmt: skip


def test_a_fallback_on_a_measured_miss_searches_the_filled_cell_likeliest_to_meet_the_slo() -> None:
    # Row 3 profiled at SD (0.807) and DPD (0.193); Standalone and DSD predicted below those:
    # the explorer's choice (the highest attainment) is the measured 0.807, a miss.
    keep = CLIFF_KEEP.copy()
    keep[3] = [0, 1, 1, 0]
    pred = CLIFF_PRED.copy()
    pred[3] = [0.8, 1, 1, 0.75]  # z = -1.35 and -1.83: plausible within 2 errors
    sparse = _cliff_sparse(keep)
    todo = to_verify(FixedPlanner(0.0, pred), sparse)
    assert (CLIFF.rows[3], CLIFF.configs[ST]) in todo  # the largest z, truly 0.997
    assert (CLIFF.rows[3], CLIFF.configs[DSD]) not in todo  # one cell per workload
    assert not any(k == CLIFF.rows[3] for k, _ in to_verify(FixedPlanner(0.0, pred), sparse, 1.0))


@pytest.mark.parametrize(("budget", "round_cells", "largest"), [(7, None, 2), (7, 3, 3), (5, 1, 1)])
def test_rounds_respect_the_budget_and_never_profile_a_cell_twice(budget, round_cells,
                                                                   largest) -> None:  # fmt: skip
    sparse = synthetic.matrices(observed_fraction=0.3, seed=3)
    measure = Revealer(sparse)
    v = verify_plan(Planner(intensity_g_per_kwh=261.0), sparse, measure, budget,
                    round_cells=round_cells)  # fmt: skip
    sizes = [len(call) for call in measure.calls]
    assert sizes and max(sizes) <= largest and sum(sizes) == len(v.profiled) <= budget
    cells = [(synthetic.QPS.index(k.qps), FULL.column(c)) for k, c in v.profiled]
    assert len(set(cells)) == len(cells)
    assert not any(sparse.observed[r, c] for r, c in cells)
