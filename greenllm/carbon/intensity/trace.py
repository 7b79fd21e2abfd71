"""Grid carbon intensity over time (the ``CI``/``alpha`` of Eq. 2 and 5) and by region.

:class:`CarbonIntensityTrace` is a piecewise-constant (step) series: the sample at ``t_i`` holds
on ``[t_i, t_{i+1})``, so hours missing from a source hold the previous hour's value. The
annual per-region figures are in :mod:`greenllm.carbon.intensity.regions`.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from greenllm.carbon.accounting import operational_carbon_g
from greenllm.carbon.intensity.data import TRACE_REGIONS, canonical_code, data_text
from greenllm.errors import ConfigError
from greenllm.units import J_PER_KWH

__all__ = ["CarbonIntensityTrace"]

logger = logging.getLogger(__name__)


def _parse_timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:  # naive timestamps are taken as UTC
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _parse_csv(lines: Iterable[str], source: str) -> tuple[np.ndarray, np.ndarray]:
    reader = csv.reader(lines)
    header = [h.strip().lower() for h in next(reader, [])]
    if "timestamp" not in header or "g_per_kwh" not in header:
        raise ConfigError(
            f"{source}, line 1: header {header} must name the columns 'timestamp' "
            "(ISO-8601 or epoch seconds) and 'g_per_kwh'"
        )
    i_t, i_g = header.index("timestamp"), header.index("g_per_kwh")
    times: list[float] = []
    values: list[float] = []
    for row in reader:
        if not row or not "".join(row).strip():
            continue
        where = f"{source}, line {reader.line_num}"
        try:
            t, g = _parse_timestamp(row[i_t]), float(row[i_g])
        except (ValueError, IndexError) as err:
            raise ConfigError(
                f"{where}: cannot read {row!r} as (timestamp, g_per_kwh): {err}"
            ) from err
        if not (math.isfinite(t) and math.isfinite(g) and g >= 0.0):
            raise ConfigError(f"{where}: g_per_kwh={g} must be finite and >= 0")
        if times and t <= times[-1]:
            raise ConfigError(
                f"{where}: timestamp {row[i_t]!r} is not after the previous one; "
                "sort the rows by time and drop duplicates"
            )
        times.append(t)
        values.append(g)
    if not times:
        raise ConfigError(f"{source}: no data rows after the header")
    return np.asarray(times, dtype=float), np.asarray(values, dtype=float)


class CarbonIntensityTrace:
    """Step-wise grid carbon intensity over time (g/kWh).

    ``g_per_kwh[i]`` holds on ``[timestamps_s[i], timestamps_s[i+1])``; the last sample holds
    for one sample period (the median spacing, 1 h for hourly data) up to :attr:`end_s`. Outside
    ``[start_s, end_s)`` the trace holds its first/last value, or with ``periodic=True`` it
    repeats (e.g. a 2022 trace reused for any year). Times are epoch seconds (UTC).
    """

    __slots__ = ("_cum", "_g", "_t", "end_s", "name", "periodic")

    def __init__(
        self,
        timestamps_s: np.ndarray | Iterable[float],
        g_per_kwh: np.ndarray | Iterable[float],
        *,
        periodic: bool = False,
        name: str = "custom",
    ) -> None:
        t = np.array(timestamps_s, dtype=float).reshape(-1)
        g = np.array(g_per_kwh, dtype=float).reshape(-1)
        if t.size == 0 or t.shape != g.shape:
            raise ConfigError(
                f"trace {name!r}: need >= 1 sample and as many timestamps as values "
                f"(got {t.size} and {g.size})"
            )
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(g)) and np.all(g >= 0)):
            raise ConfigError(f"trace {name!r}: timestamps and g_per_kwh must be finite, g >= 0")
        if np.any(np.diff(t) <= 0):
            raise ConfigError(f"trace {name!r}: timestamps_s must be strictly increasing")
        period = float(np.median(np.diff(t))) if t.size > 1 else 3600.0
        t.flags.writeable = g.flags.writeable = False
        self._t, self._g, self.name, self.periodic = t, g, name, periodic
        self.end_s = float(t[-1] + period)
        self._cum = np.concatenate(([0.0], np.cumsum(g[:-1] * np.diff(t))))

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def constant(cls, g_per_kwh: float) -> CarbonIntensityTrace:
        """A flat trace: ``at(t) == g_per_kwh`` for every ``t``."""
        return cls([0.0], [g_per_kwh], name=f"constant {g_per_kwh:g} g/kWh")

    @classmethod
    def from_csv(cls, path: str | Path, *, periodic: bool = False) -> CarbonIntensityTrace:
        """Read a CSV with columns ``timestamp`` (ISO-8601, naive = UTC; or epoch s), ``g_per_kwh``.

        Rows must be in strictly increasing time; a bad row raises ConfigError naming its line.
        """
        try:
            with Path(path).open(newline="", encoding="utf-8") as fh:
                t, g = _parse_csv(fh, str(path))
        except OSError as err:
            raise ConfigError(f"cannot read carbon-intensity CSV {str(path)!r}: {err}") from err
        return cls(t, g, periodic=periodic, name=Path(path).stem)

    @classmethod
    def from_region(cls, code: str, *, periodic: bool = True) -> CarbonIntensityTrace:
        """The shipped 2022 hourly trace of a US balancing authority (see :data:`TRACE_REGIONS`)."""
        key = canonical_code(code)
        if key not in TRACE_REGIONS:
            hint = (
                " For a region with only an annual figure use "
                f"CarbonIntensityTrace.constant(carbon_intensity({key!r}))."
            )
            raise ConfigError(
                f"no hourly trace for region {code!r}; traces exist for "
                f"{', '.join(TRACE_REGIONS)}.{hint}"
            )
        t, g = _load_region(key)
        return cls(t, g, periodic=periodic, name=f"{key}-2022")

    # ---- queries ------------------------------------------------------------------------------
    @property
    def timestamps_s(self) -> np.ndarray:
        return self._t

    @property
    def g_per_kwh(self) -> np.ndarray:
        return self._g

    @property
    def start_s(self) -> float:
        return float(self._t[0])

    def __len__(self) -> int:
        return int(self._t.size)

    def __repr__(self) -> str:
        return (
            f"CarbonIntensityTrace({self.name!r}, {len(self)} samples, "
            f"{self._g.min():.1f}..{self._g.max():.1f} g/kWh, periodic={self.periodic})"
        )

    def _wrap(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(periods skipped, time folded into [start, end)) when periodic; (0, t) otherwise."""
        if not self.periodic:
            return np.zeros_like(t), t
        span = self.end_s - self.start_s
        k = np.floor((t - self.start_s) / span)
        return k, t - k * span

    def _index(self, t: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self._t, t, side="right") - 1, 0, None)

    def at(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """Intensity (g/kWh) at time(s) ``t_s``; vectorised."""
        _, t = self._wrap(np.asarray(t_s, dtype=float))
        out = self._g[self._index(t)]
        return float(out) if out.ndim == 0 else out

    def _integral(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``F(t) = int_{start}^{t} g dt`` in (g/kWh)*s (exact), and a piece id for each t."""
        k, t = self._wrap(t_s)
        i = self._index(t)
        f = self._cum[i] + self._g[i] * (t - self._t[i])
        if self.periodic:
            f = f + k * (self._cum[-1] + self._g[-1] * (self.end_s - self._t[-1]))
        return f, k * self._t.size + i

    def mean(self, t0_s: float | np.ndarray, t1_s: float | np.ndarray) -> float | np.ndarray:
        """Time-weighted mean intensity over ``[t0_s, t1_s]`` (g/kWh); ``at(t0)`` if equal."""
        t0, t1 = np.broadcast_arrays(np.asarray(t0_s, float), np.asarray(t1_s, float))
        if np.any(t1 < t0) or not np.all(np.isfinite(t0) & np.isfinite(t1)):
            raise ConfigError("mean(t0_s, t1_s): need finite times with t1_s >= t0_s")
        (f0, piece0), (f1, piece1) = self._integral(t0), self._integral(t1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (f1 - f0) / (t1 - t0)
        # Inside one constant piece the mean is that value exactly (no cancellation error).
        out = np.where(piece0 == piece1, self.at(t0), out)
        return float(out) if out.ndim == 0 else out

    def operational_carbon_g(self, energy_j: float, t0_s: float, t1_s: float) -> float:
        """Eq. 2 for ``energy_j`` spread uniformly over ``[t0_s, t1_s]``: kWh x mean intensity."""
        return float(operational_carbon_g(energy_j, float(self.mean(t0_s, t1_s))))

    def change_points(self, t0_s: float, t1_s: float) -> np.ndarray:
        """Times strictly inside ``(t0_s, t1_s)`` where the intensity may change."""
        if not self.periodic:
            pts = self._t[1:]
        else:
            span = self.end_s - self.start_s
            k0 = math.floor((t0_s - self.start_s) / span)
            k1 = math.floor((t1_s - self.start_s) / span)
            pts = (self._t[None, :] + span * np.arange(k0, k1 + 1)[:, None]).ravel()
        return pts[(pts > t0_s) & (pts < t1_s)]

    def operational_carbon_from_power_g(self, times_s: np.ndarray, power_w: np.ndarray) -> float:
        """Exact ``int P(t) CI(t) dt`` in g: power linear between samples, intensity stepwise."""
        t = np.asarray(times_s, dtype=float).reshape(-1)
        p = np.asarray(power_w, dtype=float).reshape(-1)
        if t.size < 2 or t.shape != p.shape:
            raise ConfigError(
                f"need >= 2 power samples and as many times as powers (got {t.size}, {p.size})"
            )
        if np.any(np.diff(t) <= 0) or not np.all(np.isfinite(p) & (p >= 0)):
            raise ConfigError("times_s must be strictly increasing and power_w finite and >= 0")
        edges = np.union1d(t, self.change_points(float(t[0]), float(t[-1])))
        pw = np.interp(edges, t, p)
        g = np.asarray(self.at((edges[:-1] + edges[1:]) / 2.0))
        return float(np.sum(g * (pw[:-1] + pw[1:]) / 2.0 * np.diff(edges)) / J_PER_KWH)

    # ---- planner helpers ----------------------------------------------------------------------
    def segments(
        self, t0_s: float | None = None, t1_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Constant pieces ``(starts_s, ends_s, g_per_kwh)`` covering ``[t0_s, t1_s)``."""
        a = self.start_s if t0_s is None else float(t0_s)
        b = self.end_s if t1_s is None else float(t1_s)
        if not b > a:
            raise ConfigError(f"segments: need t1_s > t0_s (got {a}, {b})")
        edges = np.concatenate(([a], self.change_points(a, b), [b]))
        mids = (edges[:-1] + edges[1:]) / 2.0  # robust to round-off at periodic boundaries
        return edges[:-1], edges[1:], np.asarray(self.at(mids))

    def hourly(
        self, t0_s: float | None = None, t1_s: float | None = None, step_s: float = 3600.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(starts_s, mean g/kWh)`` for consecutive ``step_s`` windows over ``[t0_s, t1_s)``."""
        a = self.start_s if t0_s is None else float(t0_s)
        b = self.end_s if t1_s is None else float(t1_s)
        if not (b > a and step_s > 0):
            raise ConfigError(f"hourly: need t1_s > t0_s and step_s > 0 (got {a}, {b}, {step_s})")
        starts = np.arange(a, b, step_s)
        return starts, np.asarray(self.mean(starts, np.minimum(starts + step_s, b)))

    def daily_profile(self, utc_offset_h: float = 0.0) -> np.ndarray:
        """Mean intensity for each of the 24 local hours of the day over the trace's span."""
        starts, means = self.hourly()
        hour = np.floor((starts + utc_offset_h * 3600.0) / 3600.0).astype(int) % 24
        return np.bincount(hour, weights=means, minlength=24) / np.maximum(
            np.bincount(hour, minlength=24), 1
        )


@functools.cache
def _load_region(code: str) -> tuple[np.ndarray, np.ndarray]:
    name = f"{code}-2022-hourly.csv"
    return _parse_csv(io.StringIO(data_text(name)), f"greenllm/carbon/data/{name}")
