"""Samplers without hardware: null (nothing to measure), modelled (power as a function of time,
for the simulator) and replay (a recorded trace, for tests), plus the trace CSV format.

Trace CSV: a header ``time_s,device,power_w`` then one row per sample; each device's rows in
strictly increasing time. Power between samples is linear, as the trapezoid rule assumes.
"""

from __future__ import annotations

import csv
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from greenllm.checks import finite_number
from greenllm.energy.sampler import PowerSampler, Sample
from greenllm.errors import ConfigError, ProfileError
from greenllm.units import MAX_DEVICE_POWER_W, MAX_REPLAY_SPEED

__all__ = [
    "Curve",
    "GPUPowerTrace",
    "ModelledSampler",
    "NullSampler",
    "PowerTraceRun",
    "ReplaySampler",
    "read_power_csv",
    "write_power_csv",
]

Series: TypeAlias = dict[str, tuple[np.ndarray, np.ndarray]]
PowerFn: TypeAlias = Callable[[float], "float | Mapping[str, float] | Sequence[float]"]
Curve: TypeAlias = tuple[npt.ArrayLike, npt.ArrayLike]
"""A power curve ``(times_s, power_w)``: two 1-D sequences (power may be 2-D, a row a device)."""


class GPUPowerTrace(Protocol):
    """What :meth:`ModelledSampler.from_run` reads of one GPU of a run
    (:class:`~greenllm.backends.base.GPUTrace`)."""

    @property
    def gpu(self) -> str: ...
    @property
    def allocated_s(self) -> float: ...
    @property
    def energy_j(self) -> float: ...
    @property
    def power_times_s(self) -> np.ndarray: ...
    @property
    def power_w(self) -> np.ndarray: ...


class PowerTraceRun(Protocol):
    """A run with per-GPU power traces (:class:`~greenllm.backends.base.RunResult`)."""

    @property
    def gpus(self) -> Sequence[GPUPowerTrace]: ...


def _series(
    times_s: npt.ArrayLike, power_w: npt.ArrayLike, where: str
) -> tuple[np.ndarray, np.ndarray]:
    try:
        t = np.array(times_s, dtype=float).reshape(-1)
        p = np.array(power_w, dtype=float).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: times_s and power_w must be numbers: {err}") from err
    if t.size == 0 or t.shape != p.shape:
        raise ConfigError(
            f"{where}: need >= 1 sample and as many times as powers (got {t.size} and {p.size})"
        )
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p)) and np.all(p >= 0)):
        raise ConfigError(f"{where}: times must be finite and power_w finite and >= 0")
    if np.any(p > MAX_DEVICE_POWER_W):
        raise ConfigError(f"{where}: power_w must be in [0, {MAX_DEVICE_POWER_W:g}] W")
    if np.any(np.diff(t) <= 0):
        raise ConfigError(f"{where}: times_s must be strictly increasing")
    return t, p


def _to_series(source: object, device: str, where: str) -> Series:
    """``(times, power)`` (power 1-D, or 2-D with one row per device) or ``{device: (t, p)}``."""
    if isinstance(source, Mapping):
        if not source:
            raise ConfigError(f"{where}: the mapping of devices to (times_s, power_w) is empty")
        curves: Iterable[tuple[object, Curve]] = source.items()
        return {str(d): _series(*tp, f"{where}[{d!r}]") for d, tp in curves}
    if not (isinstance(source, (tuple, list)) and len(source) == 2):
        raise ConfigError(
            f"{where}: expected (times_s, power_w) or {{device: (times_s, power_w)}}"
            f", got {type(source).__name__}"
        )
    try:
        power = np.asarray(source[1], dtype=float)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: power_w must be numbers: {err}") from err
    if power.ndim == 2:
        return {
            f"{device}{i}": _series(source[0], row, f"{where} row {i}")
            for i, row in enumerate(power)
        }
    return {f"{device}0": _series(source[0], power, where)}


