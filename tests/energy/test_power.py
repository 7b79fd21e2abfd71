"""Power samplers: trapezoid integration, windows, replay, modelled, NVML (fake and real), RAPL."""

# ruff: noqa: N802  (the fake NVML keeps pynvml's function names)

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import greenllm.energy as power
from greenllm.energy import (
    CarbonMeter,
    ModelledSampler,
    NullSampler,
    NVMLSampler,
    RAPLSampler,
    ReplaySampler,
    cumulative_j,
    default_sampler,
    find_rapl_zones,
    rapl_available,
    read_power_csv,
    trapezoid_j,
    window_series,
    write_power_csv,
)
from greenllm.energy import default as default_mod
from greenllm.errors import BackendUnavailableError, ConfigError, ProfileError
from tests.extras import require

DATA = Path(__file__).parent / "data"
SIM_TRACE = DATA / "sim_dsd_a100_t4_sharegpt.csv"
HANDMADE = DATA / "handmade_two_devices.csv"


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def fsum_trapezoid(t: np.ndarray, p: np.ndarray) -> float:
    """The trapezoid rule written out term by term."""
    return math.fsum((p[i] + p[i + 1]) * 0.5 * (t[i + 1] - t[i]) for i in range(len(t) - 1))


# ---- strategies (reusable) ----------------------------------------------------------------------
def sample_times(min_size: int = 2, max_size: int = 30) -> st.SearchStrategy[np.ndarray]:
    """Strictly increasing sample times in [0, 100] s, at least 1 ms apart."""
    return st.lists(st.integers(0, 100_000), min_size=min_size, max_size=max_size, unique=True).map(
        lambda xs: np.array(sorted(xs), dtype=float) / 1000.0
    )


# ---- integration ---------------------------------------------------------------------------------
def test_trapezoid_hand_computed() -> None:
    # [0,1]: (10+20)/2 = 15 J; [1,3]: (20+0)/2*2 = 20 J; [3,4]: (0+40)/2 = 20 J
    assert trapezoid_j([0.0, 1.0, 3.0, 4.0], [10.0, 20.0, 0.0, 40.0]) == 55.0
    assert trapezoid_j([5.0], [100.0]) == 0.0


def test_window_between_two_samples_gets_its_share() -> None:
    # P(t) = 10 t between samples at 0 s and 10 s; int_2^4 10 t dt = 5 (16 - 4) = 60 J
    t, p = window_series([0.0, 10.0], [0.0, 100.0], 2.0, 4.0)
    assert t.tolist() == [2.0, 4.0] and p.tolist() == [20.0, 40.0]
    assert trapezoid_j(t, p) == pytest.approx(60.0, rel=1e-12)


def test_window_is_clipped_to_the_samples() -> None:
    t, p = window_series([1.0, 2.0], [50.0, 50.0], 0.0, 5.0)
    assert t.tolist() == [1.0, 2.0] and trapezoid_j(t, p) == 50.0
    assert window_series([1.0, 2.0], [5.0, 5.0], 3.0, 4.0)[0].size == 0


@given(
    times=sample_times(),
    a=st.floats(0, 500),
    b=st.floats(-5, 5),
    lo=st.floats(0, 1),
    hi=st.floats(0, 1),
)
def test_linear_power_is_integrated_exactly(
    times: np.ndarray, a: float, b: float, lo: float, hi: float
) -> None:
    power_w = a + 500.0 + b * times  # >= 0 on [0, 100] s
    t0 = times[0] + min(lo, hi) * (times[-1] - times[0])
    t1 = times[0] + max(lo, hi) * (times[-1] - times[0])
    expected = (a + 500.0) * (t1 - t0) + b / 2.0 * (t1**2 - t0**2)
    got = trapezoid_j(*window_series(times, power_w, t0, t1))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-7)


@given(times=sample_times(3), data=st.data())
def test_windows_add_up(times: np.ndarray, data: st.DataObject) -> None:
    power_w = np.array(
        data.draw(st.lists(st.floats(0, 700), min_size=len(times), max_size=len(times)))
    )
    a, b, c = sorted(data.draw(st.lists(st.floats(times[0], times[-1]), min_size=3, max_size=3)))
    whole = trapezoid_j(*window_series(times, power_w, a, c))
    parts = trapezoid_j(*window_series(times, power_w, a, b))
    parts += trapezoid_j(*window_series(times, power_w, b, c))
    assert parts == pytest.approx(whole, rel=1e-9, abs=1e-9)


