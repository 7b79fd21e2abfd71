"""Grid carbon intensity: annual figures, shipped traces, and the step-trace maths."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from importlib import resources

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.carbon import (
    TRACE_REGIONS,
    CarbonIntensityTrace,
    carbon_intensity,
    list_regions,
    region_info,
)
from greenllm.errors import ConfigError

DATA = resources.files("greenllm.carbon") / "data"
YEAR_2022_S = datetime(2022, 1, 1, tzinfo=UTC).timestamp()
YEAR_2023_S = datetime(2023, 1, 1, tzinfo=UTC).timestamp()


def _read_trace_rows(code: str) -> tuple[list[float], list[float]]:
    with (DATA / f"{code}-2022-hourly.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    times = [datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows]
    return times, [float(r["g_per_kwh"]) for r in rows]


# ---- strategies other tests may reuse ---------------------------------------------------------
@st.composite
def step_traces(draw: st.DrawFn, max_samples: int = 12) -> CarbonIntensityTrace:
    """A random step trace with irregular spacing and g in [0, 1000]."""
    n = draw(st.integers(1, max_samples))
    gaps = draw(st.lists(st.floats(300.0, 7200.0), min_size=n, max_size=n))
    values = draw(st.lists(st.floats(0.0, 1000.0), min_size=n, max_size=n))
    t0 = draw(st.floats(-1e6, 1e6))
    times = t0 + np.cumsum([0.0, *gaps[:-1]])
    return CarbonIntensityTrace(times, values, periodic=draw(st.booleans()))


def _pieces(trace: CarbonIntensityTrace, a: float, b: float) -> list[tuple[float, float, float]]:
    """The trace's constant pieces meeting [a, b], by a plain loop (independent of the code)."""
    t, g, end = list(trace.timestamps_s), list(trace.g_per_kwh), trace.end_s
    base = [(t[i], t[i + 1] if i + 1 < len(t) else end, g[i]) for i in range(len(t))]
    if not trace.periodic:
        base = [(-math.inf, t[0], g[0]), *base, (end, math.inf, g[-1])]
        periods = [0]
    else:
        span = end - t[0]
        periods = list(range(math.floor((a - t[0]) / span), math.floor((b - t[0]) / span) + 1))
    out = []
    for k in periods:
        shift = k * (end - t[0]) if trace.periodic else 0.0
        for s, e, v in base:
            lo, hi = max(s + shift, a), min(e + shift, b)
            if hi > lo:
                out.append((lo, hi, v))
    return out


def _carbon_by_hand(trace: CarbonIntensityTrace, times: list[float], power: list[float]) -> float:
    """Sum over (intensity piece x power interval) of g * trapezoid(power), in grams."""
    total = 0.0
    for lo, hi, v in _pieces(trace, times[0], times[-1]):
        for j in range(len(times) - 1):
            a, b = max(lo, times[j]), min(hi, times[j + 1])
            if b > a:
                slope = (power[j + 1] - power[j]) / (times[j + 1] - times[j])
                pa, pb = power[j] + slope * (a - times[j]), power[j] + slope * (b - times[j])
                total += v * (pa + pb) / 2 * (b - a)
    return total / 3.6e6


# ---- annual figures ---------------------------------------------------------------------------
def test_paper_regions_are_exact() -> None:
    assert carbon_intensity("NCSW") == 17.0
    assert carbon_intensity("CISO") == 261.0
    assert carbon_intensity("MISO") == 501.0
    assert region_info("ciso").kind == "paper"


def test_lookup_is_case_insensitive_and_accepts_aliases_and_names() -> None:
    assert carbon_intensity(" fra ") == carbon_intensity("FRA")
    assert carbon_intensity("France") == carbon_intensity("FRA")
    assert carbon_intensity("caiso") == 261.0
    assert carbon_intensity("ercot") == carbon_intensity("ERCO")


