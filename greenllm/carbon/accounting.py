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
from greenllm.checks import finite_array
from greenllm.errors import ConfigError
from greenllm.units import (
    G_PER_KG,
    J_PER_KWH,
    MAX_EMBODIED_G,
    MAX_ENERGY_J,
    MAX_INTENSITY_G_PER_KWH,
    MAX_LIFETIME_YEARS,
    MAX_PUE,
    MAX_REQUESTS,
    MAX_TIME_S,
    MAX_TOKENS,
    MIN_LIFETIME_YEARS,
    SECONDS_PER_YEAR,
)

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
    func = "lifetime_for"
    if not isinstance(lifetimes_years, Mapping):
        return _scalar(func, "lifetimes_years", lifetimes_years, *_LIFETIME)
    name = get_gpu(gpu).name
    for key, years in lifetimes_years.items():
        if not isinstance(key, str):
            raise ConfigError(f"{func}: lifetimes_years key {key!r}: must be a GPU name string")
        if key != "default" and get_gpu(key).name == name:
            return _scalar(func, f"lifetimes_years[{key!r}]", years, *_LIFETIME)
    return _scalar(func, "lifetimes_years['default']", lifetimes_years.get("default", 7.0),
                   *_LIFETIME)  # fmt: skip


#: (low, high) of each kind of number the carbon API takes (both ends allowed).
_TIME = (0.0, MAX_TIME_S)
_ENERGY = (0.0, MAX_ENERGY_J)
_INTENSITY = (0.0, MAX_INTENSITY_G_PER_KWH)
_EMBODIED = (0.0, MAX_EMBODIED_G)
_LIFETIME = (MIN_LIFETIME_YEARS, MAX_LIFETIME_YEARS)
_FLOAT_MAX = float(np.finfo(float).max)
#: Most tokens one window may count (every request of a full request set at MAX_TOKENS).
MAX_WINDOW_TOKENS = MAX_REQUESTS * MAX_TOKENS
#: Largest host embodied share window_carbon takes (host carbon as a multiple of the GPU's).
MAX_HOST_SHARE = 100.0


def _scalar(func: str, name: str, value: object, lo: float, hi: float) -> float:
    """``value`` (a number or a 0-d array) checked by :func:`finite_array`, as a float."""
    out = finite_array(name, value, lo, hi, where=func)
    if out.ndim:
        raise ConfigError(f"{func}: {name} = {value!r:.200}: must be a single number")
    return float(out)


def _broadcast(func: str, **arrays: ArrayLike) -> None:
    """ConfigError unless the arrays broadcast together (numpy's rules)."""
    try:
        np.broadcast_shapes(*(np.shape(a) for a in arrays.values()))
    except ValueError as err:
        shapes = ", ".join(f"{k} {np.shape(a)}" for k, a in arrays.items())
        raise ConfigError(f"{func}: the shapes of {shapes} do not broadcast together") from err


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
    func = "embodied_carbon_g"
    t = finite_array("seconds", seconds, *_TIME, where=func)
    c_e = finite_array("embodied_g", embodied_g, *_EMBODIED, where=func)
    life = finite_array("lifetime_years", lifetime_years, *_LIFETIME, where=func)
    _broadcast(func, seconds=t, embodied_g=c_e, lifetime_years=life)
    return _out(t / (life * SECONDS_PER_YEAR) * c_e)


def operational_carbon_g(energy_j: ArrayLike, intensity_g_per_kwh: ArrayLike) -> float | np.ndarray:
    """Eq. 2: ``energy_j / 3.6e6 * intensity_g_per_kwh`` in grams (arrays broadcast)."""
    func = "operational_carbon_g"
    e = finite_array("energy_j", energy_j, *_ENERGY, where=func)
    ci = finite_array("intensity_g_per_kwh", intensity_g_per_kwh, *_INTENSITY, where=func)
    _broadcast(func, energy_j=e, intensity_g_per_kwh=ci)
    return _out(e / J_PER_KWH * ci)


def total_carbon_g(
    seconds: ArrayLike,
    energy_j: ArrayLike,
    gpu: str | GPUSpec,
    lifetime_years: ArrayLike = 7.0,
    intensity_g_per_kwh: ArrayLike = 261.0,
) -> float | np.ndarray:
    """Eq. 3: Eq. 1 + Eq. 2, in grams. The default intensity is CISO's 261 g/kWh (Sec. 7.5).

    The four numeric arguments broadcast together; shapes that do not raise ConfigError."""
    embodied = embodied_carbon_g(seconds, gpu, lifetime_years)
    operational = operational_carbon_g(energy_j, intensity_g_per_kwh)
    _broadcast("total_carbon_g", seconds=seconds, lifetime_years=lifetime_years,
               energy_j=energy_j, intensity_g_per_kwh=intensity_g_per_kwh)  # fmt: skip
    return _out(embodied + operational)


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

    def __post_init__(self) -> None:
        for attr in ("embodied_g", "operational_g", "energy_j"):
            value = _scalar("CarbonBreakdown", attr, getattr(self, attr), 0.0, _FLOAT_MAX)
            object.__setattr__(self, attr, value)
        if self.tokens is not None:
            object.__setattr__(self, "tokens", _check_tokens("CarbonBreakdown", "tokens",
                                                             self.tokens))  # fmt: skip

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
    if (
        isinstance(tokens, bool)
        or not isinstance(tokens, (int, np.integer))
        or not 0 <= tokens <= MAX_WINDOW_TOKENS
    ):
        raise ConfigError(
            f"{func}: {name} = {tokens!r:.60}: must be an integer with "
            f"0 <= {name} <= {MAX_WINDOW_TOKENS}"
        )
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
    ci = _scalar(func, "intensity_g_per_kwh", intensity_g_per_kwh, *_INTENSITY)
    p = _scalar(func, "pue", pue, 1.0, MAX_PUE)  # 1.0 = GPU energy only
    share = _scalar(func, "host_embodied_share", host_embodied_share, 0.0, MAX_HOST_SHARE)
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
            energy.append(_scalar(func, "energy_j", d.energy_j, *_ENERGY))
        except ConfigError as err:
            raise ConfigError(f"devices[{i}]: {err}") from err
    energy_j = p * math.fsum(energy)
    if energy_j > MAX_ENERGY_J:
        raise ConfigError(f"{func}: total energy {energy_j:g} J exceeds {MAX_ENERGY_J:g} J")
    return CarbonBreakdown(
        embodied_g=math.fsum(embodied) * (1.0 + share),
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
    if (
        isinstance(tokens_per_request, (str, bytes))
        or not isinstance(tokens_per_request, (Sequence, np.ndarray))
        or len(tokens_per_request) == 0
    ):
        raise ConfigError(f"{func}: tokens_per_request must be a non-empty list of integers")
    counts = [_check_tokens(func, f"tokens_per_request[{i}]", t)
              for i, t in enumerate(tokens_per_request)]  # fmt: skip
    total = sum(counts)
    if total > MAX_WINDOW_TOKENS:
        raise ConfigError(f"{func}: tokens_per_request sums to {total} > {MAX_WINDOW_TOKENS}")
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
