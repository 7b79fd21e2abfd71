"""The planner's inputs are GreenLLMErrors (ConfigError naming the argument and its range), and
what it is asked outside its profiles is said: loads outside the profiled QPS range, rows
without data, and the switching cost of the hourly planner estimated from the profiles."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from greenllm.carbon import CarbonIntensityTrace
from greenllm.errors import ConfigError, GreenLLMError, ProfileError
from greenllm.scheduler import Planner, ProfileMatrices
from greenllm.scheduler.planner import ENGINE_START_S, estimate_switch_cost
from tests.scheduler import synthetic

NAN, INF = float("nan"), float("inf")
BAD_NUMBERS = [NAN, INF, -INF, "0.9", None, [0.9], True, object()]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("slo_target", v, r"slo_target = .*must be a (finite )?number in \[0, 1\]")
     for v in [*BAD_NUMBERS, -0.1, 1.0001, 1e300, -1e300]]
    + [("margin_sigmas", v, r"margin_sigmas = .*in \[0, 100\]") for v in [*BAD_NUMBERS, -1, 1e9]]
    + [("intensity_g_per_kwh", v, r"intensity_g_per_kwh = .*in \[0, 10000\]")
       for v in [NAN, INF, "300", True, -1.0, 1e7]]
    + [("seed", v, r"seed = .*an integer in \[0, 4294967295\]")
       for v in [-1, 2**32, 2**64, 1.5, 0.0, "0", NAN, None, True]]
    + [("rank", v, r"rank = .*an integer in \[1, 256\] or None")
       for v in [0, -3, 10**6, 257, 2.0, NAN, INF, "2", True]]
    + [("lifetimes_years", v, r"lifetimes_years\[.*\] = .*\(0, 100\]")
       for v in [0, -7, NAN, INF, 1e6, "7", None, {"T4": NAN}, {"T4": "10"}, {"T4": -1}]]
    + [("method", v, r"method = .*must be one of") for v in ["svd", "", None, 3]]
    + [("priority", v, "priority = ") for v in ["fast", None, 1]]
    + [("monotone", v, "monotone = ") for v in ["yes", None, 2]]
    + [("default", v, "default = ") for v in [1.5, [0], True]]
    + [("region", v, "region = ") for v in [3, ["CISO"]]],
)  # fmt: skip
def test_bad_planner_arguments_are_config_errors(name: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Planner(**{name: value})
    assert isinstance(info.value, GreenLLMError)
    assert name in str(info.value)


@pytest.mark.parametrize("source", [None, 3, "profiles.sqlite", [1, 2], np.zeros((2, 2))])
def test_plan_of_something_that_is_not_profiles_is_a_config_error(source) -> None:
    with pytest.raises(ConfigError, match=r"source = .*ProfileMatrices or a ProfileStore") as info:
        Planner(intensity_g_per_kwh=200.0).plan(source)
    assert "\n" not in str(info.value)


def test_good_values_are_accepted_and_normalised() -> None:
    p = Planner(slo_target=np.float64(0.95), seed=np.int64(3), rank=2, margin_sigmas=1,
                lifetimes_years={"T4": 10, "default": np.float32(5)})  # fmt: skip
    assert p.slo_target == 0.95 and p.seed == 3 and p.rank == 2 and p.margin_sigmas == 1.0
    assert p.lifetimes_years == {"T4": 10.0, "default": 5.0}


def test_rows_without_a_served_token_are_refused_by_name() -> None:
    # rows whose profiled cells served no token have no carbon to complete from: refused
    cells = [synthetic.cell(q, c) for q in synthetic.QPS for c in range(4)]
    for c in cells:
        if c["row"].qps in (2.0, 4.0):
            c["tokens"] = 0.0
    bad = ProfileMatrices.from_cells(cells, configs=[c[0] for c in synthetic.CONFIGS])
    with pytest.raises(ProfileError, match=r"2 workload\(s\).*row 2 \(.*\).*row 4 \(.*\)"):
        Planner(intensity_g_per_kwh=200.0).plan(bad)


def test_load_outside_the_profiled_range_is_warned_and_recorded(caplog) -> None:
    m = synthetic.matrices()
    trace = CarbonIntensityTrace.from_region("CISO")
    p = Planner(region="CISO")
    inside = p.plan_hourly(m, trace, "sharegpt", qps_by_hour=2.0)
    assert not inside.load_outside_profiled and inside.load_warning is None
    assert inside.profiled_qps == (0.5, 8.0)
    with caplog.at_level(logging.WARNING, logger="greenllm.scheduler.planner"):
        above = p.plan_hourly(m, trace, "sharegpt", qps_by_hour=10.0)
    assert above.load_outside_profiled
    assert above.hours_above_profiled == len(trace) and above.hours_below_profiled == 0
    assert above.qps_over_profiled == pytest.approx(10.0 / 8.0)
    assert "above the highest profiled 8 QPS" in above.load_warning
    assert any("outside the profiled range" in r.message for r in caplog.records)
    qps = np.linspace(0.1, 6.0, 24)  # some hours below 0.5 QPS
    below = p.plan_hourly(m, trace, "sharegpt", qps_by_hour=qps)
    assert below.hours_below_profiled > 0 and below.hours_above_profiled == 0
    assert below.qps_under_profiled == pytest.approx(0.1 / 0.5)
    assert "below the lowest profiled 0.5 QPS" in below.load_warning


def test_switching_cost_defaults_to_an_engine_restart_from_the_profiles() -> None:
    m = synthetic.matrices()
    trace = CarbonIntensityTrace.from_region("CISO")
    p = Planner(region="CISO")
    hp = p.plan_hourly(m, trace, "sharegpt", qps_by_hour=np.linspace(0.5, 6, 24))
    kwh, g = estimate_switch_cost(m, p.lifetimes_years)
    # the costliest configuration of the synthetic set: A100 + T4 near full power for 60 s
    assert 0 < hp.switch_energy_kwh <= kwh
    assert kwh <= (400.0 + 70.0) * ENGINE_START_S / 3.6e6 + 1e-12
    assert 0 < hp.switch_embodied_g <= g
    assert hp.switch_cost_source.startswith("estimated")
    given = p.plan_hourly(m, trace, "sharegpt", qps_by_hour=1.0,
                          switch_energy_kwh=0.0, switch_embodied_g=0.0)  # fmt: skip
    assert given.switch_energy_kwh == 0.0 and given.switch_cost_source == "given"
    # a switch is never free by default: every switch saves more than it costs
    per_switch = hp.switch_energy_kwh * np.asarray(trace.g_per_kwh) + hp.switch_embodied_g
    assert (hp.switch_g[hp.switch_g > 0] >= per_switch.min() - 1e-12).all()
    assert hp.total_g <= hp.static_total_g + 1e-6


@pytest.mark.parametrize("value", [NAN, INF, -1.0, "1", True])
def test_bad_switching_cost_is_a_config_error(value) -> None:
    m = synthetic.matrices()
    trace = CarbonIntensityTrace.from_region("CISO")
    with pytest.raises(ConfigError, match="switch_energy_kwh = "):
        Planner(region="CISO").plan_hourly(m, trace, "sharegpt", 1.0, switch_energy_kwh=value)
