"""What a power sampler measures: :class:`EnergyMeasurement`, and the trapezoid integration of
``(t_s, power_w)`` samples over a window whose edges fall between samples.

Power is taken as linear between samples, so the trapezoid rule is exact for it and a window
edge between two samples gets the power interpolated linearly there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from greenllm.checks import finite_number, plain_numbers
from greenllm.errors import ConfigError
from greenllm.units import MAX_DEVICE_POWER_W, MAX_TIME_S

__all__ = [
    "EnergyMeasurement",
    "MeasurementSummary",
    "cumulative_j",
    "epoch_clock",
    "measure_window",
    "trapezoid_j",
    "window_series",
]

MeasurementSummary: TypeAlias = dict[str, str | int | float | dict[str, float] | list[str]]
""":meth:`EnergyMeasurement.to_dict`: numbers, per-device ``{device: value}`` and the flags."""

_EPOCH_OFFSET_S = time.time() - time.monotonic()


def epoch_clock() -> float:
    """Seconds since the Unix epoch that never go backwards (monotonic clock + fixed offset)."""
    return time.monotonic() + _EPOCH_OFFSET_S


def _curve(func: str, times_s: object, power_w: object) -> tuple[np.ndarray, np.ndarray]:
    """``(times_s, power_w)`` as equal-length 1-D float arrays of finite numbers, or ConfigError."""
    if isinstance(times_s, np.ndarray) and isinstance(power_w, np.ndarray) \
            and times_s.dtype == np.float64 and power_w.dtype == np.float64:  # fmt: skip
        return _checked(func, times_s.reshape(-1), power_w.reshape(-1))
    for name, value in (("times_s", times_s), ("power_w", power_w)):
        if value is None or isinstance(value, (bool, str, bytes, int, float)):
            raise ConfigError(f"{func}: {name} = {value!r}: must be a sequence of numbers")
    try:
        raw_t, raw_p = np.asarray(times_s), np.asarray(power_w)
        for raw, given in ((raw_t, times_s), (raw_p, power_w)):
            if (raw.size and raw.dtype.kind not in "iuf") or not plain_numbers(given):
                raise TypeError("not numbers")
        t = raw_t.astype(float).reshape(-1)
        p = raw_p.astype(float).reshape(-1)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{func}: times_s and power_w must be numbers: {err}") from err
    return _checked(func, t, p)


def _checked(func: str, t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if t.shape != p.shape:
        raise ConfigError(f"{func}: {t.size} times_s for {p.size} power_w; need one per sample")
    if t.size == 0:
        return t, p
    # min and max are NaN when any element is, and NaN fails every comparison
    if not (t.min() >= -MAX_TIME_S and t.max() <= MAX_TIME_S):
        raise ConfigError(f"{func}: times_s must be finite seconds in [-{MAX_TIME_S:g}, "
                          f"{MAX_TIME_S:g}]")  # fmt: skip
    if not (p.min() >= 0 and p.max() <= MAX_DEVICE_POWER_W):
        raise ConfigError(f"{func}: power_w must be finite watts in [0, {MAX_DEVICE_POWER_W:g}]")
    return t, p


def trapezoid_j(
    times_s: Sequence[float] | np.ndarray, power_w: Sequence[float] | np.ndarray
) -> float:
    """Trapezoid rule: ``sum (p_i + p_{i+1}) / 2 * (t_{i+1} - t_i)`` J; exact for linear power."""
    t, p = _curve("trapezoid_j", times_s, power_w)
    if t.size < 2:
        return 0.0
    return math.fsum(((p[:-1] + p[1:]) * 0.5 * np.diff(t)).tolist())


def cumulative_j(
    times_s: Sequence[float] | np.ndarray,
    power_w: Sequence[float] | np.ndarray,
    at_s: Sequence[float] | np.ndarray,
    kind: str = "instant",
) -> np.ndarray:
    """Energy (J) from the first sample to each time of ``at_s`` (clipped to the samples' span),
    so the energy of ``[a, b]`` is ``E(b) - E(a)``: one pass over the samples for any number of
    windows. ``kind="instant"``: power linear between samples (the trapezoid rule, as
    :func:`trapezoid_j`); ``"interval_mean"``: ``power_w[i]`` held over ``(t[i-1], t[i]]``."""
    t, p = _curve("cumulative_j", times_s, power_w)
    if kind not in ("instant", "interval_mean"):
        raise ConfigError(f"cumulative_j: kind = {kind!r}: use 'instant' or 'interval_mean'")
    x = np.asarray(at_s, dtype=float).reshape(-1)
    if t.size < 2:
        return np.zeros(x.size)
    dt = np.diff(t)
    seg_j = (p[:-1] + p[1:]) * 0.5 * dt if kind == "instant" else p[1:] * dt
    at_sample = np.concatenate(([0.0], np.cumsum(seg_j)))
    x = np.clip(x, t[0], t[-1])
    i = np.clip(np.searchsorted(t, x, side="right") - 1, 0, t.size - 2)  # x in [t[i], t[i+1]]
    into = x - t[i]
    if kind == "instant":
        p_x = p[i] + (p[i + 1] - p[i]) * np.divide(into, dt[i], out=np.zeros_like(into),
                                                   where=dt[i] > 0)  # fmt: skip
        return at_sample[i] + (p[i] + p_x) * 0.5 * into
    return at_sample[i] + p[i + 1] * into


def window_series(
    times_s: Sequence[float] | np.ndarray,
    power_w: Sequence[float] | np.ndarray,
    t0_s: float,
    t1_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The samples inside ``[t0_s, t1_s]`` with the power at both edges interpolated linearly.

    The window is clipped to the samples' span (no extrapolation): a device lost mid-window
    contributes up to its last sample. Empty arrays when the window misses the samples.
    """
    t, p = _curve("window_series", times_s, power_w)
    t0_s = finite_number("t0_s", t0_s, -MAX_TIME_S, MAX_TIME_S, where="window_series")
    t1_s = finite_number("t1_s", t1_s, -MAX_TIME_S, MAX_TIME_S, where="window_series")
    if t.size == 0:
        return np.zeros(0), np.zeros(0)
    a, b = max(float(t0_s), float(t[0])), min(float(t1_s), float(t[-1]))
    if b < a:
        return np.zeros(0), np.zeros(0)
    inner = (t > a) & (t < b)
    pa, pb = float(np.interp(a, t, p)), float(np.interp(b, t, p))
    if b == a:
        return np.array([a]), np.array([pa])
    return np.concatenate(([a], t[inner], [b])), np.concatenate(([pa], p[inner], [pb]))


@dataclass(frozen=True)
class EnergyMeasurement:
    """What one window measured. Per-device mappings are keyed by the sampler's device names.

    ``counter_energy_j`` holds a hardware energy counter's reading over the window where the
    sampler has one as a cross-check (NVML); ``flags`` name anything to distrust, e.g.
    ``device_lost:gpu1``, ``partial:gpu1`` (samples do not cover the window), ``no_samples:gpu1``,
    ``read_errors:gpu0``, ``power_averaged_1s:gpu0``, ``unmeasured`` (a sampler with no device).
    ``samples`` holds the window's ``(times_s, power_w)`` series per device (edges included);
    ``sample_kind`` says how to read it: ``"instant"`` (power at that time, linear in between)
    or ``"interval_mean"`` (mean power since the previous sample, from an energy counter).
    """

    name: str
    start_s: float
    end_s: float
    energy_j: Mapping[str, float]
    mean_power_w: Mapping[str, float]
    peak_power_w: Mapping[str, float]
    n_samples: int
    counter_energy_j: Mapping[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    samples: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )
    sample_kind: str = "instant"

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def total_energy_j(self) -> float:
        """Energy summed over devices, J."""
        return math.fsum(self.energy_j.values())

    @property
    def lost_devices(self) -> tuple[str, ...]:
        return tuple(f.split(":", 1)[1] for f in self.flags if f.startswith("device_lost:"))

    @property
    def measured(self) -> bool:
        """False when no device was measured (a :class:`NullSampler`)."""
        return "unmeasured" not in self.flags

    def to_dict(self) -> MeasurementSummary:
        """JSON-ready summary (without the raw samples)."""
        return {
            "name": self.name,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "duration_s": self.duration_s,
            "energy_j": dict(self.energy_j),
            "total_energy_j": self.total_energy_j,
            "mean_power_w": dict(self.mean_power_w),
            "peak_power_w": dict(self.peak_power_w),
            "n_samples": self.n_samples,
            "counter_energy_j": dict(self.counter_energy_j),
            "flags": list(self.flags),
        }


def measure_window(
    name: str,
    t0: float,
    t1: float,
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    counters_start_j: Mapping[str, float],
    counters_end_j: Mapping[str, float],
    *,
    counter_is_primary: bool = False,
    lost: Collection[str] = (),
    errors: Mapping[str, int] | None = None,
    device_flags: Mapping[str, Collection[str]] | None = None,
) -> EnergyMeasurement:
    """Window ``[t0, t1]`` of per-device sample ``series`` (one entry per device) as an
    :class:`EnergyMeasurement`: trapezoid energy (counter differences when
    ``counter_is_primary``), mean and peak power, and the flags listed there."""
    errors, device_flags = errors or {}, device_flags or {}
    duration = t1 - t0
    energy, mean, peak, counter_j, samples = {}, {}, {}, {}, {}
    flags: list[str] = [] if series else ["unmeasured"]
    n_samples = 0
    for dev in series:
        ts, ps = series[dev]
        t, p = window_series(ts, ps, t0, t1)
        samples[dev] = (t, p)
        n_samples = max(n_samples, int(np.count_nonzero((ts >= t0) & (ts <= t1))))
        covered = float(t[-1] - t[0]) if t.size else 0.0
        if dev in counters_end_j and dev in counters_start_j:
            counter_j[dev] = counters_end_j[dev] - counters_start_j[dev]
        if counter_is_primary and dev in counter_j:
            energy[dev] = counter_j.pop(dev)
            mean[dev] = energy[dev] / duration if duration > 0 else 0.0
        else:
            energy[dev] = trapezoid_j(t, p)
            mean[dev] = energy[dev] / covered if covered > 0 else (float(p[0]) if p.size else 0.0)
            if not t.size:
                flags.append(f"no_samples:{dev}")
            elif duration > 0 and covered < duration * (1.0 - 1e-9):
                flags.append(f"partial:{dev}")
        peak[dev] = float(p.max()) if p.size else mean[dev]
        if dev in lost:
            flags.append(f"device_lost:{dev}")
        if errors.get(dev, 0) > 0:
            flags.append(f"read_errors:{dev}")
        flags.extend(f"{f}:{dev}" for f in sorted(device_flags.get(dev, ())))
    return EnergyMeasurement(
        name=name,
        start_s=t0,
        end_s=t1,
        energy_j=energy,
        mean_power_w=mean,
        peak_power_w=peak,
        n_samples=n_samples,
        counter_energy_j=counter_j,
        flags=tuple(flags),
        samples=samples,
        sample_kind="interval_mean" if counter_is_primary else "instant",
    )