@given(times=sample_times(2), data=st.data())
def test_cumulative_energy_differences_are_the_windows_energy(
    times: np.ndarray, data: st.DataObject
) -> None:
    """E(b) - E(a) from one cumulative pass equals integrating [a, b] alone, for instant power
    (trapezoid) and for interval means (p[i] over (t[i-1], t[i]]), edges outside clipped."""
    power_w = np.array(
        data.draw(st.lists(st.floats(0, 700), min_size=len(times), max_size=len(times)))
    )
    span = st.floats(times[0] - 5.0, times[-1] + 5.0)
    a, b = sorted(data.draw(st.lists(span, min_size=2, max_size=2)))
    e = cumulative_j(times, power_w, [a, b])
    want = trapezoid_j(*window_series(times, power_w, a, b))
    assert e[1] - e[0] == pytest.approx(want, rel=1e-9, abs=1e-7)
    lo, hi = np.maximum(times[:-1], a), np.minimum(times[1:], b)
    held = math.fsum((power_w[1:] * np.clip(hi - lo, 0.0, None)).tolist())
    e = cumulative_j(times, power_w, [a, b], kind="interval_mean")
    assert e[1] - e[0] == pytest.approx(held, rel=1e-9, abs=1e-7)


def test_cumulative_energy_hand_computed_and_checked() -> None:
    t, p = [0.0, 1.0, 3.0], [10.0, 20.0, 0.0]
    assert cumulative_j(t, p, [-1.0, 0.5, 1.0, 2.0, 9.0]).tolist() == [0.0, 6.25, 15.0, 30.0, 35.0]
    assert cumulative_j(t, p, [0.5, 2.0], kind="interval_mean").tolist() == [10.0, 20.0]
    assert cumulative_j([1.0], [5.0], [0.0, 2.0]).tolist() == [0.0, 0.0]
    with pytest.raises(ConfigError, match="kind"):
        cumulative_j(t, p, [1.0], kind="mean")
    with pytest.raises(ConfigError, match="power_w"):
        cumulative_j(t, [1.0, float("nan"), 2.0], [1.0])


# ---- replay --------------------------------------------------------------------------------------
def test_replay_reproduces_the_recorded_trace_exactly() -> None:
    series = read_power_csv(SIM_TRACE)
    assert set(series) == {"gpu0:A100", "gpu1:T4"}
    clock = ManualClock(0.0)
    sampler = ReplaySampler(SIM_TRACE, clock=clock, period_s=3600)
    with sampler:
        assert sampler.now_s() == 0.2  # the trace's first sample
        sampler.begin_window("all")
        clock.t = 10.0
        sampler.sample_now()
        clock.t = 30.0  # past the last sample (23.0 s)
        m = sampler.end_window("all")
    for dev, (t, p) in series.items():
        assert m.energy_j[dev] == fsum_trapezoid(t, p)
        assert m.peak_power_w[dev] == p.max()
        assert m.samples[dev][0].tolist() == t.tolist()
    assert m.n_samples == 115
    assert set(m.flags) == {"partial:gpu0:A100", "partial:gpu1:T4"}  # the trace ended at 23 s


def test_replay_handmade_trace_partial_coverage_and_speed() -> None:
    clock = ManualClock(100.0)
    sampler = ReplaySampler(HANDMADE, speed=2.0, clock=clock, period_s=3600)
    sampler.begin_window("w")  # starts the sampler: trace time 0.0
    clock.t = 102.0  # 2 s of clock at speed 2 -> trace time 4.0
    m = sampler.end_window("w")
    sampler.stop()
    assert (m.start_s, m.end_s) == (0.0, 4.0)
    assert m.energy_j["a"] == 55.0  # by hand, see data/README.md
    assert m.energy_j["b"] == 350.0  # 100 W from 0.5 s (first sample) to 4.0 s
    assert m.mean_power_w["b"] == 100.0
    assert m.flags == ("partial:b",)


