"""The planner beyond the paper: safety margin in logit space, fallback, carbon by factors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit

from greenllm.errors import ConfigError
from greenllm.scheduler import CompletionResult, Planner, RowKey, schedule
from greenllm.scheduler.carbon_factors import complete_carbon_factors, filled_carbon_per_token
from greenllm.scheduler.margin import AttainmentBounds, attainment_bounds, choose_with_margin
from tests.scheduler import synthetic

ROWS = [RowKey("sharegpt", 160, 140, q) for q in (1.0, 2.0, 4.0, 8.0)]


def _result(values: np.ndarray, observed: np.ndarray, sigma: np.ndarray) -> CompletionResult:
    sigma = np.where(observed, 0.0, sigma)
    return CompletionResult(values, observed, sigma, sigma, "als", 1, "logit")


def test_lower_bound_is_taken_in_logit_space_and_raised_by_measured_cells() -> None:
    values = np.array([[0.99, 0.99], [0.99, 0.99], [0.95, 0.99], [0.2, 0.5]])
    observed = np.array([[False, False], [False, True], [True, False], [True, False]])
    sigma = np.array([[1.0, 1.5]] * 4)
    b = attainment_bounds(_result(values, observed, sigma), ROWS, 0.9, 2.0)
    # column 1, 4 QPS: filled, nothing measured at more load -> sigmoid(logit(0.99) - 2 x 1.5)
    assert b.lower[2, 1] == pytest.approx(expit(logit(0.99) - 3.0))
    assert b.lower[2, 1] < 0.9 <= b.point[2, 1]  # feasible by its estimate, not confidently
    # column 0: the measured 0.95 at 4 QPS proves the cells at 1 and 2 QPS meet 0.9
    assert b.lower[0, 0] == b.lower[1, 0] == pytest.approx(0.95)
    assert np.array_equal(b.lower[observed], values[observed])
    assert np.all(b.lower <= b.point + 1e-12)
    # z: errors by which a filled cell clears the target; +-inf on measured cells
    assert b.z[2, 1] == pytest.approx((logit(0.99) - logit(0.9)) / 1.5)
    assert b.z[2, 0] == np.inf and b.z[3, 0] == -np.inf
    assert b.z[3, 1] == pytest.approx((logit(0.5) - logit(0.9)) / 1.5)
    # no margin: the point estimates themselves
    b0 = attainment_bounds(_result(values, observed, sigma), ROWS, 0.9, 0.0)
    assert np.array_equal(b0.lower, b0.point)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 4.0), st.floats(0.0, 4.0), st.integers(0, 2**31))
def test_a_larger_margin_never_raises_the_lower_bound(k1, k2, seed) -> None:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, (4, 3))
    observed = rng.random((4, 3)) < 0.4
    res = _result(values, observed, rng.uniform(0.1, 3.0, (4, 3)))
    lo, hi = sorted((k1, k2))
    a, b = (attainment_bounds(res, ROWS, 0.9, k) for k in (lo, hi))
    assert np.all(b.lower <= a.lower + 1e-12)
    assert np.array_equal(a.point, b.point)


def test_fallback_takes_the_configuration_most_likely_to_meet_the_target() -> None:
    carbon = np.array([[1.0, 2.0, 3.0]])
    bounds = AttainmentBounds(
        point=np.array([[0.89, 0.85, 0.80]]),
        lower=np.array([[0.89, 0.60, 0.40]]),
        z=np.array([[-np.inf, -0.3, -0.1]]),  # measured miss, two uncertain filled cells
    )
    assert choose_with_margin(carbon, bounds, 0.9, "slo", 0, margin_sigmas=2.0)[0] == 2
    assert choose_with_margin(carbon, bounds, 0.9, "default", 1, margin_sigmas=2.0)[0] == 1
    # without a margin: the paper's fallback, the highest attainment
    assert choose_with_margin(carbon, bounds, 0.9, "slo", 0, margin_sigmas=0.0)[0] == 0
    # a confidently feasible cell wins whatever the others' chances
    feasible = AttainmentBounds(bounds.point, np.array([[0.89, 0.6, 0.95]]), bounds.z)
    assert choose_with_margin(carbon, feasible, 0.9, "slo", 0, margin_sigmas=2.0)[0] == 2


@settings(max_examples=10, deadline=None)
@given(st.floats(0.35, 0.9), st.integers(0, 10_000))
def test_margin_zero_is_algorithm_1_on_the_completed_point_estimates(fraction, seed) -> None:
    m = synthetic.matrices(fraction, seed)
    planner = Planner(intensity_g_per_kwh=261.0, margin_sigmas=0.0)
    filled = planner.complete(m)
    plan = planner.plan(m)
    expected = schedule(filled["carbon"], filled["attainment"], 0.9, "slo", 0)
    assert [m.column(e.configuration) for e in plan.entries] == expected.tolist()
    assert plan.margin_sigmas == 0.0


def test_with_a_margin_every_feasible_choice_clears_the_lower_bound() -> None:
    m = synthetic.matrices(0.5, 3)
    planner = Planner(intensity_g_per_kwh=261.0)  # default margin: 2 errors
    filled = planner.complete(m)
    plan = planner.plan(m)
    for r, e in enumerate(plan.entries):
        c = m.column(e.configuration)
        if not e.fallback:
            assert filled["attainment_lower"][r, c] >= 0.9
            cheaper = filled["carbon"][r] < filled["carbon"][r, c]
            assert not np.any(cheaper & (filled["attainment_lower"][r] >= 0.9))


def test_filled_cells_that_meet_the_slo_get_the_stable_time_factor() -> None:
    m = synthetic.matrices(0.5, 2)
    served = m.carbon_observed
    f = complete_carbon_factors(m, 7.0, method="als")
    offered = f.offered_tokens_per_s[:, None]
    for meets in (np.ones(m.shape, bool), np.zeros(m.shape, bool)):
        emb, energy = filled_carbon_per_token(m, 7.0, meets, 0.9, method="als")
        assert np.allclose(emb[served], m.embodied_g_per_token()[served], rtol=1e-12)
        assert np.allclose(energy[served], m.energy_kwh_per_token()[served], rtol=1e-12)
        # synthetic cells meeting the SLO all have a time factor of exactly 1
        tf = np.where(meets, 1.0, f.time_factor)
        want = f.embodied_g_per_s * tf / offered
        assert np.allclose(emb[~served], want[~served], rtol=1e-9)
        want_e = f.power_w * tf / offered / 3.6e6
        assert np.allclose(energy[~served], want_e[~served], rtol=1e-9)


def test_carbon_models_agree_on_measured_cells_and_bad_names_are_config_errors() -> None:
    m = synthetic.matrices()  # every cell measured: both models return the measurements
    a = Planner(intensity_g_per_kwh=261.0).plan(m)
    b = Planner(intensity_g_per_kwh=261.0, carbon_model="direct").plan(m)
    assert a.entries == b.entries
    with pytest.raises(ConfigError, match="carbon_model = 'physics'"):
        Planner(carbon_model="physics")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="error_by = 'cell'"):
        Planner(error_by="cell")  # type: ignore[arg-type]


def test_error_by_column_is_one_error_per_configuration() -> None:
    from greenllm.scheduler import complete_with_uncertainty

    rng = np.random.default_rng(4)
    truth = expit(rng.normal(size=(30, 1)) + rng.normal(size=(1, 6)) * 2)
    x = np.where(rng.random(truth.shape) < 0.5, truth, np.nan)
    rows = np.arange(30)
    x[rows, rows % 6] = truth[rows, rows % 6]  # every row and column observed
    by_col = complete_with_uncertainty(x, "als", transform="logit", error_by="column")
    both = complete_with_uncertainty(x, "als", transform="logit")
    filled = ~by_col.observed_mask
    for j in range(6):
        s = by_col.sigma_transformed[filled[:, j], j]
        assert s.size > 0
        assert np.allclose(s, s[0]) and s[0] > 0
    assert np.array_equal(by_col.values, both.values)  # same completion, other error model
    assert not np.allclose(by_col.sigma_transformed[filled], both.sigma_transformed[filled])
    with pytest.raises(ConfigError, match="error_by = 'row'"):
        complete_with_uncertainty(x, "als", transform="logit", error_by="row")
