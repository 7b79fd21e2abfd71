"""Power model: bounds, monotonicity, energy by hand, NVML-like traces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.backends.sim.efficiency import MEMORY_POWER_FRACTION
from greenllm.backends.sim.roofline import step_cost
from greenllm.carbon import get_gpu, list_gpus
from greenllm.energy import NVML_PERIOD_S, PowerModel, energy_j, power_model, power_trace, power_w
from greenllm.errors import ConfigError

gpus_st = st.sampled_from(list_gpus())
unit_st = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def schedules(draw: st.DrawFn, max_intervals: int = 12) -> tuple[np.ndarray, ...]:
    """Non-overlapping busy intervals with utilisations inside a window ``[0, t1]``."""
    n = draw(st.integers(0, max_intervals))
    cuts = sorted(draw(st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=2 * n,
                                max_size=2 * n)))  # fmt: skip
    starts, ends = np.array(cuts[0::2]), np.array(cuts[1::2])
    util = np.array(draw(st.lists(unit_st, min_size=n, max_size=n)))
    return starts, ends, util


@settings(max_examples=200, deadline=None)
@given(gpus_st, unit_st, unit_st)
def test_power_between_idle_and_max_and_monotone(g: str, u1: float, u2: float) -> None:
    spec = get_gpu(g)
    lo, hi = sorted((u1, u2))
    p_lo, p_hi = power_w(g, lo), power_w(g, hi)
    assert spec.idle_power_w <= p_lo <= p_hi <= spec.max_power_w


@pytest.mark.parametrize("g", ["T4", "V100", "A100"])
def test_endpoints_are_table1_and_idle(g: str) -> None:
    spec = get_gpu(g)
    assert power_w(g, 0.0) == spec.idle_power_w
    assert power_w(g, 1.0) == spec.max_power_w  # Table 1 max power: 70, 300, 400 W


@pytest.mark.parametrize("u", [-0.1, 1.01, float("nan"), "0.5"])
def test_bad_utilisation(u: object) -> None:
    with pytest.raises(ConfigError, match="utilisation"):
        power_w("A100", u)  # type: ignore[arg-type]


def test_energy_of_known_schedule_by_hand() -> None:
    # A100: idle 52 W, max 400 W. Allocated 10 s; busy [1, 3] s at u = 1 and [5, 6] s at u = 0.5.
    # E = 52 x 10 + (400 - 52) x (2 x 1 + 1 x 0.5) = 520 + 870 = 1390 J
    assert energy_j("A100", [1, 5], [3, 6], [1.0, 0.5], 0.0, 10.0) == pytest.approx(1390.0)
    # all idle: T4 at 9 W for an hour
    assert energy_j("T4", [], [], [], 0.0, 3600.0) == pytest.approx(9 * 3600)


def test_intervals_are_clipped_to_the_window() -> None:
    # busy [−1, 1] at u = 1 in window [0, 2]: only 1 s counts
    assert energy_j("A100", [-1.0], [1.0], 1.0, 0.0, 2.0) == pytest.approx(52 * 2 + 348)


@pytest.mark.parametrize(
    ("starts", "ends", "t0", "t1"),
    [([1.0], [0.5], 0.0, 2.0), ([0.0, 1.0], [1.0], 0.0, 2.0), ([0.0], [1.0], 2.0, 1.0),
     ([float("nan")], [1.0], 0.0, 2.0), ([0.0, 0.5], [1.0, 1.5], 0.0, 2.0)],
)  # fmt: skip
def test_bad_intervals(starts: list[float], ends: list[float], t0: float, t1: float) -> None:
    with pytest.raises(ConfigError):
        energy_j("A100", starts, ends, 1.0, t0, t1)


def test_trace_by_hand() -> None:
    # A100, busy [0.1, 0.3] at u = 1 and [0.5, 0.55] at u = 0.5, window 1 s:
    # sample k is the mean power over ((k-1) x 0.2, k x 0.2]
    times, watts = power_trace("A100", [0.1, 0.5], [0.3, 0.55], [1.0, 0.5], 0.0, 1.0)
    np.testing.assert_allclose(times, [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(watts, [52 + 348 / 2, 52 + 348 / 2, 52 + 348 * 0.125, 52, 52])


@settings(max_examples=100, deadline=None)
@given(gpus_st, schedules())
def test_trace_energy_equals_integral(g: str, sched: tuple[np.ndarray, ...]) -> None:
    starts, ends, util = sched
    t1 = 10.0  # a whole number of 0.2 s periods
    times, watts = power_trace(g, starts, ends, util, 0.0, t1)
    assert len(times) == 50
    assert float(np.sum(watts) * NVML_PERIOD_S) == pytest.approx(
        energy_j(g, starts, ends, util, 0.0, t1), rel=1e-9, abs=1e-6
    )
    spec = get_gpu(g)
    assert np.all(watts >= spec.idle_power_w - 1e-9)
    assert np.all(watts <= spec.max_power_w + 1e-9)


def test_trace_of_unsorted_intervals() -> None:
    a = power_trace("V100", [2.0, 0.0], [3.0, 1.0], [0.2, 0.9], 0.0, 4.0)[1]
    b = power_trace("V100", [0.0, 2.0], [1.0, 3.0], [0.9, 0.2], 0.0, 4.0)[1]
    np.testing.assert_allclose(a, b)


def test_trace_shorter_than_a_period_is_empty() -> None:
    times, watts = power_trace("T4", [], [], [], 0.0, 0.1)
    assert times.size == 0 and watts.size == 0
    with pytest.raises(ConfigError, match="period_s"):
        power_trace("T4", [], [], [], 0.0, 1.0, period_s=0.0)


def test_prefill_near_tdp_decode_well_below() -> None:
    pm = power_model("A100")
    prefill = pm.power_w(step_cost("llama-2-7b", "A100", 2048).utilisation)
    decode = pm.power_w(step_cost("llama-2-7b", "A100", 1, 160).utilisation)
    assert prefill >= 0.9 * pm.max_w
    assert decode <= pm.idle_w + MEMORY_POWER_FRACTION * pm.dynamic_w
    assert decode > pm.idle_w


def test_vectorised_power_matches_scalar() -> None:
    pm = PowerModel("T4")
    u = np.linspace(-0.5, 1.5, 21)
    np.testing.assert_allclose(pm.power_w_array(u), [pm.power_w(float(x)) for x in u])
