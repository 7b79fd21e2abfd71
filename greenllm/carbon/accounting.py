"""Carbon accounting: Eq. 1-3 of the paper, windows over several GPUs, the concurrency rule.

* Eq. 1 (embodied):    C_e,req = t / LT * C_e        t in s, LT in 365.25-day years, C_e in g
* Eq. 2 (operational): C_o,req = E * CI              E in J (/ 3.6e6 -> kWh), CI in g/kWh
* Eq. 3 (total):       C_req   = C_e,req + C_o,req

:func:`window_carbon` applies them once per window to every GPU's *allocated* time and energy;
:func:`split_by_tokens` then attributes that window to requests by tokens served, so concurrent
requests never double count the GPU's embodied carbon (see docs/carbon.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from greenllm.carbon.catalog.registry import GPUSpec, get_gpu
from greenllm.errors import ConfigError
from greenllm.units import G_PER_KG, J_PER_KWH, SECONDS_PER_YEAR

__all__ = [
    "CarbonBreakdown",
    "DeviceUsage",
    "amortized_embodied_g",
    "embodied_carbon_g",
    "lifetime_for",
    "operational_carbon_g",
    "split_by_tokens",
    "total_carbon_g",
    "window_carbon",
]

logger = logging.getLogger(__name__)

ArrayLike: TypeAlias = float | int | np.ndarray | Sequence[float]


def lifetime_for(gpu: str | GPUSpec, lifetimes_years: float | Mapping[str, float]) -> float:
    """A GPU's lifetime from one number for all GPUs or ``{"T4": 10, "default": 7}``.

    Keys are GPU names or aliases; a GPU without a key gets ``"default"`` (7 years if absent).
    """
    if not isinstance(lifetimes_years, Mapping):
        return float(lifetimes_years)
    name = get_gpu(gpu).name
    for key, years in lifetimes_years.items():
        if key != "default" and get_gpu(key).name == name:
            return float(years)
    return float(lifetimes_years.get("default", 7.0))


def _check(func: str, name: str, value: object, *, positive: bool = False) -> float | np.ndarray:
    """``value`` as a float (scalar in) or float ndarray, all finite and >= 0 (> 0 if positive)."""
    need = "> 0" if positive else ">= 0"
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise ConfigError(f"{func}: {name} = {value!r}: must be a finite number {need}")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{func}: {name} = {value!r}: must be a finite number {need}") from err
    bad = ~np.isfinite(arr) | ((arr <= 0) if positive else (arr < 0))
    if bad.any():
        first = float(arr[bad].flat[0]) if arr.ndim else float(arr)
        raise ConfigError(f"{func}: {name} = {first!r}: must be a finite number {need}")
    return float(arr) if arr.ndim == 0 else arr


def _out(x: float | np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else np.asarray(x, dtype=float)


def embodied_carbon_g(
    seconds: ArrayLike, gpu: str | GPUSpec, lifetime_years: ArrayLike = 7.0
) -> float | np.ndarray:
    """Eq. 1: ``seconds / (lifetime_years * 365.25 * 86400) * C_e`` in grams.

    ``seconds`` is the time the GPU was allocated; arrays broadcast and return an ndarray.
    """
    spec = get_gpu(gpu)
    return amortized_embodied_g(seconds, spec.embodied_kg * G_PER_KG, lifetime_years)


def amortized_embodied_g(
    seconds: ArrayLike, embodied_g: ArrayLike, lifetime_years: ArrayLike
) -> float | np.ndarray:
    """Eq. 1 on a device's whole embodied carbon: ``seconds / (lifetime_years * 365.25 * 86400)
    * embodied_g`` in grams (arrays broadcast). :func:`embodied_carbon_g` looks ``C_e`` up."""
    t = _check("embodied_carbon_g", "seconds", seconds)
    c_e = _check("embodied_carbon_g", "embodied_g", embodied_g)
    life = _check("embodied_carbon_g", "lifetime_years", lifetime_years, positive=True)
    return _out(t / (life * SECONDS_PER_YEAR) * c_e)


def operational_carbon_g(energy_j: ArrayLike, intensity_g_per_kwh: ArrayLike) -> float | np.ndarray:
    """Eq. 2: ``energy_j / 3.6e6 * intensity_g_per_kwh`` in grams (arrays broadcast)."""
    e = _check("operational_carbon_g", "energy_j", energy_j)
    ci = _check("operational_carbon_g", "intensity_g_per_kwh", intensity_g_per_kwh)
    return _out(e / J_PER_KWH * ci)


def total_carbon_g(
    seconds: ArrayLike,
    energy_j: ArrayLike,
    gpu: str | GPUSpec,
    lifetime_years: ArrayLike = 7.0,
    intensity_g_per_kwh: ArrayLike = 261.0,
) -> float | np.ndarray:
    """Eq. 3: Eq. 1 + Eq. 2, in grams. The default intensity is CISO's 261 g/kWh (Sec. 7.5)."""
    return _out(
        embodied_carbon_g(seconds, gpu, lifetime_years)
        + operational_carbon_g(energy_j, intensity_g_per_kwh)
    )


