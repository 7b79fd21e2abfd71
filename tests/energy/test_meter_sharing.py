"""CarbonMeter under concurrency (overlapping windows share the devices) and its input checks."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenllm.carbon import CarbonIntensityTrace, get_gpu
from greenllm.energy import (
    CarbonMeter,
    ModelledSampler,
    NullSampler,
    NVMLSampler,
    RAPLSampler,
    ReplaySampler,
    default_sampler,
    energy_j,
    power_trace,
    power_w,
    trapezoid_j,
    window_series,
)
from greenllm.errors import ConfigError, GreenLLMError

YEAR_S = 365.25 * 86400.0
HOUR = 472_222 * 3600.0  # an epoch hour


class ManualClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of closed intervals as disjoint intervals (zero-length ones dropped)."""
    out: list[list[float]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def grid_in(t: np.ndarray, a: float, b: float) -> np.ndarray:
    """[a, b] and every breakpoint of ``t`` inside it, sorted."""
    return np.unique(np.concatenate(([a, b], t[(a < t) & (b > t)])))


def curve_energy_j(t: np.ndarray, p: np.ndarray, a: float, b: float) -> float:
    """Exact integral of the piecewise-linear curve (held at its ends) over [a, b]: trapezoids
    on a grid holding every breakpoint inside, written out term by term."""
    grid = grid_in(t, a, b)
    q = np.interp(grid, t, p)
    return math.fsum((q[i] + q[i + 1]) / 2 * (grid[i + 1] - grid[i]) for i in range(grid.size - 1))


@st.composite
def window_sets(draw: st.DrawFn) -> list[tuple[float, float, int]]:
    """1-8 windows: (start_s, end_s, tokens) on [0, 100] s, overlapping at random."""
    n = draw(st.integers(1, 8))
    out = []
    for _ in range(n):
        a = draw(st.floats(0.0, 90.0, allow_nan=False))
        length = draw(st.one_of(st.just(0.0), st.floats(0.01, 60.0, allow_nan=False)))
        out.append((a, a + length, draw(st.integers(0, 10_000))))
    return out


def drive(
    meter: CarbonMeter, clock: ManualClock, windows: list[tuple[float, float, int]]
) -> list:
    """Open and close the windows in time order on the manual clock; their reports in order."""
    events = []
    for i, (a, b, _) in enumerate(windows):
        events += [(a, 0, i), (b, 1, i)]  # at equal times a window opens before one closes
    open_windows, reports = {}, {}
    for t, kind, i in sorted(events):
        clock.t = t
        if kind == 0:
            open_windows[i] = meter.begin(f"w{i}", tokens=windows[i][2])
        else:
            reports[i] = meter.end(open_windows.pop(i))
    return [reports[i] for i in range(len(windows))]


CURVE_T = np.arange(0.0, 160.0, 10.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    windows=window_sets(),
    powers=st.lists(st.floats(0.0, 700.0), min_size=CURVE_T.size, max_size=CURVE_T.size),
    use_trace=st.booleans(),
)
def test_overlapping_windows_add_up_to_the_union(
    windows: list[tuple[float, float, int]], powers: list[float], use_trace: bool
) -> None:
    """Sum over any set of windows = the devices' energy, carbon and time over their union."""
    clock = ManualClock(HOUR + 3540.0)
    t0 = clock.t
    p = np.asarray(powers)
    p2 = p[::-1].copy()
    sampler = ModelledSampler({"a": (CURVE_T, p), "b": (CURVE_T, p2)}, clock=clock, period_s=3600)
    sampler.start()  # curve time 0 = t0
    trace = CarbonIntensityTrace([HOUR, HOUR + 3600.0, HOUR + 7200.0], [100.0, 400.0, 50.0])
    kw = {"trace": trace} if use_trace else {"intensity_g_per_kwh": 300.0}
    meter = CarbonMeter(["A100", "T4"], sampler=sampler, pue=1.5, **kw)  # type: ignore[arg-type]
    reports = drive(meter, clock, [(t0 + a, t0 + b, n) for a, b, n in windows])
    sampler.stop()
    spans = union([(a, b) for a, b, _ in windows])
    want_j = math.fsum(
        curve_energy_j(CURVE_T, q, a, b) for q in (p, p2) for a, b in spans
    )
    got_j = math.fsum(r.energy_j for r in reports)
    assert got_j == pytest.approx(1.5 * want_j, rel=0.01, abs=1e-6)
    if use_trace:
        want_g = 1.5 * math.fsum(
            trace.operational_carbon_from_power_g(g, np.interp(g - t0, CURVE_T, q))
            for q in (p, p2)
            for a, b in spans
            for g in [np.unique(t0 + grid_in(CURVE_T, a, b))]
            if g.size >= 2
        )
    else:
        want_g = 1.5 * want_j / 3.6e6 * 300.0
    got_g = math.fsum(r.operational_g for r in reports)
    assert got_g == pytest.approx(want_g, rel=0.01, abs=1e-9)
    union_s = math.fsum(b - a for a, b in spans)
    assert math.fsum(r.shared_s for r in reports) == pytest.approx(union_s, rel=0.01, abs=1e-9)
    c_e = [get_gpu(g).embodied_kg * 1000.0 / (7.0 * YEAR_S) for g in ("A100", "T4")]
    want_embodied = union_s * math.fsum(c_e)
    got_embodied = math.fsum(r.embodied_g for r in reports)
    assert got_embodied == pytest.approx(want_embodied, rel=0.01, abs=1e-12)
    for r, (a, b, n) in zip(reports, windows, strict=True):
        assert r.tokens == n and r.duration_s == pytest.approx(b - a, abs=1e-6)
        assert 0.0 <= r.shared_s <= r.duration_s + 1e-9
        d = r.to_dict()
        assert all(math.isfinite(v) for v in d.values() if isinstance(v, float))
        if n > 0:
            assert r.total_per_token_g == pytest.approx(r.total_g / n)


def test_a_window_alone_gets_its_whole_measurement() -> None:
    clock = ManualClock(50.0)
    meter = CarbonMeter("A100", sampler=ModelledSampler(100.0, clock=clock, period_s=3600))
    with meter.window("a") as wa:
        clock.t = 52.0
    with meter.window("b") as wb:  # after "a": not overlapping
        clock.t = 53.0
    assert wa.report is not None and wb.report is not None
    assert wa.report.energy_j == pytest.approx(200.0) and wb.report.energy_j == pytest.approx(100.0)
    assert wa.report.shared_s == pytest.approx(2.0)
    # nested: the outer window gets all of its time alone and half of the overlap
    outer = meter.begin("outer")
    clock.t = 54.0
    with meter.window("inner") as wi:
        clock.t = 56.0
    clock.t = 57.0
    ro = meter.end(outer)
    assert wi.report is not None and wi.report.energy_j == pytest.approx(100.0)
    assert ro.energy_j == pytest.approx(300.0) and ro.shared_s == pytest.approx(3.0)
    assert ro.measurement.total_energy_j == pytest.approx(400.0)  # the device's own draw
    meter.close()


def test_three_concurrent_tracked_calls_share_the_energy_drawn() -> None:
    """The issue's example: three overlapping @meter.track calls under a 360 W model."""
    sampler = ModelledSampler(360.0, period_s=0.05)
    meter = CarbonMeter("A100", sampler=sampler, region="CISO")
    barrier = threading.Barrier(3)

    @meter.track("generate", tokens=10)
    def generate(seconds: float) -> None:
        time.sleep(seconds)

    def call(seconds: float) -> None:
        barrier.wait()
        generate(seconds)

    threads = [threading.Thread(target=call, args=(s,)) for s in (0.15, 0.2, 0.25)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    meter.close()
    reports = meter.reports
    assert len(reports) == 3
    spans = union([(r.start_s, r.end_s) for r in reports])
    drawn_j = 360.0 * math.fsum(b - a for a, b in spans)
    assert math.fsum(r.energy_j for r in reports) == pytest.approx(drawn_j, rel=1e-6)
    drawn_g = drawn_j / 3.6e6 * 261.0
    assert math.fsum(r.operational_g for r in reports) == pytest.approx(drawn_g, rel=1e-6)
    # each call alone would have been charged its whole duration: the old over-count
    assert math.fsum(360.0 * r.duration_s for r in reports) > 1.5 * drawn_j


def test_windows_sharing_a_replayed_trace() -> None:
    clock = ManualClock(0.0)
    sampler = ReplaySampler(([0.0, 10.0], [100.0, 300.0]), clock=clock, period_s=3600).start()
    meter = CarbonMeter("T4", sampler=sampler, intensity_g_per_kwh=100.0)
    drive_windows = [(1.0, 6.0, 5), (3.0, 9.0, 7), (4.0, 5.0, 0)]
    reports = drive(meter, clock, drive_windows)
    sampler.stop()
    want = curve_energy_j(np.array([0.0, 10.0]), np.array([100.0, 300.0]), 1.0, 9.0)
    assert math.fsum(r.energy_j for r in reports) == pytest.approx(want, rel=1e-9)
    # [4, 5] has three windows open: the short one gets a third of it
    assert reports[2].energy_j == pytest.approx(curve_energy_j(
        np.array([0.0, 10.0]), np.array([100.0, 300.0]), 4.0, 5.0) / 3, rel=1e-9)  # fmt: skip


# ---- input checks --------------------------------------------------------------------------------
BAD_NUMBERS = [math.nan, math.inf, -math.inf, -1, -1.0, 1e300, 10**400, "5", None, True, [1.0], {}]


def _meter() -> CarbonMeter:
    return CarbonMeter("A100", sampler=NullSampler())


def _window_tokens(bad: object) -> None:
    _meter().begin("w", tokens=bad)  # type: ignore[arg-type]


def _add_tokens(bad: object) -> None:
    meter = _meter()
    meter.begin("w").add_tokens(bad)  # type: ignore[arg-type]


CALLS = {
    "intensity_g_per_kwh": lambda b: CarbonMeter("A100", intensity_g_per_kwh=b),
    "pue": lambda b: CarbonMeter("A100", pue=b),
    "lifetimes_years": lambda b: CarbonMeter("A100", lifetimes_years=b),
    "lifetimes_years['T4']": lambda b: CarbonMeter("T4", lifetimes_years={"T4": b}),
    "power": lambda b: ModelledSampler(b),
    "period_s": lambda b: ModelledSampler(10.0, period_s=b),
    "speed": lambda b: ReplaySampler(([0.0, 1.0], [1.0, 1.0]), speed=b),
    "NVMLSampler period_s": lambda b: NVMLSampler(period_s=b),
    "RAPLSampler period_s": lambda b: RAPLSampler(period_s=b),
    "default_sampler period_s": lambda b: default_sampler(b),
    "tokens": _window_tokens,
    "add_tokens": _add_tokens,
    "account tokens": lambda b: _meter().account("x", _measurement(), tokens=b),
    "utilisation": lambda b: power_w("A100", b),
    "t1_s": lambda b: energy_j("A100", [0.0], [1.0], 0.5, 0.0, b),
    "power_trace period_s": lambda b: power_trace("A100", [0.0], [1.0], 0.5, 0.0, 2.0, b),
    "trapezoid power_w": lambda b: trapezoid_j([0.0, 1.0], [b, 1.0]),
    "window_series t0_s": lambda b: window_series([0.0, 1.0], [1.0, 1.0], b, 1.0),
    "gpus": lambda b: CarbonMeter(b),
}
def _measurement():  # one zero-length window of a NullSampler
    s = NullSampler()
    s.begin_window("w")
    m = s.end_window("w")
    s.stop()
    return m


@settings(max_examples=200, deadline=None)
@given(arg=st.sampled_from(sorted(CALLS)), bad=st.sampled_from(BAD_NUMBERS))
def test_bad_numbers_are_config_errors(arg: str, bad: object) -> None:
    if arg in ("tokens", "account tokens", "intensity_g_per_kwh") and bad is None:
        return  # None means "not counted" / "not given" (the default) there
    if arg == "window_series t0_s" and bad in (-1, -1.0):
        return  # a time may be negative
    with pytest.raises(ConfigError) as info:
        CALLS[arg](bad)
    assert isinstance(info.value, GreenLLMError)
    if arg in ("intensity_g_per_kwh", "pue", "lifetimes_years", "period_s", "speed"):
        assert arg in str(info.value) and "]" in str(info.value)  # names it and its range


def test_meter_checks_arguments_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"lifetimes_years = nan.*\(0, 100\]"):
        CarbonMeter("A100", lifetimes_years=math.nan)
    with pytest.raises(ConfigError, match=r"lifetimes_years\['T4'\]"):
        CarbonMeter("T4", lifetimes_years={"T4": -3})
    with pytest.raises(ConfigError, match=r"gpus = \[\]"):
        CarbonMeter([])
    with pytest.raises(ConfigError, match="gpus"):
        CarbonMeter(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="pue"):
        CarbonMeter("A100", pue=11)
    with pytest.raises(ConfigError, match="sampler"):
        CarbonMeter("A100", sampler="nvml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="devices or sampler"):
        CarbonMeter("A100", devices=[0], sampler=NullSampler())
    with pytest.raises(ConfigError, match="one device per GPU"):
        CarbonMeter("A100", devices=[0, 1])
    with pytest.raises(ConfigError, match="region"):
        CarbonMeter("A100", region=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tokens"):
        _meter().begin("w", tokens=2**60)


def test_bad_power_readings_never_reach_a_report() -> None:
    clock = ManualClock(0.0)
    bad: dict[float, object] = {1.0: math.nan, 2.0: math.inf, 3.0: 1e300, 4.0: -5.0, 4.5: "5"}
    sampler = ModelledSampler(lambda e: bad.get(e, 100.0), clock=clock, period_s=3600)
    meter = CarbonMeter("A100", sampler=sampler, intensity_g_per_kwh=200.0)
    with meter.window("w") as w:
        for t in (1.0, 2.0, 3.0, 4.0, 4.5, 5.0, 6.0):
            clock.t = t
            sampler.sample_now()
        clock.t = 7.0
    meter.close()
    r = w.report
    assert r is not None and "read_errors:model0" in r.flags
    d = r.to_dict()
    assert all(math.isfinite(v) for v in d.values() if isinstance(v, float))
    assert r.energy_j == pytest.approx(700.0)  # 100 W throughout, the bad readings skipped