def read_power_csv(path: str | Path) -> Series:
    """Read a trace CSV (``time_s,device,power_w``) into ``{device: (times_s, power_w)}``."""
    rows: dict[str, tuple[list[float], list[float]]] = {}
    try:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if header[:3] != ["time_s", "device", "power_w"]:
                raise ProfileError(f"{path}, line 1: header {header} must be time_s,device,power_w")
            for row in reader:
                if not row or not "".join(row).strip():
                    continue
                try:
                    t, dev, p = float(row[0]), row[1].strip(), float(row[2])
                except (ValueError, IndexError) as err:
                    raise ProfileError(
                        f"{path}, line {reader.line_num}: cannot read {row!r} as "
                        f"(time_s, device, power_w): {err}"
                    ) from err
                ts, ps = rows.setdefault(dev, ([], []))
                if not (math.isfinite(t) and math.isfinite(p) and p >= 0):
                    raise ProfileError(
                        f"{path}, line {reader.line_num}: need finite time_s and "
                        f"power_w >= 0, got {row!r}"
                    )
                if ts and t <= ts[-1]:
                    raise ProfileError(
                        f"{path}, line {reader.line_num}: time_s {t!r} of device "
                        f"{dev!r} is not after its previous sample; sort by time"
                    )
                ts.append(t)
                ps.append(p)
    except OSError as err:
        raise ProfileError(f"cannot read power trace {str(path)!r}: {err}") from err
    if not rows:
        raise ProfileError(f"{path}: no samples after the header")
    return {d: (np.asarray(ts), np.asarray(ps)) for d, (ts, ps) in rows.items()}


def write_power_csv(path: str | Path, series: Mapping[str, Curve]) -> None:
    """Write ``{device: (times_s, power_w)}`` (e.g. ``EnergyMeasurement.samples``) as a trace CSV;
    floats are written with ``repr`` so a replay reads back the same numbers."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time_s", "device", "power_w"])
        for dev, (times, power) in series.items():
            for t, p in zip(np.asarray(times, float), np.asarray(power, float), strict=True):
                writer.writerow([repr(float(t)), dev, repr(float(p))])


def _watts(value: object) -> float:
    """A power function's reading as watts; NaN (skipped and flagged ``read_errors``) when it
    is not a plain number."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)
        except (OverflowError, TypeError, ValueError):
            return math.nan
    return math.nan


class NullSampler(PowerSampler):
    """No devices: every window has zero energy and the flag ``unmeasured``."""

    uses_thread = False

    def _open(self) -> Sequence[str]:
        return ()

    def _poll(self, now_s: float, edge: bool) -> Iterable[Sample]:
        return ()


class _CurveSampler(PowerSampler):
    """Plays piecewise-linear curves: every breakpoint up to ``now`` is recorded with its own
    time (so windows integrate the curve exactly); at window edges the curve is interpolated."""

    _hold = True  # hold the first/last value outside the curve (else: no samples there)

    def _init_curves(self, series: Series) -> None:
        self._curves: Series = series
        self._cursor: dict[str, int] = {d: 0 for d in series}

    def _origin_s(self) -> float:
        """Sampler time of curve time 0."""
        return 0.0

    def _curve_samples(self, now_s: float, edge: bool) -> list[Sample]:
        out: list[Sample] = []
        origin = self._origin_s()
        for dev, (t, p) in self._curves.items():
            i = self._cursor[dev]
            while i < t.size and origin + t[i] <= now_s:
                out.append((dev, origin + float(t[i]), float(p[i])))
                i += 1
            self._cursor[dev] = i
            tau = now_s - origin
            inside = t[0] <= tau <= t[-1]
            if (edge or self._hold) and (inside or self._hold):
                out.append((dev, now_s, float(np.interp(tau, t, p))))
        return out


