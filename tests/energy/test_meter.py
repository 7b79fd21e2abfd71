"""CarbonMeter: Eq. 1-3 per window, per token, with a region, a constant or an intensity trace."""

from __future__ import annotations

import asyncio
import time

import pytest

from greenllm.carbon import CarbonIntensityTrace, get_gpu
from greenllm.energy import (
    CarbonMeter,
    CarbonReport,
    ModelledSampler,
    NullSampler,
    RAPLSampler,
    rapl_available,
)
from greenllm.energy import meter as meter_mod
from greenllm.errors import ConfigError
from tests.extras import require

YEAR_S = 365.25 * 86400.0


class ManualClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def eq1_g(seconds: float, gpu: str, years: float = 7.0) -> float:
    """Eq. 1 written out: t / LT * C_e (kg -> g)."""
    return seconds / (years * YEAR_S) * get_gpu(gpu).embodied_kg * 1000.0


def test_meter_around_a_real_pytorch_workload() -> None:
    torch = require("torch")
    measured = rapl_available()
    sampler = RAPLSampler(period_s=0.05) if measured else ModelledSampler(35.0, period_s=0.05)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256)
    )
    x = torch.randn(64, 256)
    meter = CarbonMeter(gpus="T4", region="CISO", sampler=sampler)
    t0 = time.time()
    with meter as m:
        tokens = 0
        with torch.no_grad():
            while time.time() - t0 < 1.0:
                x = torch.tanh(model(x))
                tokens += 64
        m.add_tokens(tokens)
    elapsed = time.time() - t0
    r = m.report
    assert isinstance(r, CarbonReport) and not sampler.running  # the meter stopped what it started
    assert r.duration_s == pytest.approx(elapsed, abs=0.2)
    assert r.energy_j > 0 and r.embodied_g > 0 and r.operational_g > 0
    assert r.embodied_g == pytest.approx(eq1_g(r.duration_s, "T4"), rel=1e-12)
    assert r.operational_g == pytest.approx(r.energy_j / 3.6e6 * 261.0, rel=1e-12)
    assert r.total_g == pytest.approx(r.embodied_g + r.operational_g, rel=1e-12)
    assert r.tokens == tokens and r.total_per_token_g == pytest.approx(r.total_g / tokens)
    assert r.measurement.n_samples >= 5  # ~20 at 50 ms
    if measured:
        assert 0.1 < r.energy_j / r.duration_s < 2000.0
    else:
        assert r.energy_j == pytest.approx(35.0 * r.duration_s, rel=1e-9)
        assert r.device_energy_j == {"model0": pytest.approx(r.energy_j, rel=1e-12)}
    assert r.to_dict()["energy_measured"] is True


def test_track_decorator_and_windows() -> None:
    clock = ManualClock(1000.0)
    sampler = ModelledSampler(100.0, clock=clock, period_s=3600)
    meter = CarbonMeter(
        gpus=["A100", "T4"],
        intensity_g_per_kwh=500.0,
        sampler=sampler,
        lifetimes_years={"T4": 10, "default": 7},
    )

    @meter.track("generate", tokens=lambda out: len(out))
    def generate(n: int) -> list[int]:
        clock.t += 2.0
        return list(range(n))

    @meter.track()
    async def agenerate() -> str:
        clock.t += 1.0
        return "done"

    assert generate(40) == list(range(40)) and generate.__name__ == "generate"
    assert asyncio.run(agenerate()) == "done"
    with meter.window("prefill", tokens=10) as w:
        clock.t += 0.5
        w.add_tokens(5)
    first, second, third = meter.reports
    assert (first.name, second.name, third.name) == ("generate", "agenerate", "prefill")
    assert first.duration_s == 2.0 and first.tokens == 40 and second.tokens is None
    assert first.energy_j == pytest.approx(200.0, rel=1e-12)
    assert first.operational_g == pytest.approx(200.0 / 3.6e6 * 500.0, rel=1e-12)
    assert first.embodied_g_per_gpu == pytest.approx((eq1_g(2.0, "A100", 7), eq1_g(2.0, "T4", 10)))
    assert first.total_per_token_g == pytest.approx(first.total_g / 40)
    assert w.report is third and third.tokens == 15 and third.energy_j == pytest.approx(50.0)
    with pytest.raises(ConfigError, match="tokens"):
        _ = second.total_per_token_g
    meter.close()
    assert not sampler.running


def test_window_is_recorded_when_the_code_raises() -> None:
    meter = CarbonMeter(gpus="A100", sampler=ModelledSampler(10.0, period_s=3600))
    with pytest.raises(RuntimeError), meter.window("boom"):
        raise RuntimeError("serving failed")
    assert [r.name for r in meter.reports] == ["boom"]
    assert meter.reports[0].intensity_source == "CISO (default)"
    assert meter.reports[0].intensity_g_per_kwh == 261.0
    meter.close()