def test_overlapping_windows_nested_and_interleaved() -> None:
    # a: 10 W at 0 s, 20 W at 1 s, 0 W at 3 s, 40 W at 4 s (linear between)
    clock = ManualClock(0.0)
    sampler = ReplaySampler(
        {"a": ([0.0, 1.0, 3.0, 4.0], [10.0, 20.0, 0.0, 40.0])}, clock=clock, period_s=3600
    )
    out = {}
    with sampler:
        sampler.begin_window("outer")  # [0, 4]
        clock.t = 0.5
        sampler.begin_window("inner")  # [0.5, 2]
        clock.t = 1.5
        sampler.begin_window("cross")  # [1.5, 3.5] interleaves with inner
        clock.t = 2.0
        out["inner"] = sampler.end_window("inner")
        clock.t = 3.5
        out["cross"] = sampler.end_window("cross")
        clock.t = 4.0
        out["outer"] = sampler.end_window("outer")
    # P(0.5) = 15, P(1.5) = 15, P(2) = 10, P(3.5) = 20
    assert out["outer"].energy_j["a"] == pytest.approx(55.0, rel=1e-12)
    assert out["inner"].energy_j["a"] == pytest.approx(
        (15 + 20) / 2 * 0.5 + (20 + 10) / 2, rel=1e-12
    )
    assert out["cross"].energy_j["a"] == pytest.approx(
        (15 + 0) / 2 * 1.5 + (0 + 20) / 2 * 0.5, rel=1e-12
    )
    assert out["inner"].duration_s == 1.5 and out["cross"].peak_power_w["a"] == 20.0


def test_window_names_are_checked() -> None:
    sampler = ModelledSampler(10.0, clock=ManualClock(), period_s=3600)
    with pytest.raises(ProfileError, match="already open"):
        sampler.begin_window("x")
        sampler.begin_window("x")
    with pytest.raises(ProfileError, match="no open window 'y'"):
        sampler.end_window("y")
    with pytest.raises(ProfileError, match="non-empty string"):
        sampler.begin_window("")
    sampler.stop()
    with pytest.raises(ProfileError, match="stopped while it was open"):
        sampler.end_window("x")


def test_start_stop_idempotent_and_restartable() -> None:
    clock = ManualClock(0.0)
    sampler = ModelledSampler(lambda s: 100.0 + 10.0 * s, clock=clock, period_s=3600)
    with pytest.raises(ProfileError, match="known once the sampler has started"):
        _ = sampler.devices
    assert sampler.start() is sampler.start()
    assert sampler.devices == ("model0",) and sampler.running
    sampler.stop()
    sampler.stop()
    assert not sampler.running
    with pytest.raises(ProfileError, match="stopped"):
        sampler.sample_now()
    clock.t = 10.0
    with sampler:  # restarts: model time 0 is now 10 s on the clock
        sampler.begin_window("w")
        clock.t = 13.0
        m = sampler.end_window("w")
    assert m.energy_j["model0"] == pytest.approx(100 * 3 + 5 * 9, rel=1e-12)


def test_background_thread_samples_and_integrates() -> None:
    with ModelledSampler(50.0, period_s=0.02) as sampler:
        sampler.begin_window("w")
        time.sleep(0.3)
        m = sampler.end_window("w")
    assert 5 <= m.n_samples <= 20  # ~15 at 20 ms plus the edges (fewer on a loaded machine)
    assert m.energy_j["model0"] == pytest.approx(50.0 * m.duration_s, rel=1e-9)
    assert 0.29 <= m.duration_s < 1.0
    assert sampler.thread_cpu_s > 0.0


def test_buffer_is_pruned_outside_open_windows() -> None:
    clock = ManualClock(0.0)
    sampler = ModelledSampler(lambda s: s, clock=clock, period_s=3600).start()
    for k in range(1, 500):
        clock.t = k * 0.01
        sampler.sample_now()
    assert len(sampler._t["model0"]) < 100  # nothing open: old samples dropped
    sampler.begin_window("w")
    t0 = clock.t
    for k in range(500, 1000):
        clock.t = k * 0.01
        sampler.sample_now()
    m = sampler.end_window("w")
    sampler.stop()
    assert m.n_samples == 501
    assert m.energy_j["model0"] == pytest.approx((clock.t**2 - t0**2) / 2, rel=1e-9)


