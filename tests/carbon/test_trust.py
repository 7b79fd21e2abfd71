"""Every number that enters the carbon API is checked where it enters: random finite in-range
inputs give finite results, and NaN, inf, out-of-range values and wrong types give
ConfigError (a GreenLLMError) naming the argument, never a NaN, a negative gram or a numpy error.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.carbon import (
    CarbonBreakdown,
    CarbonIntensityTrace,
    DeviceUsage,
    amortized_embodied_g,
    embodied_carbon_g,
    lifetime_for,
    list_gpus,
    operational_carbon_g,
    split_by_tokens,
    total_carbon_g,
    window_carbon,
)
from greenllm.errors import ConfigError, GreenLLMError
from greenllm.units import (
    MAX_EMBODIED_G,
    MAX_ENERGY_J,
    MAX_INTENSITY_G_PER_KWH,
    MAX_LIFETIME_YEARS,
    MAX_TIME_S,
    MIN_LIFETIME_YEARS,
)

BAD_NUMBERS = [float("nan"), float("inf"), -float("inf"), -5.0, -1e-320, 1e308, 10**400, "5", None,
               "", b"1", True, [1.0, float("nan")], {"a": 1}, object()]  # fmt: skip


def in_range(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


seconds = in_range(0.0, MAX_TIME_S)
energies = in_range(0.0, MAX_ENERGY_J)
intensities = in_range(0.0, MAX_INTENSITY_G_PER_KWH)
embodied = in_range(0.0, MAX_EMBODIED_G)
lifetimes = in_range(MIN_LIFETIME_YEARS, MAX_LIFETIME_YEARS)
gpus = st.sampled_from(list_gpus())


# Eq. 1-3 --------------------------------------------------------------------------------------
@given(seconds, energies, intensities, embodied, lifetimes, gpus)
def test_equations_are_finite_on_any_in_range_input(t, e, ci, c_e, life, gpu) -> None:
    for value in (
        amortized_embodied_g(t, c_e, life),
        embodied_carbon_g(t, gpu, life),
        operational_carbon_g(e, ci),
        total_carbon_g(t, e, gpu, life, ci),
    ):
        assert math.isfinite(value) and value >= 0


@given(st.lists(seconds, min_size=1, max_size=5), energies, intensities, lifetimes, gpus)
def test_arrays_are_finite(ts, e, ci, life, gpu) -> None:
    out = total_carbon_g(np.array(ts), e, gpu, life, ci)
    assert np.all(np.isfinite(out)) and np.all(out >= 0)


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize("position", range(4))
def test_equations_refuse_bad_numbers(bad: object, position: int) -> None:
    args: list[object] = [3600.0, 1e6, 7.0, 261.0]  # seconds, energy_j, lifetime, intensity
    args[position] = bad
    name = ["seconds", "energy_j", "lifetime_years", "intensity_g_per_kwh"][position]
    with pytest.raises(ConfigError, match=name):
        total_carbon_g(args[0], args[1], "A100", args[2], args[3])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0.0, 1e-320, 1e-101, 1e101])
def test_lifetime_out_of_range(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"lifetime_years = .*<= lifetime_years <="):
        embodied_carbon_g(3600.0, "A100", bad)
    with pytest.raises(ConfigError, match="lifetimes_years"):
        lifetime_for("A100", bad)
    with pytest.raises(ConfigError, match="lifetimes_years"):
        lifetime_for("A100", {"default": bad})


def test_tiny_inputs_stay_finite() -> None:
    assert embodied_carbon_g(1e-320, "A100", MIN_LIFETIME_YEARS) >= 0
    assert operational_carbon_g(1e-320, 1e-320) == 0.0
    assert math.isfinite(amortized_embodied_g(MAX_TIME_S, MAX_EMBODIED_G, MIN_LIFETIME_YEARS))


def test_mismatched_shapes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="do not broadcast"):
        total_carbon_g([1.0, 2.0], [1.0, 2.0, 3.0], "A100")
    with pytest.raises(ConfigError, match="do not broadcast"):
        operational_carbon_g([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="do not broadcast"):
        amortized_embodied_g([1.0, 2.0], [1.0, 2.0, 3.0], 7.0)
    with pytest.raises(ConfigError, match="do not broadcast"):
        total_carbon_g([1.0, 2.0], 5.0, "A100", 7.0, [1.0, 2.0, 3.0])


FLOAT_MAX_OK = (1e308,)  # a CarbonBreakdown sums windows: any finite gram count is valid
NONE_OK = (None,)  # tokens=None: no per-token figures


@pytest.mark.parametrize(
    ("call", "valid"),
    [
        (lambda b: window_carbon([DeviceUsage("A100", b, 1.0)], 261.0), ()),
        (lambda b: window_carbon([DeviceUsage("A100", 1.0, b)], 261.0), ()),
        (lambda b: window_carbon([DeviceUsage("A100", 1.0, 1.0, b)], 261.0), ()),
        (lambda b: window_carbon([DeviceUsage("A100", 1.0, 1.0)], b), ()),
        (lambda b: window_carbon([DeviceUsage("A100", 1.0, 1.0)], 261.0, pue=b), ()),
        (lambda b: window_carbon([DeviceUsage("A100", 1.0, 1.0)], 2.0, host_embodied_share=b), ()),
        (lambda b: window_carbon([DeviceUsage("A100", 1.0, 1.0)], 261.0, tokens=b), NONE_OK),
        (lambda b: CarbonBreakdown(b, 1.0, 1.0), FLOAT_MAX_OK),
        (lambda b: CarbonBreakdown(1.0, b, 1.0), FLOAT_MAX_OK),
        (lambda b: CarbonBreakdown(1.0, 1.0, b), FLOAT_MAX_OK),
        (lambda b: CarbonBreakdown(1.0, 1.0, 1.0, b), NONE_OK),
        (lambda b: split_by_tokens(CarbonBreakdown(1.0, 1.0, 1.0), [1, b]), ()),
    ],
)
@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_windows_refuse_bad_numbers(call, valid: tuple[object, ...], bad: object) -> None:
    if any(bad is v or (isinstance(bad, float) and bad == v) for v in valid):
        call(bad)
        return
    with pytest.raises(ConfigError):
        call(bad)


@settings(max_examples=50)
@given(st.lists(st.tuples(gpus, seconds, in_range(0.0, MAX_ENERGY_J / 100), lifetimes),
                min_size=1, max_size=4),
       intensities, in_range(1.0, 10.0), in_range(0.0, 100.0),
       st.lists(st.integers(0, 10**9), min_size=1, max_size=5))  # fmt: skip
def test_windows_are_finite(devices, ci, pue, share, tokens) -> None:
    window = window_carbon([DeviceUsage(*d) for d in devices], ci, pue=pue,
                           host_embodied_share=share)  # fmt: skip
    assert math.isfinite(window.total_g)
    if sum(tokens):
        for part in split_by_tokens(window, tokens):
            assert math.isfinite(part.total_g) and part.total_g >= 0


# Intensity traces ------------------------------------------------------------------------------
TRACES = [
    CarbonIntensityTrace([0.0, 3600.0, 7200.0], [100.0, 300.0, 50.0], name="flat"),
    CarbonIntensityTrace([0.0, 3600.0, 7200.0], [100.0, 300.0, 50.0], periodic=True, name="p"),
    CarbonIntensityTrace.from_region("CISO"),
]
times = in_range(-MAX_TIME_S, MAX_TIME_S)


@settings(max_examples=60)
@given(st.sampled_from(TRACES), times, times, energies)
def test_trace_queries_are_finite(trace, a, b, e) -> None:
    t0, t1 = min(a, b), max(a, b)
    assert math.isfinite(trace.at(t0))
    assert math.isfinite(trace.mean(t0, t1))
    g = trace.operational_carbon_g(e, t0, t1)
    assert math.isfinite(g) and g >= 0


@pytest.mark.parametrize("trace", TRACES, ids=lambda t: t.name)
@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_trace_queries_refuse_bad_times(trace: CarbonIntensityTrace, bad: object) -> None:
    if isinstance(bad, float) and abs(bad) < MAX_TIME_S:
        return  # -5.0 and -1e-320 are fine epoch times
    with pytest.raises(ConfigError, match="t_s"):
        trace.at(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="t0_s"):
        trace.mean(bad, 10.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="t1_s"):
        trace.operational_carbon_g(1.0, 0.0, bad)  # type: ignore[arg-type]
    if bad is not None:  # None: from the trace's start / to its end
        with pytest.raises(ConfigError):
            trace.segments(0.0, bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            trace.hourly(bad, 7200.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        trace.change_points(bad, 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_trace_operational_carbon_refuses_bad_energy(bad: object) -> None:
    with pytest.raises(ConfigError, match="energy_j"):
        TRACES[0].operational_carbon_g(bad, 0.0, 3600.0)  # type: ignore[arg-type]


def test_the_issue_examples() -> None:
    trace = TRACES[0]
    with pytest.raises(ConfigError, match=r"at: t_s = nan"):
        trace.at(float("nan"))
    with pytest.raises(ConfigError, match=r"energy_j = -5\.0"):
        trace.operational_carbon_g(-5, 0, 3600)
    with pytest.raises(ConfigError, match="t1_s"):
        trace.operational_carbon_g(5, 3600, 0)


def test_unbounded_queries_are_refused() -> None:
    periodic = TRACES[1]
    with pytest.raises(ConfigError, match="change points"):
        periodic.segments(-MAX_TIME_S, MAX_TIME_S)
    with pytest.raises(ConfigError, match="windows"):
        TRACES[0].hourly(0.0, MAX_TIME_S, 1.0)
    with pytest.raises(ConfigError, match="step_s"):
        TRACES[0].hourly(0.0, 7200.0, float("nan"))
    with pytest.raises(ConfigError, match="utc_offset_h"):
        TRACES[0].daily_profile(float("inf"))


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_trace_constructors_refuse_bad_numbers(bad: object) -> None:
    if bad == -5.0 or (isinstance(bad, float) and -1 < bad < 0):
        with pytest.raises(ConfigError):
            CarbonIntensityTrace.constant(bad)  # type: ignore[arg-type]
        return
    with pytest.raises(ConfigError):
        CarbonIntensityTrace.constant(bad)  # type: ignore[arg-type]
    if bad is not True:  # numpy reads [1.0, True] as [1.0, 1.0]
        with pytest.raises(ConfigError):
            CarbonIntensityTrace([0.0, 1.0], [1.0, bad])  # type: ignore[list-item]
    if bad is not True and not (isinstance(bad, float) and abs(bad) <= MAX_TIME_S):
        with pytest.raises(ConfigError):
            CarbonIntensityTrace([0.0, bad], [1.0, 2.0])  # type: ignore[list-item]


@settings(max_examples=30)
@given(st.lists(st.tuples(times, intensities), min_size=1, max_size=20,
                unique_by=lambda p: p[0]), st.booleans())  # fmt: skip
def test_any_valid_trace_answers_finitely(samples, periodic) -> None:
    samples.sort()
    trace = CarbonIntensityTrace([t for t, _ in samples], [g for _, g in samples],
                                 periodic=periodic)  # fmt: skip
    mid = samples[len(samples) // 2][0]
    assert math.isfinite(trace.at(mid))
    assert math.isfinite(trace.mean(samples[0][0], samples[-1][0]))


# Trace CSV files ------------------------------------------------------------------------------
BAD_FILES = {
    "invalid utf-8": (b"timestamp,g_per_kwh\n0,100\n3600,\xff\xfe\n", "line 3: not valid UTF-8"),
    "200k-character field": (
        b"timestamp,g_per_kwh\n0,100\n3600," + b"9" * 200_000 + b"\n",
        "line 3",
    ),
    "2k-character field": (b"timestamp,g_per_kwh\n0,1" + b"0" * 2000 + b"\n", "line 2"),
    "nan intensity": (b"timestamp,g_per_kwh\n0,nan\n", "line 2: g_per_kwh = nan"),
    "inf timestamp": (b"timestamp,g_per_kwh\ninf,100\n", "line 2: timestamp"),
    "huge timestamp": (b"timestamp,g_per_kwh\n1e300,100\n", "line 2: timestamp"),
    "negative intensity": (b"timestamp,g_per_kwh\n0,-5\n", "line 2: g_per_kwh = -5"),
    "huge intensity": (b"timestamp,g_per_kwh\n0,1e308\n", "line 2: g_per_kwh"),
    "bad iso": (b"timestamp,g_per_kwh\n2022-13-45,100\n", "line 2: cannot read"),
    "empty field": (b"timestamp,g_per_kwh\n,100\n", "line 2: cannot read"),
    "NUL byte": (b"timestamp,g_per_kwh\n0\x00,100\n", "line 2"),
    "unterminated quote": (b'timestamp,g_per_kwh\n"0,100\n', "csv"),
    "no header": (b"", "header"),
    "no rows": (b"timestamp,g_per_kwh\n", "no data rows"),
    "unsorted": (b"timestamp,g_per_kwh\n10,1\n5,1\n", "line 3"),
}


@pytest.mark.parametrize(("content", "message"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_csv_files_are_config_errors_naming_file_and_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "grid.csv"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"grid\.csv") as info:
        CarbonIntensityTrace.from_csv(path)
    assert message in str(info.value)


@pytest.mark.parametrize("bad", ["", None, 5, b"x.csv", "/nonexistent/dir/x.csv", "a\0b.csv"])
def test_bad_csv_paths_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError):
        CarbonIntensityTrace.from_csv(bad)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzzed_csv_files_are_config_errors_or_valid_traces(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_bytes(b"timestamp,g_per_kwh\n" + data)
        try:
            trace = CarbonIntensityTrace.from_csv(path)
        except ConfigError:
            return
        assert np.all(np.isfinite(trace.g_per_kwh)) and np.all(np.isfinite(trace.timestamps_s))


@pytest.mark.parametrize("bad", ["", None, 5, "XX-NOWHERE", "x" * 10_000])
def test_bad_region_names_are_greenllm_errors(bad: object) -> None:
    with pytest.raises(GreenLLMError):
        CarbonIntensityTrace.from_region(bad)  # type: ignore[arg-type]


# Fuzzing every public function ------------------------------------------------------------------
FUZZ_VALUES = [math.nan, math.inf, -math.inf, -5.0, 1e-320, 1e308, 10**400, "5", None, "",
               "x" * 200_000, [1, "a"], [[1], [1, 2]], {}, b"\xff", True, object(), -1,
               []]  # fmt: skip
FUZZ_DEFAULTS = {"gpu": "A100", "code": "CISO", "region": "CISO", "t0_s": 0.0, "t1_s": 10.0}


def _public_functions() -> list[tuple[str, object]]:
    import inspect

    import greenllm.carbon as carbon
    from greenllm.carbon import analysis

    trace = CarbonIntensityTrace.from_region("CISO")
    out: list[tuple[str, object]] = []
    for mod in (carbon, analysis):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                out.append((f"{mod.__name__}.{name}", obj))
    for name in ("at", "mean", "operational_carbon_g", "change_points", "segments", "hourly",
                 "operational_carbon_from_power_g", "daily_profile"):  # fmt: skip
        out.append((f"trace.{name}", getattr(trace, name)))
    for name in ("constant", "from_csv", "from_region"):
        out.append((f"CarbonIntensityTrace.{name}", getattr(CarbonIntensityTrace, name)))
    return out


@pytest.mark.parametrize(("label", "func"), _public_functions(), ids=lambda x: str(x)[:60])
def test_no_public_function_raises_a_foreign_error(label: str, func) -> None:
    """Each argument in turn gets every fuzz value, the others a plain default: the call
    succeeds or raises a GreenLLMError, never a numpy/Python error."""
    import inspect

    params = [p for p in inspect.signature(func).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
    base = {p.name: FUZZ_DEFAULTS.get(p.name, 1.0) for p in params
            if p.default is inspect.Parameter.empty}  # fmt: skip
    for p in params:
        for value in FUZZ_VALUES:
            try:
                func(**{**base, p.name: value})
            except GreenLLMError:
                pass
            except Exception as err:
                pytest.fail(f"{label}({p.name}={value!r:.40}) raised {type(err).__name__}: {err}")
