"""GPU power model: idle power plus utilisation-dependent dynamic power, and energy over time.

    P(u) = P_idle + (P_max - P_idle) x u,      u in [0, 1]

the linear utilisation model of Fan, Weber and Barroso ("Power provisioning for a
warehouse-sized computer", ISCA 2007), applied per GPU with ``P_idle`` = ``GPUSpec.idle_power_w``
and ``P_max`` = ``GPUSpec.max_power_w`` (board power limit). A step's utilisation comes from the
roofline (:class:`~greenllm.backends.sim.roofline.StepCost`):

    u = max(t_compute, beta x t_memory) / t_step

so a compute-bound step at the tensor roof draws the power limit (prefill runs near TDP: Patel et
al., "Splitwise", ISCA 2024) and a step saturating memory bandwidth draws ``beta`` of the dynamic
range, :data:`~greenllm.backends.sim.efficiency.MEMORY_POWER_FRACTION` (decode draws 137-300 W
on a 700 W H200: Ma et al., arXiv:2605.11999). docs/simulator-model.md has the numbers. The per-step
overhead (launches, scheduling) and the gaps between steps draw idle power: energy integrates
power over the whole time a GPU is allocated, busy or not.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

import numpy as np

from greenllm.carbon import GPUSpec, get_gpu
from greenllm.checks import finite_number, plain_numbers
from greenllm.errors import ConfigError
from greenllm.units import MAX_PERIOD_S, MAX_TIME_S

__all__ = ["NVML_PERIOD_S", "PowerModel", "energy_j", "power_model", "power_trace", "power_w"]

logger = logging.getLogger(__name__)

NVML_PERIOD_S = 0.2  # the paper samples pynvml every 200 ms (Section 7.1)


class PowerModel:
    """Fast power model of one GPU: ``power_w(u)`` is two float operations."""

    __slots__ = ("dynamic_w", "gpu", "idle_w", "max_w")

    def __init__(self, gpu: str | GPUSpec) -> None:
        g = get_gpu(gpu)
        self.gpu = g
        self.idle_w = float(g.idle_power_w)
        self.max_w = float(g.max_power_w)
        self.dynamic_w = self.max_w - self.idle_w

    def power_w(self, utilisation: float) -> float:
        """Watts at ``utilisation`` (clipped to [0, 1])."""
        u = 0.0 if utilisation < 0.0 else (1.0 if utilisation > 1.0 else utilisation)
        return self.idle_w + self.dynamic_w * u

    def power_w_array(self, utilisation: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`power_w`."""
        return self.idle_w + self.dynamic_w * np.clip(np.asarray(utilisation, float), 0.0, 1.0)

    def energy_j(
        self,
        starts_s: Sequence[float] | np.ndarray,
        ends_s: Sequence[float] | np.ndarray,
        utilisation: Sequence[float] | np.ndarray | float,
        t0_s: float,
        t1_s: float,
    ) -> float:
        """Joules over the allocation ``[t0_s, t1_s]``: idle power throughout plus each busy
        interval's dynamic power. Busy intervals (any order) must not overlap
        (:class:`ConfigError`); they are clipped to the window."""
        s, e, u = _intervals(starts_s, ends_s, utilisation, t0_s, t1_s)
        busy = np.clip(e, t0_s, t1_s) - np.clip(s, t0_s, t1_s)
        return float(self.idle_w * (t1_s - t0_s) + self.dynamic_w * np.dot(busy, u))

    def trace(
        self,
        starts_s: Sequence[float] | np.ndarray,
        ends_s: Sequence[float] | np.ndarray,
        utilisation: Sequence[float] | np.ndarray | float,
        t0_s: float,
        t1_s: float,
        period_s: float = NVML_PERIOD_S,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A power trace as a sampler polling every ``period_s`` would record it: sample ``k``
        at ``t0_s + k x period_s`` (k >= 1) is the mean power over the preceding period, so
        ``sum(power_w) x period_s`` equals the energy of the covered window."""
        period_s = finite_number(
            "period_s", period_s, 0.0, MAX_PERIOD_S, lo_open=True, where="power_trace"
        )
        s, e, u = _intervals(starts_s, ends_s, utilisation, t0_s, t1_s)
        n = math.floor((t1_s - t0_s) / period_s + 1e-9)
        times = t0_s + period_s * np.arange(1, n + 1)
        if n == 0:
            return times, np.empty(0)
        grid = np.concatenate(([t0_s], times))
        s, e = np.clip(s, t0_s, t1_s), np.clip(e, t0_s, t1_s)
        # dynamic energy up to each grid time t: sum_i u_i x overlap([s_i, e_i], [t0, t])
        dyn = np.zeros_like(grid)
        if s.size:  # intervals come sorted by start from _intervals
            cum_end = np.concatenate(([0.0], np.cumsum((e - s) * u)))
            idx = np.searchsorted(s, grid, side="right")  # intervals started by each grid time
            last = np.maximum(idx - 1, 0)
            unfinished = np.clip(grid - e[last], None, 0.0) * u[last]  # of the last started one
            dyn = cum_end[idx] + np.where(idx > 0, unfinished, 0.0)
        energy = self.idle_w * (grid - t0_s) + self.dynamic_w * dyn
        return times, np.diff(energy) / period_s


def _finite_array(name: str, value: object, bound: float, *, ravel: bool = True) -> np.ndarray:
    """``value`` as a float array of finite numbers with ``|x| <= bound``, or ConfigError."""
    if value is None or isinstance(value, (bool, str, bytes)):
        raise ConfigError(f"power model: {name} = {value!r}: must be finite numbers")
    try:
        arr = np.asarray(value)
        if (arr.dtype.kind not in "iuf" and arr.size) or not plain_numbers(value):
            raise TypeError("not numbers")
        arr = arr.astype(float)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"power model: {name} = {value!r:.80}: must be finite numbers") from err
    if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > bound):
        raise ConfigError(
            f"power model: {name} = {value!r:.80}: must be finite numbers "
            f"in [-{bound:g}, {bound:g}]"
        )
    return arr.ravel() if ravel else arr


def _intervals(
    starts_s: Sequence[float] | np.ndarray,
    ends_s: Sequence[float] | np.ndarray,
    utilisation: Sequence[float] | np.ndarray | float,
    t0_s: float,
    t1_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = _finite_array("starts_s", starts_s, MAX_TIME_S)
    e = _finite_array("ends_s", ends_s, MAX_TIME_S)
    u_in = _finite_array("utilisation", utilisation, math.inf, ravel=False)
    if s.shape != e.shape:
        raise ConfigError(f"starts_s ({s.size}) and ends_s ({e.size}) must have the same length")
    try:
        u = np.broadcast_to(np.clip(u_in, 0.0, 1.0), s.shape)
    except ValueError as err:
        raise ConfigError(
            f"utilisation: one value or one per busy interval ({s.size}), got {u_in.size}"
        ) from err
    t0_s = finite_number("t0_s", t0_s, -MAX_TIME_S, MAX_TIME_S, where="power model")
    t1_s = finite_number("t1_s", t1_s, -MAX_TIME_S, MAX_TIME_S, where="power model")
    if not t1_s >= t0_s:
        raise ConfigError(f"window [{t0_s!r}, {t1_s!r}]: need finite t0_s <= t1_s")
    if s.size and (not np.all(np.isfinite(s)) or not np.all(e >= s)):
        raise ConfigError("busy intervals need finite starts and ends_s >= starts_s")
    order = np.argsort(s, kind="stable")
    s, e, u = s[order], e[order], np.array(u, dtype=float)[order]
    if s.size > 1 and np.any(s[1:] < e[:-1] - 1e-9 * np.maximum(1.0, np.abs(e[:-1]))):
        i = int(np.argmax(s[1:] < e[:-1] - 1e-9 * np.maximum(1.0, np.abs(e[:-1]))))
        raise ConfigError(
            f"busy intervals overlap: [{s[i]:g}, {e[i]:g}] and [{s[i + 1]:g}, {e[i + 1]:g}]; "
            f"one GPU runs one step at a time"
        )
    return s, e, u


@functools.lru_cache(maxsize=64)
def _cached(gpu: GPUSpec) -> PowerModel:
    return PowerModel(gpu)


def power_model(gpu: str | GPUSpec) -> PowerModel:
    """The cached :class:`PowerModel` of ``gpu``."""
    return _cached(get_gpu(gpu))


def power_w(gpu: str | GPUSpec, utilisation: float) -> float:
    """Watts drawn by ``gpu`` at ``utilisation`` in [0, 1] (see the module docstring)."""
    u = finite_number("utilisation", utilisation, 0.0, 1.0, where="power_w")
    return power_model(gpu).power_w(u)


def energy_j(
    gpu: str | GPUSpec,
    starts_s: Sequence[float] | np.ndarray,
    ends_s: Sequence[float] | np.ndarray,
    utilisation: Sequence[float] | np.ndarray | float,
    t0_s: float,
    t1_s: float,
) -> float:
    """Joules drawn by ``gpu`` allocated over ``[t0_s, t1_s]`` and busy over the given intervals
    at the given utilisations (idle power between them)."""
    return power_model(gpu).energy_j(starts_s, ends_s, utilisation, t0_s, t1_s)


def power_trace(
    gpu: str | GPUSpec,
    starts_s: Sequence[float] | np.ndarray,
    ends_s: Sequence[float] | np.ndarray,
    utilisation: Sequence[float] | np.ndarray | float,
    t0_s: float,
    t1_s: float,
    period_s: float = NVML_PERIOD_S,
) -> tuple[np.ndarray, np.ndarray]:
    """``(times_s, power_w)`` sampled every ``period_s`` as NVML would (see PowerModel.trace)."""
    return power_model(gpu).trace(starts_s, ends_s, utilisation, t0_s, t1_s, period_s)