@pytest.mark.parametrize("code", ["ERCO", "PJM", "NYIS", "BPAT"])
def test_grid_annual_mean_is_time_weighted_trace_mean(code: str) -> None:
    times, values = _read_trace_rows(code)
    ends = [*times[1:], times[-1] + 3600.0]  # missing hours hold the previous value
    weighted = sum(v * (e - t) for t, e, v in zip(times, ends, values, strict=True)) / (
        ends[-1] - times[0]
    )
    assert carbon_intensity(code) == pytest.approx(weighted, rel=1e-12)
    assert region_info(code).kind == "grid"


def test_country_values_match_codecarbon_source() -> None:
    # codecarbon 3.3.2 global_energy_mix.json (OWID carbon_intensity_elec, latest year).
    known = {"FRA": (56.039, 2023), "USA": (369.473, 2023), "SWE": (40.695, 2023)}
    known |= {"IND": (713.441, 2023), "ISL": (27.68, 2022), "ABW": (561.224, 2022)}
    for code, (value, year) in known.items():
        info = region_info(code)
        assert (info.g_per_kwh, info.year, info.kind) == (value, year, "country")
    countries = list_regions("country")
    assert len(countries) == 213
    assert all(len(c) == 3 and c.isalpha() and c.isupper() for c in countries)
    assert all(0.0 <= v < 1400.0 for v in countries.values())


def test_list_regions_kinds_and_sorting() -> None:
    regions = list_regions()
    assert list(regions) == sorted(regions)
    assert list_regions("paper") == {"CISO": 261.0, "MISO": 501.0, "NCSW": 17.0}
    assert set(list_regions("grid")) == {"BPAT", "ERCO", "NYIS", "PJM"}
    assert len(regions) == 213 + 3 + 4
    assert list_regions("grid")["BPAT"] < list_regions("grid")["PJM"]
    with pytest.raises(ConfigError, match="kind"):
        list_regions("planet")  # type: ignore[arg-type]


def test_unknown_region_suggests_matches_and_how_to_list() -> None:
    with pytest.raises(ConfigError, match=r"CISO.*list_regions\(\)") as err:
        carbon_intensity("CISOO")
    assert "'CISOO'" in str(err.value)
    with pytest.raises(ConfigError, match="FRA"):
        carbon_intensity("Frnace")
    with pytest.raises(ConfigError):
        carbon_intensity("")


# ---- shipped traces ---------------------------------------------------------------------------
@pytest.mark.parametrize("code", sorted(TRACE_REGIONS))
def test_from_region_loads_2022_hourly(code: str) -> None:
    trace = CarbonIntensityTrace.from_region(code)
    times, values = _read_trace_rows(code)
    assert 8700 <= len(trace) <= 8760 and len(trace) == len(times)
    assert trace.start_s == YEAR_2022_S and trace.end_s == YEAR_2023_S
    assert np.all(np.diff(trace.timestamps_s) % 3600 == 0)
    assert np.array_equal(trace.g_per_kwh, values)
    assert 10.0 < trace.g_per_kwh.min() < trace.g_per_kwh.max() < 700.0


def test_ciso_trace_numbers() -> None:
    trace = CarbonIntensityTrace.from_region("CISO")
    assert len(trace) == 8757
    assert trace.g_per_kwh.min() == 74.1 and trace.g_per_kwh.max() == 449.03
    one_am = datetime(2022, 1, 1, 1, 30, tzinfo=UTC).timestamp()
    assert trace.at(one_am) == 260.92  # the file's 01:00 row
    assert 250.0 < trace.mean(trace.start_s, trace.end_s) < 262.0  # close to the paper's 261
    # Solar: the cleanest hours of a California day are around local noon (UTC-8).
    assert 9 <= int(np.argmin(trace.daily_profile(utc_offset_h=-8))) <= 15


