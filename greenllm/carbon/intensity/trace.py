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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.carbon.accounting import operational_carbon_g
from greenllm.carbon.intensity.data import TRACE_REGIONS, canonical_code, data_text
from greenllm.checks import finite_array
from greenllm.errors import ConfigError
from greenllm.units import J_PER_KWH, MAX_INTENSITY_G_PER_KWH, MAX_TIME_S

__all__ = ["CarbonIntensityTrace"]

logger = logging.getLogger(__name__)

#: Most change points (or hourly windows) one query may list: about 114 years of hourly data.
MAX_CHANGE_POINTS = 1_000_000
#: Largest power (W) operational_carbon_from_power_g takes (a 1 GW site).
MAX_POWER_W = 1e9


def _as_array(value: object) -> object:
    """Materialise an iterable (a generator, a range) so that numpy sees its elements."""
    if isinstance(value, (np.ndarray, list, tuple, str, bytes)) or value is None:
        return value
    if isinstance(value, Iterable):
        return list(value)
    return value


#: Longest field of a trace CSV (characters); a longer one is refused with its line.
MAX_CSV_FIELD_CHARS = 1024


#: The range of every time (epoch seconds, durations, offsets) a trace takes.
_TIMES = (-MAX_TIME_S, MAX_TIME_S)


def _time(func: str, name: str, value: object) -> float:
    """One time (a number, not an array) checked by :func:`finite_array`, as a float."""
    arr = finite_array(name, value, *_TIMES, where=func)
    if arr.ndim:
        raise ConfigError(f"{func}: {name} = {value!r:.200}: must be a single number")
    return float(arr)