def test_modelled_from_run_curves_hold_their_ends() -> None:
    run = SimpleNamespace(
        gpus=[
            SimpleNamespace(
                gpu="A100",
                power_times_s=np.array([1.0, 2.0]),
                power_w=np.array([100.0, 200.0]),
                energy_j=0.0,
                allocated_s=2.0,
            ),
            SimpleNamespace(
                gpu="T4",
                power_times_s=np.zeros(0),
                power_w=np.zeros(0),
                energy_j=60.0,
                allocated_s=2.0,
            ),
        ]
    )
    clock = ManualClock(1000.0)
    sampler = ModelledSampler.from_run(run, clock=clock, period_s=3600)
    sampler.begin_window("w")
    clock.t = 1003.0
    m = sampler.end_window("w")
    sampler.stop()
    assert sampler.devices == ("gpu0:A100", "gpu1:T4")
    assert m.energy_j["gpu0:A100"] == pytest.approx(100 + 150 + 200, rel=1e-12)
    assert m.energy_j["gpu1:T4"] == pytest.approx(30.0 * 3, rel=1e-12)


def test_null_sampler_measures_nothing() -> None:
    with NullSampler() as sampler:
        sampler.begin_window("w")
        m = sampler.end_window("w")
    assert sampler.devices == () and m.energy_j == {} and m.total_energy_j == 0.0
    assert not m.measured and m.flags == ("unmeasured",)


def test_csv_round_trip_and_errors(tmp_path: Path) -> None:
    series = {"x": (np.array([0.1, 0.30000000000000004]), np.array([1 / 3, 2.5]))}
    write_power_csv(tmp_path / "t.csv", series)
    back = read_power_csv(tmp_path / "t.csv")
    assert back["x"][0].tolist() == series["x"][0].tolist()
    assert back["x"][1].tolist() == series["x"][1].tolist()
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,device,power_w\n0,a,1\n0,a,2\n")
    with pytest.raises(ProfileError, match="line 3"):
        read_power_csv(bad)
    bad.write_text("t,d,p\n")
    with pytest.raises(ProfileError, match="header"):
        read_power_csv(bad)
    with pytest.raises(ProfileError, match="cannot read power trace"):
        ReplaySampler(tmp_path / "missing.csv").start()


@pytest.mark.parametrize("period", [0, -1, float("nan"), "0.2", True])
def test_bad_period_is_a_config_error(period: object) -> None:
    with pytest.raises(ConfigError, match="period_s"):
        NullSampler(period)  # type: ignore[arg-type]


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="strictly increasing"):
        ReplaySampler(([0.0, 0.0], [1.0, 2.0]))
    with pytest.raises(ConfigError, match="speed"):
        ReplaySampler(([0.0, 1.0], [1.0, 2.0]), speed=0)
    with pytest.raises(ConfigError, match="power"):
        ModelledSampler(-5.0)
    with pytest.raises(ConfigError, match="domains"):
        RAPLSampler(domains=("gpu",))


