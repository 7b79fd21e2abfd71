"""``CarbonMeter``: energy and carbon (Eq. 1-3) of any serving code, per window and per token.

>>> meter = CarbonMeter(gpus=["A100", "T4"], region="CISO")          # doctest: +SKIP
>>> with meter.window("batch", tokens=512) as w:                      # doctest: +SKIP
...     serve(batch)
>>> w.report.total_g, w.report.total_per_token_g                      # doctest: +SKIP

Per window: embodied carbon is Eq. 1 over the window's attributed time for every GPU in ``gpus``
(the GPUs are allocated throughout); operational carbon is Eq. 2 on the window's attributed
energy times ``pue``, with the region's (or a constant) intensity, or with an intensity trace the
sampled power integrated against it: ``int P(t) CI(t) dt``. The meter never invents energy:
without a sampler that sees a device the report says ``energy_measured=False`` and operational
carbon is 0.

Concurrent windows share the devices (see :class:`CarbonMeter`): every instant's energy and
allocated time goes to the windows open at that instant in equal parts, so the reports of any
set of overlapping windows add up to the devices' energy and time over their union.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
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
from greenllm.checks import finite_int, finite_number
from greenllm.energy.integration import (
    EnergyMeasurement,
    MeasurementSummary,
    cumulative_j,
    trapezoid_j,
    window_series,
)
from greenllm.energy.nvml import NVMLSampler, check_gpu_devices, nvml_available
from greenllm.energy.replay import NullSampler
from greenllm.energy.sampler import PowerSampler
from greenllm.errors import ConfigError, ProfileError
from greenllm.units import (
    J_PER_KWH,
    MAX_DEVICE_LIFETIME_YEARS,
    MAX_EXACT_COUNT,
    MAX_INTENSITY_G_PER_KWH,
    MAX_PUE,
)

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
    attributed_s: float | None = None  # the window's share of the allocated time (None: all)
    attributed_energy_j: Mapping[str, float] | None = None  # its share of each device's energy

    @property
    def shared_s(self) -> float:
        """Seconds of the GPUs' time charged to this window (its duration when it ran alone)."""
        return self.duration_s if self.attributed_s is None else self.attributed_s

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
        """Each device's energy charged to this window, J (before PUE): the whole measured
        energy when the window ran alone, its share when windows overlapped."""
        if self.attributed_energy_j is None:
            return dict(self.measurement.energy_j)
        return dict(self.attributed_energy_j)

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
            "shared_s": self.shared_s,
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
        n = finite_int("n", n, 0, MAX_EXACT_COUNT, where="MeterWindow.add_tokens")
        self.tokens = _check_tokens((self.tokens or 0) + n)


@overload
def _check_tokens(tokens: int) -> int: ...
@overload
def _check_tokens(tokens: object) -> int | None: ...
def _check_tokens(tokens: object) -> int | None:
    if tokens is None:
        return None
    return finite_int("tokens", tokens, 0, MAX_EXACT_COUNT, where="CarbonMeter")


Piece: TypeAlias = tuple[float, float, float]
"""``(a_s, b_s, weight)``: a stretch of a window and the share of it charged to the window."""


def _lifetimes(value: object) -> float | dict[str, float]:
    where = "CarbonMeter"
    if isinstance(value, Mapping):
        if not value:
            raise ConfigError(f"{where}: lifetimes_years = {{}}: give years in (0, 100] "
                              "(e.g. 7) or a mapping such as {'T4': 10, 'default': 7}")  # fmt: skip
        out: dict[str, float] = {}
        for key, years in value.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"{where}: lifetimes_years key {key!r}: must be a GPU name")
            out[key] = finite_number(
                f"lifetimes_years[{key!r}]", years, 0.0, MAX_DEVICE_LIFETIME_YEARS, lo_open=True,
                where=where,
            )  # fmt: skip
        return out
    return finite_number(
        "lifetimes_years", value, 0.0, MAX_DEVICE_LIFETIME_YEARS, lo_open=True, where=where
    )


def _piece_energy_g(
    t: np.ndarray,
    p: np.ndarray,
    kind: str,
    a: float,
    b: float,
    trace: CarbonIntensityTrace | None,
) -> tuple[float, float]:
    """Energy (J) of samples ``(t, p)`` over ``[a, b]`` and, with a trace, its carbon (g)."""
    if b <= a or t.size < 2:
        return 0.0, 0.0
    if kind == "interval_mean":  # p[i]: the mean power over (t[i-1], t[i]]
        lo, hi = np.maximum(t[:-1], a), np.minimum(t[1:], b)
        keep = hi > lo
        if not keep.any():
            return 0.0, 0.0
        e_i = p[1:][keep] * (hi[keep] - lo[keep])
        g = float(np.dot(e_i, trace.mean(lo[keep], hi[keep]))) / J_PER_KWH if trace else 0.0
        return math.fsum(e_i.tolist()), g
    ts, ps = window_series(t, p, a, b)
    if ts.size < 2:
        return 0.0, 0.0
    g = trace.operational_carbon_from_power_g(ts, ps) if trace is not None else 0.0
    return trapezoid_j(ts, ps), float(g)


