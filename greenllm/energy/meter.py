"""``CarbonMeter``: energy and carbon (Eq. 1-3) of any serving code, per window and per token.

>>> meter = CarbonMeter(gpus=["A100", "T4"], region="CISO")          # doctest: +SKIP
>>> with meter.window("batch", tokens=512) as w:                      # doctest: +SKIP
...     serve(batch)
>>> w.report.total_g, w.report.total_per_token_g                      # doctest: +SKIP

Per window: embodied carbon is Eq. 1 over the window's wall time for every GPU in ``gpus`` (the
GPUs are allocated throughout); operational carbon is Eq. 2 on the measured energy times ``pue``,
with the region's (or a constant) intensity, or with an intensity trace the sampled power
integrated against it: ``int P(t) CI(t) dt``. The meter never invents energy: without a sampler
that sees a device the report says ``energy_measured=False`` and operational carbon is 0.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
import numbers
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast, overload

import numpy as np

from greenllm.carbon import (
    CarbonBreakdown,
    CarbonIntensityTrace,
    GPUSpec,
    carbon_intensity,
    embodied_carbon_g,
    get_gpu,
    lifetime_for,
    operational_carbon_g,
)
from greenllm.energy.integration import EnergyMeasurement, MeasurementSummary, trapezoid_j
from greenllm.energy.nvml import NVMLSampler, nvml_available
from greenllm.energy.replay import NullSampler
from greenllm.energy.sampler import PowerSampler
from greenllm.errors import ConfigError
from greenllm.units import J_PER_KWH

__all__ = ["CarbonMeter", "CarbonReport", "MeterWindow", "ReportDict"]

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

ReportDict: TypeAlias = dict[
    str, str | int | float | bool | list[str] | list[float] | MeasurementSummary | None
]
""":meth:`CarbonReport.to_dict`: the breakdown's entries, the report's own and the measurement's."""


@dataclass(frozen=True)
class CarbonReport:
    """One window's energy and carbon. ``breakdown.energy_j`` is facility energy (x PUE)."""

    name: str
    gpus: tuple[str, ...]
    breakdown: CarbonBreakdown
    measurement: EnergyMeasurement
    embodied_g_per_gpu: tuple[float, ...]
    intensity_g_per_kwh: float  # effective: operational / facility kWh (the mean CI if no energy)
    intensity_source: str
    pue: float = 1.0

    @property
    def start_s(self) -> float:
        return self.measurement.start_s

    @property
    def end_s(self) -> float:
        return self.measurement.end_s

    @property
    def duration_s(self) -> float:
        return self.measurement.duration_s

    @property
    def device_energy_j(self) -> dict[str, float]:
        return dict(self.measurement.energy_j)

    @property
    def energy_measured(self) -> bool:
        return self.measurement.measured

    @property
    def flags(self) -> tuple[str, ...]:
        return self.measurement.flags

    @property
    def energy_j(self) -> float:
        return self.breakdown.energy_j

    @property
    def embodied_g(self) -> float:
        return self.breakdown.embodied_g

    @property
    def operational_g(self) -> float:
        return self.breakdown.operational_g

    @property
    def total_g(self) -> float:
        return self.breakdown.total_g

    @property
    def tokens(self) -> int | None:
        return self.breakdown.tokens

    @property
    def embodied_per_token_g(self) -> float:
        return self.breakdown.embodied_per_token_g

    @property
    def operational_per_token_g(self) -> float:
        return self.breakdown.operational_per_token_g

    @property
    def total_per_token_g(self) -> float:
        return self.breakdown.total_per_token_g

    def to_dict(self) -> ReportDict:
        """JSON-ready: the breakdown, the measurement summary and where the numbers come from."""
        return {
            "name": self.name,
            "gpus": list(self.gpus),
            "duration_s": self.duration_s,
            **self.breakdown.to_dict(),
            "embodied_g_per_gpu": list(self.embodied_g_per_gpu),
            "intensity_g_per_kwh": self.intensity_g_per_kwh,
            "intensity_source": self.intensity_source,
            "pue": self.pue,
            "energy_measured": self.energy_measured,
            "measurement": self.measurement.to_dict(),
        }


class MeterWindow:
    """An open window of a :class:`CarbonMeter`: add tokens while it runs; ``report`` after."""

    def __init__(self, name: str, key: str, tokens: int | None) -> None:
        self.name, self.key, self.tokens = name, key, _check_tokens(tokens)
        self.report: CarbonReport | None = None

    def add_tokens(self, n: int) -> None:
        """Count ``n`` more tokens served in this window (for the per-token figures)."""
        self.tokens = (self.tokens or 0) + _check_tokens(n)