def test_gap_holds_previous_hour() -> None:
    times, values = _read_trace_rows("PJM")
    i = int(np.argmax(np.diff(times)))
    assert times[i + 1] - times[i] == 23 * 3600  # PJM misses 22 hours in a row
    trace = CarbonIntensityTrace.from_region("PJM")
    inside = np.linspace(times[i], times[i + 1] - 1.0, 50)
    assert np.all(trace.at(inside) == values[i])
    starts, hourly = trace.hourly()
    assert len(starts) == 8760 and np.all(np.diff(starts) == 3600)
    assert hourly[int((times[i] - YEAR_2022_S) // 3600) + 5] == values[i]


def test_periodic_region_trace_repeats_every_year() -> None:
    trace = CarbonIntensityTrace.from_region("ERCO")
    span = trace.end_s - trace.start_s
    t = np.linspace(trace.start_s, trace.end_s, 1000, endpoint=False)
    assert np.array_equal(trace.at(t + 3 * span), trace.at(t))
    annual = carbon_intensity("ERCO")
    assert trace.mean(trace.start_s + 2 * span, trace.end_s + 2 * span) == pytest.approx(annual)
    assert trace.mean(trace.start_s + 0.5 * span, trace.end_s + 0.5 * span) == pytest.approx(annual)


def test_from_region_rejects_regions_without_traces() -> None:
    with pytest.raises(ConfigError, match="constant"):
        CarbonIntensityTrace.from_region("FRA")
    with pytest.raises(ConfigError, match="CISO"):
        CarbonIntensityTrace.from_region("XYZ")


# ---- trace maths ------------------------------------------------------------------------------
@given(g=st.floats(0.0, 2000.0), a=st.floats(-1e9, 1e9), width=st.floats(0.0, 1e8))
def test_constant_trace_mean_is_the_constant(g: float, a: float, width: float) -> None:
    trace = CarbonIntensityTrace.constant(g)
    assert trace.mean(a, a + width) == pytest.approx(g, rel=1e-9, abs=1e-9)
    assert trace.operational_carbon_g(3.6e6, a, a + width) == pytest.approx(g, abs=1e-6)


def test_power_integral_against_step_trace_by_hand() -> None:
    trace = CarbonIntensityTrace([0.0, 3600.0], [100.0, 300.0])
    # Power rises linearly 0 -> 400 W over [1800, 5400] s, crossing the step at 3600 s:
    # [1800, 3600]: mean 100 W * 1800 s = 0.05 kWh at 100 g/kWh = 5 g
    # [3600, 5400]: mean 300 W * 1800 s = 0.15 kWh at 300 g/kWh = 45 g
    carbon = trace.operational_carbon_from_power_g([1800.0, 5400.0], [0.0, 400.0])
    assert carbon == pytest.approx(50.0, rel=1e-12)
    # Spreading the same 0.2 kWh uniformly (mean 200 g/kWh) gives 40 g instead.
    assert trace.operational_carbon_g(0.2 * 3.6e6, 1800.0, 5400.0) == pytest.approx(40.0)


@given(trace=step_traces(), a=st.floats(-2e4, 9e4), width=st.floats(0.5, 5e4))
def test_mean_matches_piecewise_sum(trace: CarbonIntensityTrace, a: float, width: float) -> None:
    a += trace.start_s
    by_hand = sum(v * (hi - lo) for lo, hi, v in _pieces(trace, a, a + width)) / width
    assert trace.mean(a, a + width) == pytest.approx(by_hand, rel=1e-9, abs=1e-7)


@given(
    trace=step_traces(),
    powers=st.lists(st.floats(0.0, 500.0), min_size=2, max_size=6),
    dt=st.floats(10.0, 20000.0),
    a=st.floats(-2e4, 6e4),
)
def test_power_integral_matches_hand_sum(
    trace: CarbonIntensityTrace, powers: list[float], dt: float, a: float
) -> None:
    times = list(trace.start_s + a + dt * np.arange(len(powers)))
    exact = trace.operational_carbon_from_power_g(times, powers)
    assert exact == pytest.approx(_carbon_by_hand(trace, times, powers), rel=1e-9, abs=1e-9)


@given(trace=step_traces(), p=st.floats(0.0, 1000.0), a=st.floats(-1e4, 5e4), w=st.floats(1, 4e4))
def test_constant_power_equals_uniform_energy(
    trace: CarbonIntensityTrace, p: float, a: float, w: float
) -> None:
    a += trace.start_s
    by_power = trace.operational_carbon_from_power_g([a, a + w], [p, p])
    by_energy = trace.operational_carbon_g(p * w, a, a + w)
    assert by_power == pytest.approx(by_energy, rel=1e-9, abs=1e-9)


@given(trace=step_traces(), a=st.floats(-1e4, 5e4), w=st.floats(1.0, 4e4))
def test_segments_tile_the_window(trace: CarbonIntensityTrace, a: float, w: float) -> None:
    a += trace.start_s
    starts, ends, g = trace.segments(a, a + w)
    assert starts[0] == a and ends[-1] == a + w and np.array_equal(starts[1:], ends[:-1])
    assert np.array_equal(g, trace.at((starts + ends) / 2))
    inner = (starts + 0.01 * (ends - starts), ends - 0.01 * (ends - starts))
    assert np.array_equal(trace.at(inner[0]), trace.at(inner[1]))  # constant on each piece
    total = float(np.sum(g * (ends - starts)))
    assert total == pytest.approx(trace.mean(a, a + w) * w, rel=1e-9, abs=1e-6)


def test_hourly_windows_are_means() -> None:
    trace = CarbonIntensityTrace([0.0, 1800.0, 5400.0], [100.0, 200.0, 400.0])
    starts, means = trace.hourly(0.0, 9000.0)
    assert np.array_equal(starts, [0.0, 3600.0, 7200.0])
    assert means == pytest.approx([150.0, 300.0, 400.0])  # last window is [7200, 9000)


# ---- CSV input and validation -----------------------------------------------------------------
def test_from_csv_iso_and_epoch(tmp_path) -> None:
    path = tmp_path / "grid.csv"
    path.write_text(
        "timestamp,g_per_kwh\n2024-06-01T00:00:00Z,120\n\n2024-06-01 01:00:00,80.5\n1717207200,60\n"
    )
    trace = CarbonIntensityTrace.from_csv(path)
    t0 = datetime(2024, 6, 1, tzinfo=UTC).timestamp()
    assert np.array_equal(trace.timestamps_s, [t0, t0 + 3600, t0 + 7200])
    assert trace.at(t0 + 5000) == 80.5 and trace.end_s == t0 + 3 * 3600


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("time,value\n0,1\n", "line 1"),
        ("timestamp,g_per_kwh\n0,1\nyesterday,2\n", "line 3"),
        ("timestamp,g_per_kwh\n0,1\n10,-5\n", "line 3"),
        ("timestamp,g_per_kwh\n0,1\n10,2\n10,3\n", "line 4.*sort"),
        ("timestamp,g_per_kwh\n0,nan\n", "line 2"),
        ("timestamp,g_per_kwh\n", "no data"),
        ("", "line 1"),
    ],
)
def test_from_csv_errors_name_the_line(tmp_path, body: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ConfigError, match=match):
        CarbonIntensityTrace.from_csv(path)


def test_bad_trace_inputs_raise_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        CarbonIntensityTrace.from_csv(tmp_path / "missing.csv")
    with pytest.raises(ConfigError):
        CarbonIntensityTrace([0.0, 0.0], [1.0, 2.0])
    with pytest.raises(ConfigError):
        CarbonIntensityTrace([0.0], [-1.0])
    with pytest.raises(ConfigError):
        CarbonIntensityTrace([], [])
    trace = CarbonIntensityTrace.constant(100.0)
    with pytest.raises(ConfigError):
        trace.mean(10.0, 0.0)
    with pytest.raises(ConfigError):
        trace.operational_carbon_from_power_g([0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ConfigError):
        trace.operational_carbon_from_power_g([0.0, 1.0], [1.0, math.nan])


def test_data_readme_and_licences_ship() -> None:
    names = {p.name for p in DATA.iterdir()}
    assert {"README.md", "LICENSE-dc-rl.txt", "LICENSE-codecarbon.txt"} <= names
    assert "countries-carbon-intensity.csv" in names
    json.dumps(list_regions())  # plain floats