class CarbonMeter:
    """Measure energy and carbon around any code: ``with meter:``, ``with meter.window(name):``
    or ``@meter.track(name)``. Every finished window's :class:`CarbonReport` is in ``reports``.

    ``gpus``: the GPUs allocated to the service (names or :class:`GPUSpec`; Eq. 1 per GPU; at
    least one). Intensity: one of ``region`` (e.g. ``"CISO"``), ``intensity_g_per_kwh`` or
    ``trace`` (a :class:`CarbonIntensityTrace`, epoch timestamps); none -> CISO's 261 g/kWh
    (paper Sec. 7.5). ``lifetimes_years``: one value or ``{"T4": 10, "default": 7}``.
    ``sampler``: any :class:`PowerSampler`; default NVML if a GPU answers (only the GPUs in
    ``devices``, NVML indices or UUIDs, when given), else a :class:`NullSampler` (energy
    unmeasured; RAPL is never substituted for GPU energy). ``pue`` in [1, 10] scales the energy.
    The sampler starts at the first window and runs until :meth:`close` (or the ``with`` ends).
    Every number is checked here (finite, in range) and bad input is a :class:`ConfigError`.

    **Concurrent windows share the devices.** The devices draw one energy whatever number of
    windows is open, so the meter cuts time at every window's start and end and charges each
    stretch's device energy, and its allocated GPU time (Eq. 1), to the windows open during it
    in equal parts (a stretch with ``n`` open windows: ``1/n`` each). This is the concurrency
    rule :func:`greenllm.carbon.window_carbon` / :func:`~greenllm.carbon.split_by_tokens` apply
    to embodied carbon -- the device's carbon is divided among the work that shares it, never
    charged to each in full -- applied to energy as well, by busy time rather than by tokens:
    a report is final when its window closes, and the tokens of windows still open are not
    known then. So over any set of windows the reports' energy, operational and embodied carbon
    add up to the devices' energy, carbon and time over the union of the windows; a window
    alone gets exactly its own measurement. Per-token figures divide a window's share by its
    own tokens; to split one window among requests by tokens, use ``split_by_tokens``.
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
        devices: Sequence[int | str] | None = None,
    ) -> None:
        given = [k for k, v in (("region", region), ("intensity_g_per_kwh", intensity_g_per_kwh),
                                ("trace", trace)) if v is not None]  # fmt: skip
        if len(given) > 1:
            raise ConfigError(f"CarbonMeter: give one of region, intensity_g_per_kwh, trace "
                              f"(got {', '.join(given)})")  # fmt: skip
        if isinstance(gpus, (str, GPUSpec)):
            specs: list[object] = [gpus]
        elif isinstance(gpus, Sequence) and not isinstance(gpus, bytes):
            specs = list(gpus)
        else:
            raise ConfigError(f"CarbonMeter: gpus = {gpus!r}: must be a GPU name or a list of them")
        if not specs:
            raise ConfigError(
                "CarbonMeter: gpus = []: name at least one GPU the service runs on (e.g. "
                "gpus='A100'); embodied carbon is charged per GPU"
            )
        for g in specs:
            if not isinstance(g, (str, GPUSpec)) or (isinstance(g, str) and not g.strip()):
                raise ConfigError(f"CarbonMeter: gpus entry {g!r}: must be a GPU name or GPUSpec")
        self.gpus: tuple[GPUSpec, ...] = tuple(get_gpu(cast(str | GPUSpec, g)) for g in specs)
        lifetimes = _lifetimes(lifetimes_years)
        self.lifetimes_years = tuple(lifetime_for(g, lifetimes) for g in self.gpus)
        for g, life in zip(self.gpus, self.lifetimes_years, strict=True):  # e.g. the default
            finite_number(f"lifetimes_years of {g.name}", life, 0.0, MAX_DEVICE_LIFETIME_YEARS,
                          lo_open=True, where="CarbonMeter")  # fmt: skip
        if trace is not None and not isinstance(trace, CarbonIntensityTrace):
            raise ConfigError(f"CarbonMeter: trace = {trace!r}: must be a CarbonIntensityTrace")
        if region is not None and (not isinstance(region, str) or not region.strip()):
            raise ConfigError(f"CarbonMeter: region = {region!r}: must be a region code (CISO)")
        if sampler is not None and not isinstance(sampler, PowerSampler):
            raise ConfigError(f"CarbonMeter: sampler = {sampler!r}: must be a PowerSampler")
        self._devices = None if devices is None else check_gpu_devices("CarbonMeter", devices)
        if self._devices is not None and sampler is not None:
            raise ConfigError("CarbonMeter: give devices or sampler, not both (devices selects "
                              "the GPUs of the default NVMLSampler)")  # fmt: skip
        if self._devices is not None and len(self._devices) != len(self.gpus):
            raise ConfigError(
                f"CarbonMeter: devices = {list(self._devices)!r} names {len(self._devices)} "
                f"GPU(s) for {len(self.gpus)} in gpus; name one device per GPU"
            )
        self.trace = trace
        self.intensity_g_per_kwh: float | None = None
        if trace is not None:
            self.intensity_source = f"trace {trace.name}"
        elif intensity_g_per_kwh is not None:
            self.intensity_g_per_kwh = finite_number(
                "intensity_g_per_kwh", intensity_g_per_kwh, 0.0, MAX_INTENSITY_G_PER_KWH,
                where="CarbonMeter",
            )  # fmt: skip
            self.intensity_source = "user"
        else:
            code = region if region is not None else "CISO"
            self.intensity_g_per_kwh = carbon_intensity(code)
            self.intensity_source = code if region is not None else "CISO (default)"
        self.pue = finite_number("pue", pue, 1.0, MAX_PUE, where="CarbonMeter")
        self._sampler = sampler
        self._started_sampler = False
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._top: MeterWindow | None = None
        self._block_report: CarbonReport | None = None
        self._spans: dict[str, list[float | None]] = {}  # window key -> [start_s, end_s or None]
        self.reports: list[CarbonReport] = []

    def set_intensity(self, g_per_kwh: float, source: str) -> None:
        """Use ``g_per_kwh`` (from ``source``, e.g. a live provider) for windows that close
        from now on (a meter with a trace keeps its trace: ConfigError)."""
        if self.trace is not None:
            raise ConfigError("CarbonMeter.set_intensity: this meter follows a trace")
        value = finite_number("g_per_kwh", g_per_kwh, 0.0, MAX_INTENSITY_G_PER_KWH,
                              where="CarbonMeter.set_intensity")  # fmt: skip
        if not isinstance(source, str) or not source:
            raise ConfigError("CarbonMeter.set_intensity: source must name where it came from")
        with self._lock:
            self.intensity_g_per_kwh, self.intensity_source = value, source

    # ---- sampler -------------------------------------------------------------------------------
    @property
    def sampler(self) -> PowerSampler:
        """The sampler in use (chosen at first use when none was given)."""
        with self._lock:
            if self._sampler is None:
                if nvml_available():
                    self._sampler = NVMLSampler(devices=self._devices)
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
        if not isinstance(name, str) or not name:
            raise ConfigError(f"CarbonMeter: window name {name!r}: must be a non-empty string")
        sampler = self.sampler
        win = MeterWindow(name, f"{name}#{next(self._ids)}@meter{id(self):x}", tokens)
        with self._lock:  # the span is known before any other window can close
            if not sampler.running:
                sampler.start()
                self._started_sampler = True
            self._spans[win.key] = [sampler.begin_window(win.key), None]
        return win

    def end(self, win: MeterWindow) -> CarbonReport:
        """Close ``win`` and record its report."""
        sampler = self.sampler
        with self._lock:
            try:
                m = sampler.end_window(win.key)
            except BaseException:
                self._spans.pop(win.key, None)
                raise
            self._spans[win.key][1] = m.end_s
            pieces = self._pieces(m.start_s, m.end_s)
            self._prune_spans()
        report = self.account(win.name, m, win.tokens, pieces=pieces)
        win.report = report
        with self._lock:
            self.reports.append(report)
        return report

    def _pieces(self, t0: float, t1: float) -> list[Piece]:
        """``[t0, t1]`` cut at every other window's edge, each stretch weighted 1 / (windows
        open throughout it). Called under the lock, with the closing window's span set."""
        spans = [(s0, s1) for s0, s1 in self._spans.values() if s0 is not None]
        edges = {t0, t1}
        for s0, s1 in spans:
            edges.update(e for e in (s0, s1) if e is not None and t0 < e < t1)
        cuts = np.array(sorted(edges))
        if cuts.size < 2:
            return []
        # a span covers the stretches [cuts[i], cuts[i+1]] with first <= i < last (every edge
        # inside [t0, t1] is a cut, so the covered stretches are contiguous): count by sweep
        first = np.searchsorted(cuts, [s0 for s0, _ in spans], side="left")
        ends = [math.inf if s1 is None else s1 for _, s1 in spans]
        last = np.searchsorted(cuts, ends, side="right") - 1
        open_n = np.zeros(cuts.size + 1, dtype=np.int64)
        np.add.at(open_n, first, 1)
        np.add.at(open_n, np.maximum(last, first), -1)
        weights = (1.0 / np.maximum(np.cumsum(open_n)[: cuts.size - 1], 1)).tolist()
        return list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), weights, strict=True))

    def _prune_spans(self) -> None:
        """Forget closed windows that can overlap no open one (called under the lock)."""
        open_from = min((s0 for s0, s1 in self._spans.values() if s1 is None and s0 is not None),
                        default=math.inf)  # fmt: skip
        for key in [k for k, (_, s1) in self._spans.items() if s1 is not None and s1 <= open_from]:
            del self._spans[key]

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
    def account(
        self,
        name: str,
        m: EnergyMeasurement,
        tokens: int | None = None,
        *,
        pieces: Sequence[Piece] | None = None,
    ) -> CarbonReport:
        """Eq. 1-3 over a measurement ``m`` (of any sampler): the carbon report of one window.

        ``pieces`` (``(a_s, b_s, weight)`` stretches covering the window) charge the window only
        ``weight`` of each stretch's time and energy (the sharing rule of :class:`CarbonMeter`);
        without them the window is charged in full."""
        if not isinstance(m, EnergyMeasurement):
            raise ConfigError(f"CarbonMeter.account: m = {m!r}: must be an EnergyMeasurement")
        duration = max(m.duration_s, 0.0)
        if pieces is None:
            pieces = [(m.start_s, m.end_s, 1.0)] if duration > 0 else []
        shared_s = math.fsum(max(b - a, 0.0) * w for a, b, w in pieces)
        embodied = tuple(
            float(embodied_carbon_g(shared_s, g, life))
            for g, life in zip(self.gpus, self.lifetimes_years, strict=True)
        )
        device_j: dict[str, float] = {}
        device_g: dict[str, float] = {}
        for dev, energy_dev in m.energy_j.items():
            device_j[dev], device_g[dev] = self._share(m, dev, energy_dev, pieces, shared_s)
        energy = self.pue * math.fsum(device_j.values())
        if self.trace is None:
            assert self.intensity_g_per_kwh is not None  # set whenever there is no trace
            operational = float(operational_carbon_g(energy, self.intensity_g_per_kwh))
            ci = float(self.intensity_g_per_kwh)
        else:
            operational = self.pue * math.fsum(device_g.values())
            ci = (
                operational / (energy / J_PER_KWH)
                if energy > 0
                else float(self.trace.mean(m.start_s, max(m.end_s, m.start_s)))
            )
        numbers = (shared_s, energy, operational, ci, *embodied, *device_j.values())
        if not all(math.isfinite(x) for x in numbers):
            raise ProfileError(
                f"CarbonMeter: window {name!r} gave a non-finite figure (energy {energy!r} J, "
                f"operational {operational!r} g); check the sampler's readings"
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
            attributed_s=shared_s,
            attributed_energy_j=device_j,
        )

    def _share(
        self,
        m: EnergyMeasurement,
        dev: str,
        energy_j: float,
        pieces: Sequence[Piece],
        shared_s: float,
    ) -> tuple[float, float]:
        """One device's energy (J) and trace carbon (g, before PUE) charged to the window: each
        stretch's energy from the samples times its weight, rescaled to the device's reported
        energy (equal for integrated power; counter-based samplers: the counters)."""
        if energy_j <= 0 or not pieces:
            return 0.0, 0.0
        t, p = (np.asarray(x, dtype=float) for x in m.samples.get(dev, ((), ())))
        if self.trace is None:  # one pass: E(b) - E(a) for every stretch
            edges = cumulative_j(t, p, [x for a, b, _ in pieces for x in (a, b)], m.sample_kind)
            piece_j = np.maximum(edges[1::2] - edges[0::2], 0.0).tolist()
            parts = [(e, 0.0, w) for e, (_, _, w) in zip(piece_j, pieces, strict=True)]
        else:
            parts = [(*_piece_energy_g(t, p, m.sample_kind, a, b, self.trace), w)
                     for a, b, w in pieces]  # fmt: skip
        e_sum = math.fsum(e for e, _, _ in parts)
        if e_sum > 0:
            scale = energy_j / e_sum
            share_j = scale * math.fsum(e * w for e, _, w in parts)
            share_g = scale * math.fsum(g * w for _, g, w in parts)
            return share_j, share_g
        # no samples to tell the stretches apart: share by time
        duration = m.duration_s
        share_j = energy_j * (shared_s / duration) if duration > 0 else energy_j
        if self.trace is None:
            return share_j, 0.0
        return share_j, self.trace.operational_carbon_g(share_j, m.start_s, max(m.end_s, m.start_s))