def test_trace_intensity_across_an_hour_boundary() -> None:
    hour = 472_222 * 3600.0  # an epoch hour (2023-11-14 22:00 UTC)
    trace = CarbonIntensityTrace([hour, hour + 3600.0], [100.0, 400.0])
    clock = ManualClock(hour + 3570.0)  # 30 s before the change to 400 g/kWh
    sampler = ModelledSampler(lambda elapsed_s: 100.0 + 2.0 * elapsed_s, clock=clock, period_s=3600)
    meter = CarbonMeter(gpus="A100", trace=trace, sampler=sampler, pue=1.2)
    with meter.window("w") as w:
        clock.t = hour + 3630.0
    r = w.report
    # P(e) = 100 + 2e W: 3900 J over the first 30 s (100 g/kWh), 5700 J over the next 30 s (400)
    assert r.measurement.total_energy_j == pytest.approx(9600.0, rel=1e-12)
    assert r.energy_j == pytest.approx(1.2 * 9600.0, rel=1e-12)
    assert r.operational_g == pytest.approx(1.2 * (3900 * 100 + 5700 * 400) / 3.6e6, rel=1e-12)
    assert r.intensity_g_per_kwh == pytest.approx((3900 * 100 + 5700 * 400) / 9600, rel=1e-12)
    assert r.embodied_g == pytest.approx(eq1_g(60.0, "A100"), rel=1e-12)
    assert r.intensity_source == "trace custom"
    meter.close()


def test_without_a_gpu_energy_is_unmeasured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meter_mod, "nvml_available", lambda: False)
    meter = CarbonMeter(gpus="A100", region="MISO")
    with meter:
        time.sleep(0.02)
    r = meter.report
    assert isinstance(meter.sampler, NullSampler)
    assert r is not None and not r.energy_measured and r.flags == ("unmeasured",)
    assert r.operational_g == 0.0 and r.energy_j == 0.0
    assert r.embodied_g == pytest.approx(eq1_g(r.duration_s, "A100"), rel=1e-12)


def test_bad_meter_arguments() -> None:
    with pytest.raises(ConfigError, match="give one of"):
        CarbonMeter(gpus="A100", region="CISO", intensity_g_per_kwh=100.0)
    with pytest.raises(ConfigError, match="pue"):
        CarbonMeter(gpus="A100", pue=0.9)
    with pytest.raises(ConfigError, match=r"unknown|GPU"):
        CarbonMeter(gpus="NoSuchGPU")
    with pytest.raises(ConfigError, match="region"):
        CarbonMeter(gpus="A100", region="Atlantis")
    with pytest.raises(ConfigError, match="trace"):
        CarbonMeter(gpus="A100", trace=[1, 2])  # type: ignore[arg-type]
    meter = CarbonMeter(gpus="A100", sampler=NullSampler())
    with pytest.raises(ConfigError, match="tokens"):
        meter.window("w", tokens=-1).__enter__()
    with pytest.raises(ConfigError, match="no `with meter:`"):
        meter.add_tokens(3)


def test_trace_intensity_with_energy_counters(tmp_path) -> None:
    """RAPL-style samples are interval means: each interval's energy meets its own intensity."""
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("0\n")
    hour = 472_222 * 3600.0
    trace = CarbonIntensityTrace([hour, hour + 3600.0], [100.0, 400.0])
    clock = ManualClock(hour + 3560.0)
    sampler = RAPLSampler(root=tmp_path, clock=clock, period_s=3600).start()
    meter = CarbonMeter(gpus="T4", trace=trace, sampler=sampler)
    clock.t = hour + 3570.0
    (zone / "energy_uj").write_text("100000000\n")  # 100 J before the window (10 W)
    with meter.window("w") as w:
        clock.t = hour + 3600.0
        (zone / "energy_uj").write_text("400000000\n")  # +300 J at 100 g/kWh (10 W)
        sampler.sample_now()
        clock.t = hour + 3630.0
        (zone / "energy_uj").write_text("1300000000\n")  # +900 J at 400 g/kWh (30 W)
    sampler.stop()
    r = w.report
    assert r.energy_j == pytest.approx(1200.0, rel=1e-12)
    assert r.embodied_g == pytest.approx(eq1_g(60.0, "T4"), rel=1e-12)
    assert r.operational_g == pytest.approx((300 * 100 + 900 * 400) / 3.6e6, rel=1e-12)
    assert r.measurement.peak_power_w["package-0"] == pytest.approx(30.0)
