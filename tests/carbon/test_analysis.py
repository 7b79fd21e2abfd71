"""Section 5 (Eq. 4-6): the closed forms, the three implications, break-evens, and compare()."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from greenllm.carbon import DeviceUsage, accounting, amortized_embodied_g, get_gpu
from greenllm.carbon.analysis import (
    breakeven_intensity,
    breakeven_new_lifetime_years,
    breakeven_old_lifetime_years,
    carbon_ratio,
    carbon_ratio_direct,
    compare,
    energy_condition,
    lifetime_ratio,
    lifetime_ratio_terms,
    ratio_slope_vs_intensity,
    ratio_vs_intensity,
    ratio_vs_lifetime,
    shorter_new_lifetime_saves,
)
from greenllm.errors import ConfigError
from greenllm.units import SECONDS_PER_YEAR

# ---- strategies other tests may reuse ---------------------------------------------------------
energy_kwh = st.floats(1e-4, 1e3)
embodied_g = st.floats(0.0, 1e5, allow_subnormal=False)  # 1e-320 g underflows any ratio
intensity = st.floats(0.0, 2000.0)
busy_s = st.floats(1.0, 1e6)
gpu_total_g = st.floats(1e3, 2e5)  # 1-200 kg CO2e per GPU
lifetime_years = st.floats(0.5, 20.0)

eq5_args = st.tuples(energy_kwh, energy_kwh, energy_kwh, embodied_g, embodied_g, embodied_g)
eq6_args = st.tuples(
    energy_kwh, energy_kwh, energy_kwh, busy_s, busy_s, busy_s, gpu_total_g, gpu_total_g
)


def _ratio_by_hand(N_A, N_A2, N_B, E_A, E_A2, E_B, alpha):  # Eq. 5, first line
    return ((N_A2 + N_B) * alpha + E_A2 + E_B) / (N_A * alpha + E_A)


# ---- Eq. 4 and Eq. 5 --------------------------------------------------------------------------
@given(args=eq5_args, alpha=intensity)
def test_closed_form_equals_direct_ratio(args, alpha) -> None:
    assume(args[0] * alpha + args[3] > 1e-3)
    expected = _ratio_by_hand(*args, alpha)
    # The closed form adds S = (N'_A + N_B) / N_A to a term that can nearly cancel it, so its
    # round-off scales with S, not with the result.
    scale = max(expected, (args[1] + args[2]) / args[0])
    assert carbon_ratio(*args, alpha) == pytest.approx(expected, rel=1e-9, abs=1e-12 * scale)
    assert carbon_ratio_direct(*args, alpha) == pytest.approx(expected, rel=1e-12)


def test_ratio_is_vectorised_and_has_the_right_limits() -> None:
    alphas = np.array([0.0, 17.0, 261.0, 501.0, 1e12])
    r = carbon_ratio(1.0, 0.5, 0.3, 100.0, 90.0, 40.0, alphas)
    assert isinstance(r, np.ndarray) and r.shape == (5,)
    assert r[0] == pytest.approx((90.0 + 40.0) / 100.0)  # alpha = 0: embodied only
    assert r[-1] == pytest.approx(0.8, rel=1e-6)  # alpha -> inf: energy ratio (N'_A + N_B) / N_A
    assert np.array_equal(ratio_vs_intensity(1.0, 0.5, 0.3, 100.0, 90.0, 40.0, alphas), r)
    assert isinstance(carbon_ratio(1.0, 0.5, 0.3, 100.0, 90.0, 40.0, 261.0), float)


def test_energy_condition_eq4() -> None:
    assert energy_condition(1.0, 0.5, 0.4) is True
    assert energy_condition(1.0, 0.6, 0.4) is False  # equal energy is not enough
    assert list(energy_condition(np.array([1.0, 2.0]), 0.5, 1.0)) == [False, True]


@given(args=eq5_args, alpha=st.floats(1e-3, 2000.0))
def test_implication_1_contrapositive(args, alpha) -> None:
    """A.3 (E'_A + E_B >= E_A) and N'_A + N_B >= N_A  =>  no savings (ratio >= 1)."""
    N_A, N_A2, N_B, E_A, E_A2, E_B = args
    assume(E_A2 + E_B >= E_A and not energy_condition(N_A, N_A2, N_B))
    assert carbon_ratio(*args, alpha) >= 1.0 - 1e-9


@given(
    N_A=energy_kwh,
    share=st.floats(0.01, 1.5),
    split=st.floats(0.0, 1.0),
    E_A=embodied_g,
    extra=st.floats(0.0, 1e4),
    to_old=st.floats(0.0, 1.0),
    alpha=st.floats(1e-3, 2000.0),
)
def test_implication_1(N_A, share, split, E_A, extra, to_old, alpha) -> None:
    """ratio < 1 and E'_A + E_B >= E_A (A.3)  =>  N'_A + N_B < N_A (Eq. 4)."""
    N_A2, N_B = N_A * share * split, N_A * share * (1 - split)
    E_A2, E_B = (E_A + extra) * (1 - to_old), (E_A + extra) * to_old  # sum >= E_A by design
    if carbon_ratio(N_A, N_A2, N_B, E_A, E_A2, E_B, alpha) < 1.0:
        assert energy_condition(N_A, N_A2, N_B)


@given(args=eq5_args, a1=intensity, a2=intensity)
@example(args=(3.0, 1.0, 1.0, 0.0, 0.0, 0.0), a1=1.0, a2=1.0)  # no embodied carbon: D = 0
def test_implication_2_monotone_in_alpha_by_sign_of_d(args, a1, a2) -> None:
    """With D = E'_A + E_B - (N'_A + N_B)/N_A * E_A: D >= 0 -> ratio non-increasing in alpha
    (savings grow with intensity); D <= 0 -> non-decreasing. A.3 + Eq. 4 imply D > 0 when
    E_A > 0 (D = 0 when no GPU has embodied carbon)."""
    N_A, N_A2, N_B, E_A, E_A2, E_B = args
    assume(min(a1, a2) * N_A + E_A > 1e-3)
    lo, hi = sorted((a1, a2))
    D = E_A2 + E_B - (N_A2 + N_B) / N_A * E_A
    r_lo, r_hi = carbon_ratio(*args, lo), carbon_ratio(*args, hi)
    tol = 1e-9 * max(1.0, abs(r_lo))
    if D >= 0:
        assert r_hi <= r_lo + tol
    if D <= 0:
        assert r_hi >= r_lo - tol
    if E_A2 + E_B >= E_A and energy_condition(N_A, N_A2, N_B):
        # D >= E_A (1 - (N'_A + N_B)/N_A): positive with embodied carbon, 0 without any
        assert D > 0 if E_A > 0 else D >= 0
    slope = ratio_slope_vs_intensity(*args, lo)
    assert slope == 0.0 or np.sign(slope) == -np.sign(D)


@given(args=eq5_args, alpha=st.floats(1.0, 1000.0))
def test_slope_matches_finite_difference(args, alpha) -> None:
    assume(args[0] * alpha + args[3] > 1e-2)
    h = 1e-3 * alpha
    fd = (_ratio_by_hand(*args, alpha + h) - _ratio_by_hand(*args, alpha - h)) / (2 * h)
    # The central difference carries rounding error of about eps * |ratio| / h.
    rounding = 8 * np.finfo(float).eps * abs(_ratio_by_hand(*args, alpha)) / h
    assert ratio_slope_vs_intensity(*args, alpha) == pytest.approx(
        fd, rel=1e-4, abs=rounding + 1e-12
    )


# ---- Eq. 6: lifetimes --------------------------------------------------------------------------
@given(args=eq6_args, T_A=lifetime_years, T_B=lifetime_years, alpha=intensity)
def test_eq6_is_eq5_with_eq1_embodied(args, T_A, T_B, alpha) -> None:
    N_A, N_A2, N_B, t_A, t_A2, t_B, tot_A, tot_B = args
    year_s = 365.25 * 86400
    E_A, E_A2, E_B = (
        t_A / (T_A * year_s) * tot_A,
        t_A2 / (T_A * year_s) * tot_A,
        t_B / (T_B * year_s) * tot_B,
    )
    assume(N_A * alpha + E_A > 1e-6)
    expected = _ratio_by_hand(N_A, N_A2, N_B, E_A, E_A2, E_B, alpha)
    assert lifetime_ratio(*args, T_A, T_B, alpha) == pytest.approx(expected, rel=1e-9)
    terms = lifetime_ratio_terms(*args, T_A, T_B, alpha)
    scale = max(expected, terms.energy_term)  # the split's round-off scales with S
    assert terms.ratio == pytest.approx(expected, rel=1e-9, abs=1e-12 * scale)
    assert terms.energy_term == pytest.approx((N_A2 + N_B) / N_A)
    assert terms.old_gpu_term == pytest.approx(E_B / (N_A * alpha + E_A), rel=1e-9)
    assert terms.paper_old_gpu_term == pytest.approx(E_B / (N_A * alpha + E_A2), rel=1e-9)
    other = lifetime_ratio_terms(*args, T_A, T_B * 2, alpha)
    assert other.paper_constant == pytest.approx(terms.paper_constant, rel=1e-12)  # "Const."


@given(args=eq6_args, T_A=lifetime_years, T1=lifetime_years, T2=lifetime_years, alpha=intensity)
def test_implication_3_longer_old_lifetime_never_hurts(args, T_A, T1, T2, alpha) -> None:
    """Only t_B B / T_B depends on T_B, with a positive sign: ratio non-increasing in T_B."""
    lo, hi = sorted((T1, T2))
    r_lo, r_hi = lifetime_ratio(*args, T_A, lo, alpha), lifetime_ratio(*args, T_A, hi, alpha)
    assert r_hi <= r_lo * (1 + 1e-12)
    if hi > lo * (1 + 1e-6):  # strictly better once the lifetimes differ beyond round-off
        assert r_hi < r_lo


@given(args=eq6_args, T1=lifetime_years, T2=lifetime_years, T_B=lifetime_years, alpha=intensity)
def test_implication_3_shorter_new_lifetime_under_its_condition(args, T1, T2, T_B, alpha) -> None:
    """Shorter T_A lowers the ratio iff t'_A N_A alpha < t_A ((N'_A + N_B) alpha + E_B)."""
    N_A, N_A2, N_B, t_A, t_A2, t_B, _, tot_B = args
    short, long_ = sorted((T1, T2))
    E_B = amortized_embodied_g(t_B, tot_B, T_B)
    r_short = lifetime_ratio(*args, short, T_B, alpha)
    r_long = lifetime_ratio(*args, long_, T_B, alpha)
    tol = 1e-9 * r_long
    if shorter_new_lifetime_saves(N_A, N_A2, N_B, t_A, t_A2, E_B, alpha):
        assert r_short <= r_long + tol
    else:
        assert r_short >= r_long - tol
    if t_A2 == t_A and r_long < 1.0:  # same busy time and savings: a shorter T_A only dilutes
        assert not shorter_new_lifetime_saves(N_A, N_A2, N_B, t_A, t_A2, E_B, alpha)


def test_sweep_over_lifetimes_grid() -> None:
    args = (1.0, 0.5, 0.3, 3600.0, 3000.0, 3600.0, 26_340.0, 10_300.0)
    new, old = np.array([2.0, 5.0, 7.0]), np.array([5.0, 7.0, 10.0, 12.0])
    grid = ratio_vs_lifetime(*args, 261.0, new, old)
    assert grid.shape == (3, 4)
    assert grid[1, 2] == pytest.approx(lifetime_ratio(*args, 5.0, 10.0, 261.0))
    assert np.all(np.diff(grid, axis=1) < 0)  # longer old-GPU life, lower ratio


# ---- break-evens --------------------------------------------------------------------------------
@given(args=eq5_args, probe=st.floats(0.0, 5000.0))
def test_breakeven_intensity(args, probe) -> None:
    N_A, N_A2, N_B, E_A, E_A2, E_B = args
    be = breakeven_intensity(*args)
    dN, dE = N_A - N_A2 - N_B, E_A2 + E_B - E_A
    if be.saves_when in ("above", "below"):
        assert be.value == pytest.approx(dE / dN) and be.value > 0
        assert _ratio_by_hand(*args, be.value) == pytest.approx(1.0, rel=1e-9)
    assume(N_A * probe + E_A > 1e-6)
    r = _ratio_by_hand(*args, probe)
    assume(abs(r - 1.0) > 1e-9)
    assert be.saves(probe) == (r < 1.0) or (probe == 0.0 and be.saves_when == "always")


@given(args=eq6_args, T_A=lifetime_years, alpha=st.floats(1e-3, 2000.0), probe=lifetime_years)
def test_breakeven_old_lifetime(args, T_A, alpha, probe) -> None:
    N_A, N_A2, N_B, t_A, t_A2, t_B, tot_A, tot_B = args
    E_A, E_A2 = amortized_embodied_g(t_A, tot_A, T_A), amortized_embodied_g(t_A2, tot_A, T_A)
    be = breakeven_old_lifetime_years(N_A, N_A2, N_B, E_A, E_A2, t_B, tot_B, alpha)
    assert be.saves_when in ("above", "never")
    if be.saves_when == "above":
        assert lifetime_ratio(*args, T_A, be.value, alpha) == pytest.approx(1.0, rel=1e-9)
    r = lifetime_ratio(*args, T_A, probe, alpha)
    assume(abs(r - 1.0) > 1e-9)
    assert be.saves(probe) == (r < 1.0)


@given(args=eq6_args, T_B=lifetime_years, alpha=st.floats(1e-3, 2000.0), probe=lifetime_years)
def test_breakeven_new_lifetime(args, T_B, alpha, probe) -> None:
    N_A, N_A2, N_B, t_A, t_A2, t_B, tot_A, tot_B = args
    E_B = amortized_embodied_g(t_B, tot_B, T_B)
    be = breakeven_new_lifetime_years(N_A, N_A2, N_B, t_A, t_A2, tot_A, E_B, alpha)
    if be.saves_when in ("above", "below"):
        assert lifetime_ratio(*args, be.value, T_B, alpha) == pytest.approx(1.0, rel=1e-9)
    r = lifetime_ratio(*args, probe, T_B, alpha)
    assume(abs(r - 1.0) > 1e-9)
    assert be.saves(probe) == (r < 1.0)


def test_breakeven_kinds_by_hand() -> None:
    # Less energy, more embodied: saves above (130 - 100) / (1 - 0.8) = 150 g/kWh.
    be = breakeven_intensity(1.0, 0.5, 0.3, 100.0, 90.0, 40.0)
    assert (be.saves_when, be.value, str(be)) == ("above", pytest.approx(150.0), "above 150 g/kWh")
    assert breakeven_intensity(1.0, 0.5, 0.3, 100.0, 60.0, 10.0).saves_when == "always"
    assert breakeven_intensity(1.0, 0.7, 0.5, 100.0, 90.0, 40.0).saves_when == "never"
    assert math.isinf(breakeven_intensity(1.0, 0.7, 0.5, 100.0, 90.0, 40.0).value)
    be = breakeven_intensity(1.0, 0.7, 0.5, 100.0, 50.0, 10.0)  # more energy, less embodied
    assert (be.saves_when, be.value) == ("below", pytest.approx(200.0))


# ---- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        (0.0, 0.5, 0.3, 100.0, 90.0, 40.0, 261.0),
        (1.0, -0.5, 0.3, 100.0, 90.0, 40.0, 261.0),
        (1.0, 0.5, 0.3, 100.0, math.nan, 40.0, 261.0),
        (1.0, 0.5, 0.3, 100.0, 90.0, 40.0, -1.0),
        (1.0, 0.5, 0.3, 0.0, 90.0, 40.0, 0.0),
    ],
)
def test_bad_inputs_raise_config_error(args) -> None:
    with pytest.raises(ConfigError):
        carbon_ratio(*args)


def test_bad_lifetimes_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="lifetime_years"):
        lifetime_ratio(1.0, 0.5, 0.3, 1.0, 1.0, 1.0, 1e4, 1e4, 0.0, 7.0, 261.0)


# ---- compare() on measurements ------------------------------------------------------------------
YEAR_S = 365.25 * 86400  # the Julian year of Eq. 1 in greenllm.carbon.accounting
A100_G, T4_G = 26_340.0, 10_300.0  # Table 1 of the paper


def test_seconds_per_year_matches_accounting() -> None:
    assert SECONDS_PER_YEAR == YEAR_S
    assert amortized_embodied_g(3600.0, A100_G, 7.0) == pytest.approx(
        accounting.embodied_carbon_g(3600.0, "A100", 7.0), rel=1e-12
    )


def _runs(old_life: float = 7.0):
    hour = 3600.0
    alone = DeviceUsage("A100", hour, 250.0 * hour)
    pair = (DeviceUsage("A100", hour, 130.0 * hour), DeviceUsage("T4", hour, 50.0 * hour, old_life))
    return alone, pair


def test_compare_matches_hand_computation() -> None:
    alone, pair = _runs()
    rep = compare(alone, pair)
    e_a = 3600 / (7 * YEAR_S) * A100_G
    e_b = 3600 / (7 * YEAR_S) * T4_G
    n_a, n_a2, n_b = 0.25, 0.13, 0.05  # kWh
    standalone = n_a * 261 + e_a
    disaggregated = (n_a2 + n_b) * 261 + e_a + e_b
    assert rep.intensity_g_per_kwh == 261.0
    assert rep.standalone_g == pytest.approx(standalone)
    assert rep.disaggregated_g == pytest.approx(disaggregated)
    assert rep.ratio == pytest.approx(disaggregated / standalone)
    assert rep.savings_fraction == pytest.approx(1 - disaggregated / standalone)
    assert rep.embodied_savings_g == pytest.approx(-e_b)
    assert rep.operational_savings_g == pytest.approx((n_a - n_a2 - n_b) * 261)
    assert rep.embodied_savings_g + rep.operational_savings_g == pytest.approx(
        rep.standalone_g - rep.disaggregated_g
    )
    assert rep.energy_condition is True
    assert rep.breakeven_intensity.saves_when == "above"
    assert rep.breakeven_intensity.value == pytest.approx(e_b / (n_a - n_a2 - n_b))
    assert f"{rep.ratio:.3f}x" in rep.summary and "A100+T4" in rep.summary
    assert rep.scenario.ratio(261.0) == pytest.approx(rep.ratio)


def test_compare_breakevens_really_break_even() -> None:
    alone, pair = _runs()
    rep = compare(alone, pair)
    at_alpha = compare(alone, pair, rep.breakeven_intensity.value)
    assert at_alpha.ratio == pytest.approx(1.0, rel=1e-9)
    life = rep.breakeven_old_lifetime
    assert life.saves_when == "above"
    assert compare(*_runs(old_life=life.value)).ratio == pytest.approx(1.0, rel=1e-9)
    assert compare(*_runs(old_life=life.value * 2)).ratio < 1.0


def test_compare_regions_follow_implication_2() -> None:
    alone, pair = _runs()
    ratios = [compare(alone, pair, region=r).ratio for r in ("NCSW", "CISO", "MISO")]
    assert compare(alone, pair, region="miso").intensity_g_per_kwh == 501.0
    assert ratios[0] > ratios[1] > ratios[2]
    sweep = compare(alone, pair).scenario.ratio_vs_intensity([17.0, 261.0, 501.0])
    assert sweep == pytest.approx(ratios)


def test_compare_lifetime_sweep_and_json() -> None:
    alone, pair = _runs()
    rep = compare(alone, pair)
    grid = rep.scenario.ratio_vs_lifetime(261.0, [7.0], [5.0, 7.0, 10.0])
    assert grid.shape == (1, 3) and grid[0, 1] == pytest.approx(rep.ratio)
    assert np.all(np.diff(grid[0]) < 0)
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["ratio"] == pytest.approx(rep.ratio)
    assert data["breakeven_intensity"]["saves_when"] == "above"


def test_compare_accepts_gpu_specs_and_rejects_bad_input() -> None:
    alone, pair = _runs()
    spec_pair = (DeviceUsage(get_gpu("A100"), 3600.0, pair[0].energy_j), pair[1])
    assert compare(alone, spec_pair).ratio == pytest.approx(compare(alone, pair).ratio)
    with pytest.raises(ConfigError, match="old_gpu_run"):
        compare(alone, pair[:1])
    with pytest.raises(ConfigError):
        compare(alone, (pair[0], DeviceUsage("NoSuchGPU", 1.0, 1.0)))
    with pytest.raises(ConfigError):
        compare(alone, (pair[0], DeviceUsage("T4", 1.0, -1.0)))
    with pytest.raises(ConfigError):
        compare(alone, pair, region="Atlantis")