class ModelledSampler(_CurveSampler):
    """Power from a model, as a function of the seconds since ``start()``.

    ``power`` is a constant (W), a function ``f(elapsed_s)`` returning W (one device) or a
    mapping/sequence over ``devices``, or curves ``(times_s, power_w)`` / ``{device: (t, p)}``
    with ``times_s`` since start (linear between samples, held at the ends): e.g. a simulator
    run's ``GPUTrace.power_times_s``/``power_w`` (see :meth:`from_run`). Timestamps are epoch.
    """

    def __init__(
        self,
        power: float | PowerFn | Curve | Mapping[str, Curve],
        *,
        devices: Sequence[str] | None = None,
        period_s: float = 0.2,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(period_s, clock=clock)
        self._fn: PowerFn | None = None
        self._t_start_s: float = 0.0
        if devices is not None and (
            isinstance(devices, (str, bytes))
            or not isinstance(devices, Sequence)
            or not all(isinstance(d, str) and d for d in devices)
        ):
            raise ConfigError(
                f"ModelledSampler: devices = {devices!r}: must be a list of device names"
            )
        if power is None or isinstance(power, (bool, str, bytes)):
            raise ConfigError(
                f"ModelledSampler: power = {power!r}: must be watts in "
                f"[0, {MAX_DEVICE_POWER_W:g}], "
                "a function of elapsed seconds, or (times_s, power_w) curves"
            )
        if isinstance(power, numbers.Real):
            watts = finite_number(
                "power (W)", power, 0.0, MAX_DEVICE_POWER_W, where="ModelledSampler"
            )
            names = tuple(devices or ("model0",))
            self._init_curves({d: (np.array([0.0]), np.array([watts])) for d in names})
        elif callable(power):
            self._fn, names = power, tuple(devices or ("model0",))
            self._init_curves({})
        else:
            curves = _to_series(power, "model", "ModelledSampler")
            if devices is not None:
                if len(devices) != len(curves):
                    raise ConfigError(
                        f"ModelledSampler: {len(devices)} device names for {len(curves)} curves"
                    )
                curves = dict(zip(devices, curves.values(), strict=True))
            names = tuple(curves)
            self._init_curves(curves)
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"ModelledSampler: devices = {names!r}: need unique names")
        self._model_names: tuple[str, ...] = names

    @classmethod
    def from_run(
        cls,
        run: PowerTraceRun,
        *,
        period_s: float = 0.2,
        clock: Callable[[], float] | None = None,
    ) -> ModelledSampler:
        """Replay a :class:`~greenllm.backends.base.RunResult`'s per-GPU power traces in real time
        (devices ``gpu0:A100``, ...); a GPU without samples draws its mean power throughout."""
        curves: dict[str, Curve] = {}
        for i, g in enumerate(run.gpus):
            if len(g.power_times_s):
                curves[f"gpu{i}:{g.gpu}"] = (g.power_times_s, g.power_w)
            else:
                mean_w = g.energy_j / g.allocated_s if g.allocated_s > 0 else 0.0
                curves[f"gpu{i}:{g.gpu}"] = ([0.0], [mean_w])
        return cls(curves, period_s=period_s, clock=clock)

    def _open(self) -> Sequence[str]:
        self._t_start_s = self.now_s()
        self._cursor = {d: 0 for d in self._curves}
        return self._model_names

    def _origin_s(self) -> float:
        return self._t_start_s

    def _poll(self, now_s: float, edge: bool) -> Iterable[Sample]:
        if self._fn is None:
            return self._curve_samples(now_s, edge)
        value = self._fn(now_s - self._t_start_s)
        if isinstance(value, Mapping):
            return [(d, now_s, _watts(value[d])) for d in self._model_names if d in value]
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        if isinstance(value, (list, tuple, np.ndarray)) and len(value) == len(self._model_names):
            return [(d, now_s, _watts(v)) for d, v in zip(self._model_names, value, strict=True)]
        return [(d, now_s, _watts(value)) for d in self._model_names]  # one value for all


class ReplaySampler(_CurveSampler):
    """Plays a recorded power trace (CSV path, ``(times_s, power_w)`` or ``{device: (t, p)}``).

    The sampler's clock is the trace's: it reads the trace's first time at ``start()`` and then
    advances ``speed`` trace seconds per second of ``clock``. Every trace sample is recorded
    with its own time, so a window over the trace integrates it exactly; outside the trace a
    device has no samples (windows are flagged ``partial``).
    """

    _hold = False

    def __init__(
        self,
        source: str | Path | Curve | Mapping[str, Curve],
        *,
        speed: float = 1.0,
        period_s: float = 0.2,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(period_s, clock=clock)
        self.speed: float = finite_number(
            "speed", speed, 0.0, MAX_REPLAY_SPEED, lo_open=True, where="ReplaySampler"
        )
        self._path: Path | None = None
        if isinstance(source, (str, Path)):
            self._path = Path(source)
            self._init_curves({})
        else:
            self._init_curves(_to_series(source, "replay", "ReplaySampler"))
        self._c0: float = 0.0
        self._trace_t0: float = 0.0

    def _open(self) -> Sequence[str]:
        if self._path is not None:
            self._init_curves(read_power_csv(self._path))
        self._cursor = {d: 0 for d in self._curves}
        self._trace_t0 = min(float(t[0]) for t, _ in self._curves.values())
        self._c0 = self._clock()
        return tuple(self._curves)

    def now_s(self) -> float:
        return self._trace_t0 + (self._clock() - self._c0) * self.speed

    def _poll(self, now_s: float, edge: bool) -> Iterable[Sample]:
        return self._curve_samples(now_s, edge)