def _utf8_lines(fh: Iterable[bytes], source: str) -> Iterable[str]:
    """The lines of a binary file as text; ConfigError naming the line that is not UTF-8."""
    for number, raw in enumerate(fh, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{source}, line {number}: not valid UTF-8 ({err})") from err


def _parse_timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:  # naive timestamps are taken as UTC
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _parse_csv(lines: Iterable[str], source: str) -> tuple[np.ndarray, np.ndarray]:
    reader = csv.reader(lines)
    try:
        return _parse_rows(reader, source)
    except csv.Error as err:
        raise ConfigError(f"{source}, line {reader.line_num}: not valid CSV ({err})") from err


def _parse_rows(reader: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    header = [h.strip().lower()[:MAX_CSV_FIELD_CHARS] for h in next(reader, [])]
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
        longest = max(len(f) for f in row)
        if longest > MAX_CSV_FIELD_CHARS:
            raise ConfigError(
                f"{where}: a field of {longest} characters (at most {MAX_CSV_FIELD_CHARS})"
            )
        try:
            t, g = _parse_timestamp(row[i_t]), float(row[i_g])
        except (ValueError, IndexError, OverflowError, OSError) as err:
            raise ConfigError(
                f"{where}: cannot read {row!r:.300} as (timestamp, g_per_kwh): {err}"
            ) from err
        if not (math.isfinite(t) and abs(t) <= MAX_TIME_S):
            raise ConfigError(
                f"{where}: timestamp {row[i_t]!r} = {t} s must be finite epoch seconds "
                f"with |timestamp| <= {MAX_TIME_S:g}"
            )
        if not (math.isfinite(g) and 0.0 <= g <= MAX_INTENSITY_G_PER_KWH):
            raise ConfigError(
                f"{where}: g_per_kwh = {g}: must be finite with "
                f"0 <= g_per_kwh <= {MAX_INTENSITY_G_PER_KWH:g}"
            )
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
        if not isinstance(name, str) or len(name) > 256:
            raise ConfigError(f"trace name = {name!r:.100}: must be a string of <= 256 chars")
        if not isinstance(periodic, (bool, np.bool_)):
            raise ConfigError(f"trace {name!r}: periodic = {periodic!r}: must be True or False")
        where = f"trace {name!r}"
        t = finite_array("timestamps_s", _as_array(timestamps_s), *_TIMES, where=where)
        g = finite_array(
            "g_per_kwh", _as_array(g_per_kwh), 0.0, MAX_INTENSITY_G_PER_KWH, where=where
        )
        t, g = t.reshape(-1), g.reshape(-1)
        if t.size == 0 or t.shape != g.shape:
            raise ConfigError(
                f"trace {name!r}: need >= 1 sample and as many timestamps as values "
                f"(got {t.size} and {g.size})"
            )
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
        if isinstance(g_per_kwh, (bool, str, bytes)) or not isinstance(
            g_per_kwh, (int, float, np.integer, np.floating)
        ):
            raise ConfigError(
                f"constant: g_per_kwh = {g_per_kwh!r:.100}: must be a number with "
                f"0 <= g_per_kwh <= {MAX_INTENSITY_G_PER_KWH:g}"
            )
        try:
            value = float(g_per_kwh)
        except OverflowError:
            value = math.inf
        if not 0.0 <= value <= MAX_INTENSITY_G_PER_KWH:
            raise ConfigError(
                f"constant: g_per_kwh = {value!r}: must be finite with "
                f"0 <= g_per_kwh <= {MAX_INTENSITY_G_PER_KWH:g}"
            )
        return cls([0.0], [float(g_per_kwh)], name=f"constant {float(g_per_kwh):g} g/kWh")

    @classmethod
    def from_csv(cls, path: str | Path, *, periodic: bool = False) -> CarbonIntensityTrace:
        """Read a CSV with columns ``timestamp`` (ISO-8601, naive = UTC; or epoch s), ``g_per_kwh``.

        Rows must be in strictly increasing time; a bad row raises ConfigError naming its line.
        """
        if not isinstance(path, (str, Path)) or not str(path):
            raise ConfigError(f"from_csv: path = {path!r:.100}: must be a non-empty file path")
        try:
            with Path(path).open("rb") as fh:
                t, g = _parse_csv(_utf8_lines(fh, str(path)), str(path))
        except (OSError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"cannot read carbon-intensity CSV {str(path)!r}: {err}") from err
        return cls(t, g, periodic=periodic, name=Path(path).stem)

    @classmethod
    def from_region(cls, code: str, *, periodic: bool = True) -> CarbonIntensityTrace:
        """The shipped 2022 hourly trace of a US balancing authority (see :data:`TRACE_REGIONS`)."""
        if not isinstance(code, str) or len(code) > 64:
            raise ConfigError(
                f"from_region: code = {code!r:.60}: must be a region code, one of "
                f"{', '.join(TRACE_REGIONS)}"
            )
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
        """Intensity (g/kWh) at time(s) ``t_s``; vectorised. ConfigError unless every time is
        finite with ``|t_s| <= MAX_TIME_S``."""
        _, t = self._wrap(finite_array("t_s", t_s, *_TIMES, where="at"))
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
        a = finite_array("t0_s", t0_s, *_TIMES, where="mean")
        b = finite_array("t1_s", t1_s, *_TIMES, where="mean")
        try:
            t0, t1 = np.broadcast_arrays(a, b)
        except ValueError as err:
            raise ConfigError(
                f"mean: t0_s {a.shape} and t1_s {b.shape} do not broadcast together"
            ) from err
        if np.any(t1 < t0):
            raise ConfigError("mean(t0_s, t1_s): need t1_s >= t0_s")
        (f0, piece0), (f1, piece1) = self._integral(t0), self._integral(t1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (f1 - f0) / (t1 - t0)
        # Inside one constant piece the mean is that value exactly (no cancellation error).
        out = np.where(piece0 == piece1, self.at(t0), out)
        return float(out) if out.ndim == 0 else out

    def operational_carbon_g(self, energy_j: float, t0_s: float, t1_s: float) -> float:
        """Eq. 2 for ``energy_j`` spread uniformly over ``[t0_s, t1_s]``: kWh x mean intensity.

        ``energy_j`` follows Eq. 2's range; the times are single finite epoch seconds with
        ``t0_s <= t1_s``; anything else raises ConfigError."""
        a = _time("operational_carbon_g", "t0_s", t0_s)
        b = _time("operational_carbon_g", "t1_s", t1_s)
        if b < a:
            raise ConfigError(f"operational_carbon_g: t1_s = {b!r} must be >= t0_s = {a!r}")
        energy = operational_carbon_g(energy_j, 0.0)  # checks energy_j (a single number)
        if np.ndim(energy):
            raise ConfigError(f"operational_carbon_g: energy_j = {energy_j!r:.100}: one number")
        return float(operational_carbon_g(energy_j, float(self.mean(a, b))))

    def change_points(self, t0_s: float, t1_s: float) -> np.ndarray:
        """Times strictly inside ``(t0_s, t1_s)`` where the intensity may change.

        A periodic trace may list at most :data:`MAX_CHANGE_POINTS` of them per call."""
        t0_s = _time("change_points", "t0_s", t0_s)
        t1_s = _time("change_points", "t1_s", t1_s)
        if not self.periodic:
            pts = self._t[1:]
        else:
            span = self.end_s - self.start_s
            k0 = math.floor((t0_s - self.start_s) / span)
            k1 = math.floor((t1_s - self.start_s) / span)
            if (k1 - k0 + 1) * self._t.size > MAX_CHANGE_POINTS:
                raise ConfigError(
                    f"change_points: [{t0_s}, {t1_s}] spans {k1 - k0 + 1} periods of trace "
                    f"{self.name!r}, more than {MAX_CHANGE_POINTS} change points; use a shorter "
                    "window"
                )
            pts = (self._t[None, :] + span * np.arange(k0, k1 + 1)[:, None]).ravel()
        return pts[(pts > t0_s) & (pts < t1_s)]

    def operational_carbon_from_power_g(self, times_s: np.ndarray, power_w: np.ndarray) -> float:
        """Exact ``int P(t) CI(t) dt`` in g: power linear between samples, intensity stepwise."""
        func = "operational_carbon_from_power_g"
        t = finite_array("times_s", times_s, *_TIMES, where=func).reshape(-1)
        p = finite_array("power_w", _as_array(power_w), 0.0, MAX_POWER_W, where=func).reshape(-1)
        if t.size < 2 or t.shape != p.shape:
            raise ConfigError(
                f"need >= 2 power samples and as many times as powers (got {t.size}, {p.size})"
            )
        if np.any(np.diff(t) <= 0):
            raise ConfigError(f"{func}: times_s must be strictly increasing")
        edges = np.union1d(t, self.change_points(float(t[0]), float(t[-1])))
        pw = np.interp(edges, t, p)
        g = np.asarray(self.at((edges[:-1] + edges[1:]) / 2.0))
        return float(np.sum(g * (pw[:-1] + pw[1:]) / 2.0 * np.diff(edges)) / J_PER_KWH)

    # ---- planner helpers ----------------------------------------------------------------------
    def segments(
        self, t0_s: float | None = None, t1_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Constant pieces ``(starts_s, ends_s, g_per_kwh)`` covering ``[t0_s, t1_s)``."""
        a = self.start_s if t0_s is None else _time("segments", "t0_s", t0_s)
        b = self.end_s if t1_s is None else _time("segments", "t1_s", t1_s)
        if not b > a:
            raise ConfigError(f"segments: need t1_s > t0_s (got {a}, {b})")
        edges = np.concatenate(([a], self.change_points(a, b), [b]))
        mids = (edges[:-1] + edges[1:]) / 2.0  # robust to round-off at periodic boundaries
        return edges[:-1], edges[1:], np.asarray(self.at(mids))

    def hourly(
        self, t0_s: float | None = None, t1_s: float | None = None, step_s: float = 3600.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(starts_s, mean g/kWh)`` for consecutive ``step_s`` windows over ``[t0_s, t1_s)``."""
        a = self.start_s if t0_s is None else _time("hourly", "t0_s", t0_s)
        b = self.end_s if t1_s is None else _time("hourly", "t1_s", t1_s)
        step = _time("hourly", "step_s", step_s)
        if not (b > a and step > 0):
            raise ConfigError(f"hourly: need t1_s > t0_s and step_s > 0 (got {a}, {b}, {step})")
        if (b - a) / step > MAX_CHANGE_POINTS:
            raise ConfigError(
                f"hourly: {(b - a) / step:.3g} windows of step_s = {step} s; at most "
                f"{MAX_CHANGE_POINTS}: use a larger step_s or a shorter span"
            )
        step_s = step
        starts = np.arange(a, b, step_s)
        return starts, np.asarray(self.mean(starts, np.minimum(starts + step_s, b)))

    def daily_profile(self, utc_offset_h: float = 0.0) -> np.ndarray:
        """Mean intensity for each of the 24 local hours of the day over the trace's span."""
        offset = _time("daily_profile", "utc_offset_h", utc_offset_h)
        if abs(offset) > 24:
            raise ConfigError(f"daily_profile: utc_offset_h = {offset}: must be in [-24, 24]")
        starts, means = self.hourly()
        hour = np.floor((starts + utc_offset_h * 3600.0) / 3600.0).astype(int) % 24
        return np.bincount(hour, weights=means, minlength=24) / np.maximum(
            np.bincount(hour, minlength=24), 1
        )


@functools.cache
def _load_region(code: str) -> tuple[np.ndarray, np.ndarray]:
    name = f"{code}-2022-hourly.csv"
    return _parse_csv(io.StringIO(data_text(name)), f"greenllm/carbon/data/{name}")
