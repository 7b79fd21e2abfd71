"""Carbon per token through its physical factors (cf_carbon.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.carbon import get_gpu
from greenllm.errors import ProfileError
from greenllm.scheduler import ProfileMatrices, complete
from greenllm.scheduler.carbon_factors import (
    carbon_factors,
    complete_carbon_factors,
    power_bounds_w,
    stable_time_factor,
)
from tests.scheduler import synthetic


@settings(max_examples=20, deadline=None)
@given(st.floats(0.3, 1.0), st.integers(0, 1000), st.sampled_from([7.0, {"T4": 10.0}]))
def test_factors_multiply_back_to_the_measured_carbon(fraction, seed, lifetimes) -> None:
    m = synthetic.matrices(fraction, seed)
    f = carbon_factors(m, lifetimes)
    served = m.carbon_observed
    assert np.allclose(f.embodied_g_per_token()[served],
                       m.embodied_g_per_token(lifetimes)[served], rtol=1e-12)  # fmt: skip
    assert np.allclose(f.energy_kwh_per_token()[served], m.energy_kwh_per_token()[served],
                       rtol=1e-12)  # fmt: skip
    assert np.all(np.isnan(f.power_w[~served]))
    # the synthetic world serves every offered token in a fixed 600 s window: time factor 1
    assert np.allclose(f.time_factor[served], 1.0)
    assert np.allclose(f.power_w[served], m.energy_j.sum(axis=2)[served] / synthetic.DURATION_S)


def test_power_bounds_are_the_catalog_sums() -> None:
    m = synthetic.matrices()
    idle, peak = power_bounds_w(m)
    dpd = m.column(synthetic.CONFIGS[2][0])  # A100 + T4
    assert idle[dpd] == get_gpu("A100").idle_power_w + get_gpu("T4").idle_power_w
    assert peak[dpd] == get_gpu("A100").max_power_w + get_gpu("T4").max_power_w
    assert np.all(peak > idle)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_completed_factors_keep_measurements_and_physical_bounds(seed) -> None:
    m = synthetic.matrices(0.45, seed)
    f = complete_carbon_factors(m, 7.0, method="als")
    measured = carbon_factors(m)
    served = m.carbon_observed
    for name in ("time_factor", "embodied_g_per_s", "power_w"):
        got, want = getattr(f, name), getattr(measured, name)
        assert np.all(np.isfinite(got)) and np.all(got > 0)
        assert np.allclose(got[served], want[served], rtol=1e-9)
    idle, peak = power_bounds_w(m)
    assert np.all(f.power_w <= peak[None, :] + 1e-9)
    floor = np.minimum(idle, 0.9 * np.nanmin(measured.power_w, axis=0))
    assert np.all(f.power_w >= floor[None, :] - 1e-9)
    # power rises with QPS, time factor too (rows are sorted by QPS in the synthetic world)
    assert np.all(np.diff(f.power_w, axis=0) >= -1e-9)
    assert np.all(np.diff(f.time_factor, axis=0) >= -1e-9)


def test_factors_beat_completing_carbon_per_token_directly() -> None:
    """On the physically shaped synthetic world (7 QPS x 4 configurations, 45% observed),
    the relative RMSE of filled carbon over 8 masks: factors well below the direct log-space
    completion of carbon per token (0.13 against 0.31 when this test was written)."""
    truth = synthetic.matrices().carbon_g_per_token(261.0)
    by_factors, direct = [], []
    for seed in range(8):
        m = synthetic.matrices(0.45, seed)
        hidden = ~m.carbon_observed
        f = complete_carbon_factors(m, 7.0, method="als")
        est = f.embodied_g_per_token() + 261.0 * f.energy_kwh_per_token()
        plain = complete(m.carbon_g_per_token(261.0), "als", transform="log")
        by_factors.append(np.sqrt(np.mean((est[hidden] / truth[hidden] - 1) ** 2)))
        direct.append(np.sqrt(np.mean((plain[hidden] / truth[hidden] - 1) ** 2)))
    assert np.mean(by_factors) < 0.7 * np.mean(direct)
    assert np.mean(by_factors) < 0.2


def test_served_token_rate_never_falls_with_qps() -> None:
    """A time factor measured at 1 QPS caps the filled ones above it at QPS / 1 times itself
    (a configuration serves at least as many tokens per second when offered more), even where
    the other columns (slower than linear, thrashing) would make CF extrapolate higher."""
    cells = [synthetic.cell(q, j) for q in synthetic.QPS for j in range(4)]
    for k, c in enumerate(cells):  # from 1 QPS on, every configuration is overloaded
        slow = 2.0 * c["row"].qps if j_of(k) == 0 else (2.0 * c["row"].qps) ** 1.5
        if c["row"].qps >= 1.0:
            cells[k] = {**c, "seconds": [s * slow for s in c["seconds"]]}
    keep = [c for k, c in enumerate(cells) if not (j_of(k) == 0 and c["row"].qps > 1.0)]
    m = ProfileMatrices.from_cells(keep, configs=[c[0] for c in synthetic.CONFIGS])
    at_1 = synthetic.QPS.index(1.0)
    qps = np.array(synthetic.QPS)
    cap = 2.0 * qps  # the measured 2.0 at 1 QPS, scaled by QPS
    free = complete_carbon_factors(m, method="als", monotone=False).time_factor[:, 0]
    assert np.any(free[at_1 + 1 :] > cap[at_1 + 1 :] * 1.2)  # the extrapolation overshoots
    f = complete_carbon_factors(m, method="als")
    assert np.all(f.time_factor[at_1:, 0] <= cap[at_1:] * (1 + 1e-9))
    assert np.all(np.diff(f.time_factor[:, 0]) >= -1e-9)
    rate = f.offered_tokens_per_s / f.time_factor[:, 0]
    assert np.all(np.diff(rate) >= -1e-9 * rate[:-1])


def j_of(k: int) -> int:
    return k % len(synthetic.CONFIGS)


def test_stable_time_factor_is_the_median_over_cells_meeting_the_slo() -> None:
    m = synthetic.matrices()
    f = carbon_factors(m)
    tf = np.where(m.carbon_observed, 1.0, np.nan)
    tf[:, 0] = np.linspace(1.0, 2.0, tf.shape[0])  # Standalone: a spread of time factors
    f = f.with_time_factor(tf)
    att = np.zeros(m.shape)
    att[:3, 0] = 0.95  # Standalone meets the SLO at its three lowest QPS levels
    att[0, 1] = 0.92
    stable = stable_time_factor(f, att, 0.9)
    assert stable is not None
    assert stable[0] == pytest.approx(tf[1, 0])  # median of its three cells
    assert stable[1] == pytest.approx(1.0)
    overall = np.exp(np.median(np.log([tf[0, 0], tf[1, 0], tf[2, 0], 1.0])))
    assert stable[2] == pytest.approx(overall) and stable[3] == pytest.approx(overall)
    assert stable_time_factor(f, np.zeros(m.shape), 0.9) is None


def test_served_tokens_without_allocated_time_is_a_profile_error() -> None:
    cells = [synthetic.cell(q, j) for q in synthetic.QPS for j in range(4)]
    cells[5] = {**cells[5], "seconds": [0.0] * len(cells[5]["seconds"])}
    m = ProfileMatrices.from_cells(cells, configs=[c[0] for c in synthetic.CONFIGS])
    with pytest.raises(ProfileError, match=r"row 1 .* no allocated GPU time"):
        carbon_factors(m)