@dataclass(frozen=True)
class DeviceUsage:
    """One GPU's share of a window: ``seconds`` it was allocated to the service (busy or idle)
    and the ``energy_j`` it drew meanwhile."""

    gpu: str | GPUSpec
    seconds: float
    energy_j: float
    lifetime_years: float = 7.0


@dataclass(frozen=True)
class CarbonBreakdown:
    """Embodied and operational carbon (g) of a window, with the energy (J, facility-level when
    a PUE was applied) and the tokens served. Breakdowns add across windows and GPUs."""

    embodied_g: float
    operational_g: float
    energy_j: float
    tokens: int | None = None

    @property
    def total_g(self) -> float:
        """Eq. 3: embodied + operational, g."""
        return self.embodied_g + self.operational_g

    def _per_token(self, grams: float, what: str) -> float:
        if self.tokens is None or self.tokens <= 0:
            raise ConfigError(
                f"CarbonBreakdown.{what}_per_token_g: tokens = {self.tokens!r}; pass tokens "
                f"(> 0) to window_carbon(..., tokens=N) or split_by_tokens to get per-token carbon"
            )
        return grams / self.tokens

    @property
    def embodied_per_token_g(self) -> float:
        return self._per_token(self.embodied_g, "embodied")

    @property
    def operational_per_token_g(self) -> float:
        return self._per_token(self.operational_g, "operational")

    @property
    def total_per_token_g(self) -> float:
        return self._per_token(self.total_g, "total")

    def __add__(self, other: object) -> CarbonBreakdown:
        if not isinstance(other, CarbonBreakdown):
            return NotImplemented
        tokens = None if self.tokens is None or other.tokens is None else self.tokens + other.tokens
        return CarbonBreakdown(
            embodied_g=self.embodied_g + other.embodied_g,
            operational_g=self.operational_g + other.operational_g,
            energy_j=self.energy_j + other.energy_j,
            tokens=tokens,
        )

    def __radd__(self, other: object) -> CarbonBreakdown:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # lets sum(breakdowns) work
        return self.__add__(other)

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready dict; per-token entries are None when tokens is None or 0."""
        has_tokens = self.tokens is not None and self.tokens > 0
        return {
            "embodied_g": self.embodied_g,
            "operational_g": self.operational_g,
            "total_g": self.total_g,
            "energy_j": self.energy_j,
            "tokens": self.tokens,
            "embodied_per_token_g": self.embodied_per_token_g if has_tokens else None,
            "operational_per_token_g": self.operational_per_token_g if has_tokens else None,
            "total_per_token_g": self.total_per_token_g if has_tokens else None,
        }


def _check_tokens(func: str, name: str, tokens: object) -> int:
    if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)) or tokens < 0:
        raise ConfigError(f"{func}: {name} = {tokens!r}: must be an integer >= 0")
    return int(tokens)


def window_carbon(
    devices: Sequence[DeviceUsage],
    intensity_g_per_kwh: float,
    tokens: int | None = None,
    *,
    pue: float = 1.0,
    host_embodied_share: float = 0.0,
) -> CarbonBreakdown:
    """Carbon of one window across several GPUs (Eq. 1-3 applied once per GPU).

    embodied    = sum_gpu Eq.1(seconds, gpu, lifetime) * (1 + host_embodied_share)
    operational = Eq.2(pue * sum_gpu energy_j, intensity)
    ``pue`` (>= 1) and ``host_embodied_share`` (>= 0; the host's CPU/DRAM/board embodied carbon
    as a fraction of the GPU's) are off by default, which reproduces the paper.
    """
    func = "window_carbon"
    if isinstance(devices, DeviceUsage) or not isinstance(devices, Sequence) or not devices:
        raise ConfigError(f"{func}: devices = {devices!r}: must be a non-empty list of DeviceUsage")
    ci = _check(func, "intensity_g_per_kwh", intensity_g_per_kwh)
    p = _check(func, "pue", pue)
    share = _check(func, "host_embodied_share", host_embodied_share)
    if np.ndim(ci) or np.ndim(p) or np.ndim(share):
        raise ConfigError(f"{func}: intensity_g_per_kwh, pue, host_embodied_share must be scalars")
    if p < 1.0:
        raise ConfigError(f"{func}: pue = {p!r}: must be >= 1 (1.0 = GPU energy only)")
    if tokens is not None:
        tokens = _check_tokens(func, "tokens", tokens)
    embodied, energy = [], []
    for i, d in enumerate(devices):
        if not isinstance(d, DeviceUsage):
            raise ConfigError(f"{func}: devices[{i}] = {d!r}: must be a DeviceUsage")
        for attr in ("seconds", "energy_j", "lifetime_years"):
            v = getattr(d, attr)
            if np.ndim(v) != 0:
                raise ConfigError(f"{func}: devices[{i}].{attr} = {v!r}: must be a scalar")
        try:
            embodied.append(embodied_carbon_g(d.seconds, d.gpu, d.lifetime_years))
            energy.append(_check(func, "energy_j", d.energy_j))
        except ConfigError as err:
            raise ConfigError(f"devices[{i}]: {err}") from err
    energy_j = float(p) * math.fsum(energy)
    return CarbonBreakdown(
        embodied_g=math.fsum(embodied) * (1.0 + float(share)),
        operational_g=float(operational_carbon_g(energy_j, ci)),
        energy_j=energy_j,
        tokens=tokens,
    )


def split_by_tokens(
    breakdown: CarbonBreakdown, tokens_per_request: Sequence[int]
) -> list[CarbonBreakdown]:
    """Attribute a window's carbon to its requests in proportion to the tokens each was served.

    The parts sum to the window (up to float rounding), so overlapping requests share the GPU's
    embodied carbon instead of each charging Eq. 1 on its own latency; a request alone in its
    window gets the whole window, i.e. exactly Eq. 1-3 on its own time and energy.
    """
    func = "split_by_tokens"
    if not isinstance(breakdown, CarbonBreakdown):
        raise ConfigError(f"{func}: breakdown = {breakdown!r}: must be a CarbonBreakdown")
    if isinstance(tokens_per_request, (str, bytes)) or len(tokens_per_request) == 0:
        raise ConfigError(f"{func}: tokens_per_request must be a non-empty list of integers")
    counts = [_check_tokens(func, f"tokens_per_request[{i}]", t)
              for i, t in enumerate(tokens_per_request)]  # fmt: skip
    total = sum(counts)
    if total == 0:
        raise ConfigError(f"{func}: tokens_per_request sums to 0; nothing to attribute carbon to")
    if breakdown.tokens is not None and breakdown.tokens != total:
        raise ConfigError(
            f"{func}: tokens_per_request sums to {total} but the window served "
            f"{breakdown.tokens} tokens; pass every request of the window, or build the window "
            f"with tokens=None"
        )
    return [
        CarbonBreakdown(
            embodied_g=breakdown.embodied_g * (n / total),
            operational_g=breakdown.operational_g * (n / total),
            energy_j=breakdown.energy_j * (n / total),
            tokens=n,
        )
        for n in counts
    ]