def _number(name: str, value: object, minimum: float) -> float:
    if not (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and not value < minimum  # numbers.Real declares < and <=, not >=
    ):
        raise ConfigError(f"CarbonMeter: {name} = {value!r}: must be a finite number >= {minimum}")
    return float(value)


@overload
def _check_tokens(tokens: int) -> int: ...
@overload
def _check_tokens(tokens: object) -> int | None: ...
def _check_tokens(tokens: object) -> int | None:
    if tokens is None:
        return None
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ConfigError(f"tokens = {tokens!r}: must be an integer >= 0 (or None)")
    return int(tokens)


class CarbonMeter:
    """Measure energy and carbon around any code: ``with meter:``, ``with meter.window(name):``
    or ``@meter.track(name)``. Every finished window's :class:`CarbonReport` is in ``reports``.

    ``gpus``: the GPUs allocated to the service (names or :class:`GPUSpec`; Eq. 1 per GPU).
    Intensity: one of ``region`` (e.g. ``"CISO"``), ``intensity_g_per_kwh`` or ``trace`` (a
    :class:`CarbonIntensityTrace`, epoch timestamps); none -> CISO's 261 g/kWh (paper Sec. 7.5).
    ``lifetimes_years``: one value or ``{"T4": 10, "default": 7}``. ``sampler``: any
    :class:`PowerSampler`; default NVML if a GPU answers, else a :class:`NullSampler` (energy
    unmeasured; RAPL is never substituted for GPU energy). ``pue`` >= 1 scales the energy.
    The sampler starts at the first window and runs until :meth:`close` (or the ``with`` ends).
    """

    def __init__(
        self,
        gpus: str | GPUSpec | Sequence[str | GPUSpec],
        *,
        region: str | None = None,
        intensity_g_per_kwh: float | None = None,
        trace: CarbonIntensityTrace | None = None,
        lifetimes_years: float | Mapping[str, float] = 7.0,
        sampler: PowerSampler | None = None,
        pue: float = 1.0,
    ) -> None:
        given = [k for k, v in (("region", region), ("intensity_g_per_kwh", intensity_g_per_kwh),
                                ("trace", trace)) if v is not None]  # fmt: skip
        if len(given) > 1:
            raise ConfigError(f"CarbonMeter: give one of region, intensity_g_per_kwh, trace "
                              f"(got {', '.join(given)})")  # fmt: skip
        specs = [gpus] if isinstance(gpus, (str, GPUSpec)) else list(gpus)
        self.gpus: tuple[GPUSpec, ...] = tuple(get_gpu(g) for g in specs)
        self.lifetimes_years = tuple(lifetime_for(g, lifetimes_years) for g in self.gpus)
        if trace is not None and not isinstance(trace, CarbonIntensityTrace):
            raise ConfigError(f"CarbonMeter: trace = {trace!r}: must be a CarbonIntensityTrace")
        self.trace = trace
        self.intensity_g_per_kwh: float | None = None
        if trace is not None:
            self.intensity_source = f"trace {trace.name}"
        elif intensity_g_per_kwh is not None:
            self.intensity_g_per_kwh = _number("intensity_g_per_kwh", intensity_g_per_kwh, 0.0)
            self.intensity_source = "user"
        else:
            code = region if region is not None else "CISO"
            self.intensity_g_per_kwh = carbon_intensity(code)
            self.intensity_source = code if region is not None else "CISO (default)"
        self.pue = _number("pue", pue, 1.0)
        self._sampler = sampler
        self._started_sampler = False
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._top: MeterWindow | None = None
        self._block_report: CarbonReport | None = None
        self.reports: list[CarbonReport] = []

    # ---- sampler -------------------------------------------------------------------------------
    @property
    def sampler(self) -> PowerSampler:
        """The sampler in use (chosen at first use when none was given)."""
        with self._lock:
            if self._sampler is None:
                if nvml_available():
                    self._sampler = NVMLSampler()
                    logger.info("CarbonMeter: measuring GPU energy with NVML")
                else:
                    self._sampler = NullSampler()
                    logger.warning(
                        "CarbonMeter: no NVML GPU here, so energy is unmeasured and "
                        "operational carbon is 0; pass sampler=... (e.g. "
                        "RAPLSampler() or ModelledSampler(power_w))"
                    )
            return self._sampler

    def close(self) -> None:
        """Stop the sampler if this meter started it."""
        if self._started_sampler and self._sampler is not None:
            self._sampler.stop()
            self._started_sampler = False

    # ---- windows -------------------------------------------------------------------------------
    def begin(self, name: str = "window", tokens: int | None = None) -> MeterWindow:
        """Open a window (prefer :meth:`window`); close it with :meth:`end`."""
        sampler = self.sampler
        win = MeterWindow(name, f"{name}#{next(self._ids)}@meter{id(self):x}", tokens)
        with self._lock:
            if not sampler.running:
                sampler.start()
                self._started_sampler = True
        sampler.begin_window(win.key)
        return win

    def end(self, win: MeterWindow) -> CarbonReport:
        """Close ``win`` and record its report."""
        report = self.account(win.name, self.sampler.end_window(win.key), win.tokens)
        win.report = report
        with self._lock:
            self.reports.append(report)
        return report

    @contextmanager
    def window(self, name: str = "window", tokens: int | None = None) -> Iterator[MeterWindow]:
        """``with meter.window("decode", tokens=n) as w: ...``; then ``w.report``."""
        win = self.begin(name, tokens)
        try:
            yield win
        finally:
            self.end(win)

    def track(
        self, name: str | None = None, tokens: int | Callable[[Any], int] | None = None
    ) -> Callable[[F], F]:
        """Decorator: every call is a window named ``name`` (default: the function's name);
        ``tokens`` is a count or a function of the call's return value."""

        def decorate(fn: F) -> F:
            label = name or str(getattr(fn, "__name__", "call"))

            def count(result: object) -> int | None:
                return _check_tokens(tokens(result) if callable(tokens) else tokens)

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    win = self.begin(label)
                    try:
                        result = await fn(*args, **kwargs)
                        win.tokens = count(result)
                        return result
                    finally:
                        self.end(win)

                return cast(F, awrapper)

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                win = self.begin(label)
                try:
                    result = fn(*args, **kwargs)
                    win.tokens = count(result)
                    return result
                finally:
                    self.end(win)

            return cast(F, wrapper)

        return decorate

    def __enter__(self) -> CarbonMeter:
        self._top = self.begin("meter")
        return self

    def __exit__(self, *exc: object) -> None:
        top, self._top = self._top, None
        try:
            if top is not None:
                self._block_report = self.end(top)
        finally:
            self.close()

    def add_tokens(self, n: int) -> None:
        """Inside ``with meter:``: count ``n`` tokens for the meter's own window."""
        if self._top is None:
            raise ConfigError("add_tokens: no `with meter:` block is open; use meter.window()")
        self._top.add_tokens(n)

    @property
    def report(self) -> CarbonReport | None:
        """The report of the last ``with meter:`` block (None before one has ended)."""
        return self._block_report

    # ---- accounting ----------------------------------------------------------------------------
    def account(self, name: str, m: EnergyMeasurement, tokens: int | None = None) -> CarbonReport:
        """Eq. 1-3 over a measurement ``m`` (of any sampler): the carbon report of one window."""
        duration = max(m.duration_s, 0.0)
        embodied = tuple(
            float(embodied_carbon_g(duration, g, life))
            for g, life in zip(self.gpus, self.lifetimes_years, strict=True)
        )
        energy = self.pue * m.total_energy_j
        if self.trace is None:
            assert self.intensity_g_per_kwh is not None  # set whenever there is no trace
            operational = float(operational_carbon_g(energy, self.intensity_g_per_kwh))
            ci = float(self.intensity_g_per_kwh)
        else:
            operational = self.pue * math.fsum(self._trace_g(m, d) for d in m.energy_j)
            ci = (
                operational / (energy / J_PER_KWH)
                if energy > 0
                else float(self.trace.mean(m.start_s, max(m.end_s, m.start_s)))
            )
        return CarbonReport(
            name=name,
            gpus=tuple(g.name for g in self.gpus),
            breakdown=CarbonBreakdown(
                math.fsum(embodied), operational, energy, _check_tokens(tokens)
            ),
            measurement=m,
            embodied_g_per_gpu=embodied,
            intensity_g_per_kwh=ci,
            intensity_source=self.intensity_source,
            pue=self.pue,
        )

    def _trace_g(self, m: EnergyMeasurement, device: str) -> float:
        """Operational g of one device against the trace: ``int P CI dt`` from the samples,
        rescaled to the device's reported energy (equal for integrated power; RAPL: counters)."""
        assert self.trace is not None
        energy = m.energy_j[device]
        if energy <= 0:
            return 0.0
        t, p = (np.asarray(a, dtype=float) for a in m.samples.get(device, ((), ())))
        if t.size >= 2 and m.sample_kind == "interval_mean":  # p[i]: mean over (t[i-1], t[i]]
            e_i = p[1:] * np.diff(t)
            g, e_samples = float(np.dot(e_i, self.trace.mean(t[:-1], t[1:]))) / J_PER_KWH, e_i.sum()
        elif t.size >= 2:
            g, e_samples = self.trace.operational_carbon_from_power_g(t, p), trapezoid_j(t, p)
        else:
            g, e_samples = 0.0, 0.0
        if e_samples > 0:
            return g * (energy / e_samples)
        return self.trace.operational_carbon_g(energy, m.start_s, max(m.end_s, m.start_s))