# ---- NVML through a fake pynvml ------------------------------------------------------------------
class FakeNVML:
    """Scripted GPUs behind pynvml's own function names; errors are pynvml's own classes."""

    def __init__(self, nv: object, gpus: list[dict], clock: ManualClock | None = None) -> None:
        self.nv, self.gpus, self.clock = nv, gpus, clock or power.epoch_clock
        self.inits = self.shutdowns = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in (
            "nvmlInit",
            "nvmlShutdown",
            "nvmlDeviceGetCount",
            "nvmlDeviceGetHandleByIndex",
            "nvmlDeviceGetHandleByUUID",
            "nvmlDeviceGetIndex",
            "nvmlDeviceGetName",
            "nvmlDeviceGetArchitecture",
            "nvmlDeviceGetPowerUsage",
            "nvmlDeviceGetFieldValues",
            "nvmlDeviceGetTotalEnergyConsumption",
        ):
            monkeypatch.setattr(self.nv, name, getattr(self, name))

    def _gpu(self, handle: int) -> dict:
        gpu = self.gpus[handle]
        if gpu.get("lost_at") is not None and self.clock() >= gpu["lost_at"]:
            raise self.nv.NVMLError(self.nv.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> int:
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for i, gpu in enumerate(self.gpus):
            if gpu.get("uuid", f"GPU-fake-{i}") == uuid:
                return i
        raise self.nv.NVMLError(self.nv.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetIndex(self, h: int) -> int:
        return h

    def nvmlDeviceGetName(self, h: int) -> str:
        return self.gpus[h]["name"]

    def nvmlDeviceGetArchitecture(self, h: int) -> int:
        return self.gpus[h]["arch"]

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        gpu = self._gpu(h)
        gpu["reads"] = gpu.get("reads", 0) + 1
        if "average_w" in gpu:  # a 1 s average that lags the true power
            return int(gpu["average_w"] * 1000)
        return round(gpu["power"](self.clock()) * 1000)

    def nvmlDeviceGetFieldValues(self, h: int, ids: list[int]) -> list[SimpleNamespace]:
        assert ids == [self.nv.NVML_FI_DEV_POWER_INSTANT]
        gpu = self._gpu(h)
        if not gpu.get("instant", False):
            return [
                SimpleNamespace(
                    nvmlReturn=self.nv.NVML_ERROR_NOT_SUPPORTED,
                    valueType=1,
                    value=SimpleNamespace(uiVal=0),
                )
            ]
        mw = round(gpu["power"](self.clock()) * 1000)
        return [
            SimpleNamespace(
                nvmlReturn=self.nv.NVML_SUCCESS, valueType=1, value=SimpleNamespace(uiVal=mw)
            )
        ]

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        gpu = self._gpu(h)
        if "energy" not in gpu:
            raise self.nv.NVMLError(self.nv.NVML_ERROR_NOT_SUPPORTED)
        return round(gpu["energy"](self.clock()) * 1000)  # mJ


@pytest.fixture
def nv() -> object:
    return require("pynvml")


def test_nvml_sampler_with_a_fake_driver(nv, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock(0.0)
    fake = FakeNVML(
        nv,
        [
            # Ampere GA102: the plain reading is a 1 s average (999 W, wrong on purpose)
            {
                "name": "NVIDIA A10G",
                "arch": nv.NVML_DEVICE_ARCH_AMPERE,
                "instant": True,
                "average_w": 999.0,
                "power": lambda t: 100 + 10 * t,
                "energy": lambda t: 100 * t + 5 * t * t,
            },
            # GA100: the plain reading is instantaneous; lost at t = 2 s
            {
                "name": "NVIDIA A100-SXM4-40GB",
                "arch": nv.NVML_DEVICE_ARCH_AMPERE,
                "instant": True,
                "power": lambda t: 200.0,
                "energy": lambda t: 200 * t,
                "lost_at": 2.0,
            },
            # Ada without the instant field: averaged reading, flagged
            {"name": "NVIDIA L4", "arch": nv.NVML_DEVICE_ARCH_ADA, "average_w": 70.0},
            # Volta: plain reading, no energy counter
            {
                "name": "Tesla V100-SXM2-16GB",
                "arch": nv.NVML_DEVICE_ARCH_VOLTA,
                "power": lambda t: 250.0,
            },
        ],
        clock,
    )
    fake.install(monkeypatch)
    sampler = NVMLSampler(period_s=3600, clock=clock)
    sampler.begin_window("w")
    assert sampler.devices == ("gpu0", "gpu1", "gpu2", "gpu3")
    assert sampler.power_source == {
        "gpu0": "instant",
        "gpu1": "average",
        "gpu2": "average",
        "gpu3": "average",
    }
    assert sampler.models["gpu1"] == "NVIDIA A100-SXM4-40GB"
    clock.t = 1.0
    sampler.sample_now()
    clock.t = 2.5
    sampler.sample_now()  # gpu1 is lost here: flagged, not raised
    clock.t = 3.0
    m = sampler.end_window("w")
    assert m.energy_j["gpu0"] == pytest.approx(100 * 3 + 5 * 9, rel=1e-12)  # linear: exact
    assert m.counter_energy_j["gpu0"] == pytest.approx(345.0, abs=1e-3)  # the cross-check
    assert m.energy_j["gpu1"] == pytest.approx(200.0, rel=1e-12)  # up to its last sample (1 s)
    assert m.energy_j["gpu2"] == pytest.approx(210.0, rel=1e-12)
    assert m.energy_j["gpu3"] == pytest.approx(750.0, rel=1e-12)
    assert "gpu1" not in m.counter_energy_j and "gpu3" not in m.counter_energy_j
    assert set(m.flags) == {"device_lost:gpu1", "partial:gpu1", "power_averaged_1s:gpu2"}
    assert m.lost_devices == ("gpu1",) and sampler.lost_devices == ("gpu1",)
    sampler.begin_window("after")
    clock.t = 4.0
    m2 = sampler.end_window("after")
    assert m2.energy_j["gpu1"] == 0.0 and "no_samples:gpu1" in m2.flags
    assert m2.energy_j["gpu3"] == pytest.approx(250.0, rel=1e-12)
    sampler.stop()
    sampler.stop()
    assert (fake.inits, fake.shutdowns) == (1, 1)


def test_nvml_sampler_measures_only_the_named_gpus(nv, monkeypatch: pytest.MonkeyPatch) -> None:
    """devices= takes NVML indices and UUIDs; the other GPUs of the host are never read."""
    clock = ManualClock(0.0)
    volta = nv.NVML_DEVICE_ARCH_VOLTA
    gpus = [
        {"name": "Tesla V100", "arch": volta, "power": lambda t: 100.0, "uuid": "GPU-aaaa"},
        {"name": "Tesla V100", "arch": volta, "power": lambda t: 200.0, "uuid": "GPU-bbbb"},
        {"name": "Tesla V100", "arch": volta, "power": lambda t: 300.0, "uuid": "GPU-cccc"},
    ]
    fake = FakeNVML(nv, gpus, clock)
    fake.install(monkeypatch)
    sampler = NVMLSampler(period_s=3600, devices=["GPU-cccc", 0], clock=clock)
    sampler.begin_window("w")
    assert sampler.devices == ("gpu2", "gpu0")
    clock.t = 2.0
    m = sampler.end_window("w")
    sampler.stop()
    assert m.energy_j == {"gpu2": pytest.approx(600.0), "gpu0": pytest.approx(200.0)}
    assert gpus[0]["reads"] >= 2 and gpus[2]["reads"] >= 2 and "reads" not in gpus[1]
    # a meter measures exactly the GPUs it names
    meter = CarbonMeter(["V100"], devices=["GPU-bbbb"], intensity_g_per_kwh=100.0)
    with meter.window("x") as w:
        pass
    meter.close()
    assert isinstance(meter.sampler, NVMLSampler) and meter.sampler.devices == ("gpu1",)
    r = w.report
    assert r is not None and list(r.device_energy_j) == ["gpu1"]
    assert r.energy_j == pytest.approx(200.0 * r.duration_s, rel=1e-9)
    with pytest.raises(ConfigError, match=r"UUID 'GPU-zzzz'"):
        NVMLSampler(devices=["GPU-zzzz"]).start()
    with pytest.raises(ConfigError, match=r"GPU\(s\) \[1\] twice"):
        NVMLSampler(devices=[1, "GPU-bbbb"]).start()
    assert fake.inits == fake.shutdowns


@pytest.mark.parametrize("devices", ["0", [], [-1], [True], [0, 0], [None], [1.0], 5])
def test_nvml_bad_devices_are_config_errors(devices: object) -> None:
    with pytest.raises(ConfigError, match="devices"):
        NVMLSampler(devices=devices)  # type: ignore[arg-type]


def test_nvml_sampler_thread_with_a_fake_driver(nv, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNVML(
        nv, [{"name": "Tesla T4", "arch": nv.NVML_DEVICE_ARCH_TURING, "power": lambda t: 70.0}]
    ).install(monkeypatch)
    with NVMLSampler(period_s=0.02) as sampler:
        sampler.begin_window("w")
        time.sleep(0.25)
        m = sampler.end_window("w")
    assert m.n_samples >= 4
    assert m.energy_j["gpu0"] == pytest.approx(70.0 * m.duration_s, rel=1e-9)


def test_nvml_bad_device_index_and_errors(nv, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNVML(nv, [{"name": "Tesla T4", "arch": 6, "power": lambda t: 1.0}])
    fake.install(monkeypatch)
    with pytest.raises(ConfigError, match=r"devices \[3\] do not exist.*1 GPU"):
        NVMLSampler(devices=[3]).start()
    assert fake.shutdowns == 1

    def no_permission() -> None:
        raise nv.NVMLError(nv.NVML_ERROR_NO_PERMISSION)

    monkeypatch.setattr(nv, "nvmlInit", no_permission)
    with pytest.raises(ProfileError, match="no permission") as info:
        NVMLSampler().start()
    assert isinstance(info.value.__cause__, nv.NVMLError)


def test_nvml_absent_gives_a_clear_error(nv) -> None:
    try:
        nv.nvmlInit()
    except nv.NVMLError_LibraryNotFound:
        pass
    else:
        nv.nvmlShutdown()
        pytest.skip("NVML is present on this machine")
    with pytest.raises(
        ProfileError, match=r"NVML not available.*install the NVIDIA driver"
    ) as info:
        NVMLSampler().start()
    assert isinstance(info.value.__cause__, nv.NVMLError_LibraryNotFound)
    assert not power.nvml_available()


def test_pynvml_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"greenllm\[nvml\]"):
        NVMLSampler().start()
    assert not power.nvml_available()


@pytest.mark.gpu
def test_nvml_on_a_real_gpu(nv) -> None:
    try:
        nv.nvmlInit()
        nv.nvmlShutdown()
    except nv.NVMLError as err:
        pytest.skip(f"no NVML GPU: {err}")
    with NVMLSampler(period_s=0.1) as sampler:
        sampler.begin_window("idle")
        time.sleep(1.0)
        m = sampler.end_window("idle")
    for dev in sampler.devices:
        assert m.energy_j[dev] > 0 and 1.0 < m.mean_power_w[dev] < 2000.0
        if dev in m.counter_energy_j:
            assert m.counter_energy_j[dev] == pytest.approx(m.energy_j[dev], rel=0.5)


# ---- RAPL ----------------------------------------------------------------------------------------
def make_rapl(root: Path, zones: dict[str, tuple[str, int]], max_uj: int = 1_000_000) -> None:
    for zone, (name, uj) in zones.items():
        d = root / zone
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
        (d / "energy_uj").write_text(f"{uj}\n")


def test_rapl_zones_counters_and_wraparound(tmp_path: Path) -> None:
    make_rapl(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", 900_000),
            "intel-rapl:0:0": ("core", 5),
            "intel-rapl:0:1": ("dram", 100),
            "intel-rapl:1": ("psys", 7),
        },
    )
    assert [z.name for z in find_rapl_zones(tmp_path)] == ["package-0", "package-0/dram"]
    assert rapl_available(tmp_path)
    clock = ManualClock(0.0)
    sampler = RAPLSampler(root=tmp_path, clock=clock, period_s=3600)
    sampler.begin_window("w")
    clock.t = 1.0
    (tmp_path / "intel-rapl:0/energy_uj").write_text("950000\n")  # +0.05 J
    (tmp_path / "intel-rapl:0:1/energy_uj").write_text("2100\n")  # +0.002 J
    sampler.sample_now()
    clock.t = 2.0
    (tmp_path / "intel-rapl:0/energy_uj").write_text("250000\n")  # wrapped: +0.05 + 0.25 J
    m = sampler.end_window("w")
    sampler.stop()
    assert m.energy_j["package-0"] == pytest.approx(0.35, abs=1e-12)
    assert m.energy_j["package-0/dram"] == pytest.approx(0.002, abs=1e-12)
    assert m.mean_power_w["package-0"] == pytest.approx(0.175, abs=1e-12)
    assert m.peak_power_w["package-0"] == pytest.approx(0.30, abs=1e-12)
    assert m.flags == ()


def test_rapl_unavailable_is_a_clear_error(tmp_path: Path) -> None:
    assert not rapl_available(tmp_path)
    with pytest.raises(ProfileError, match=r"RAPL not available.*run as root"):
        RAPLSampler(root=tmp_path).start()


@pytest.mark.skipif(not rapl_available(), reason="RAPL energy_uj absent or unreadable here")
def test_rapl_on_this_machine() -> None:
    with RAPLSampler(period_s=0.05) as sampler:
        sampler.begin_window("w")
        sum(i * i for i in range(2_000_000))
        m = sampler.end_window("w")
    for dev in sampler.devices:
        assert m.energy_j[dev] >= 0.0
    assert m.total_energy_j > 0.0 and 0.1 < m.total_energy_j / m.duration_s < 2000.0


def test_default_sampler_picks_what_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = (
        NVMLSampler if power.nvml_available() else RAPLSampler if rapl_available() else NullSampler
    )
    assert type(default_sampler()) is expected
    monkeypatch.setattr(default_mod, "nvml_available", lambda: False)
    monkeypatch.setattr(default_mod, "rapl_available", lambda: True)
    assert type(default_sampler(0.5)) is RAPLSampler
    monkeypatch.setattr(default_mod, "nvml_available", lambda: True)
    assert type(default_sampler()) is NVMLSampler


def test_importing_the_profiler_pulls_in_no_vendor_library() -> None:
    code = (
        "import sys, greenllm.energy.default, greenllm.energy.meter\n"
        "bad = [m for m in ('pynvml', 'torch', 'ray', 'vllm') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
