"""Section 5's equations: the carbon ratio of disaggregated vs standalone serving (Eq. 4-6).

Pure numpy, vectorised, in the paper's notation (:mod:`greenllm.carbon.analysis.compare` applies
them to measurements): the energy condition (Eq. 4), the ratio (Eq. 5), its slope in the grid
intensity, the ratio as a function of GPU lifetimes (Eq. 6) and the break-even intensity and
lifetimes.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from greenllm.carbon.accounting import amortized_embodied_g
from greenllm.checks import finite_array
from greenllm.errors import ConfigError
from greenllm.units import SECONDS_PER_YEAR

__all__ = [
    "BreakEven",
    "Eq6Terms",
    "Num",
    "breakeven_intensity",
    "breakeven_new_lifetime_years",
    "breakeven_old_lifetime_years",
    "carbon_ratio",
    "carbon_ratio_direct",
    "energy_condition",
    "lifetime_ratio",
    "lifetime_ratio_terms",
    "ratio_slope_vs_intensity",
    "ratio_vs_intensity",
    "ratio_vs_lifetime",
    "shorter_new_lifetime_saves",
]

Num = float | np.ndarray


#: Largest number the ratio functions take (in its unit: J, g, s, g/kWh, years), far beyond
#: any physical value. A result that still overflows (e.g. dividing by a subnormal) raises
#: ConfigError instead of returning inf.
ANALYSIS_MAX = 1e30

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _array(x: npt.ArrayLike) -> np.ndarray:
    """An argument already checked by :func:`_checked`, as a float array."""
    return np.asarray(x, dtype=float)


def _positive(func: str, name: str, x: npt.ArrayLike) -> np.ndarray:
    """A divisor: as :func:`_checked` checks every argument, but > 0."""
    return finite_array(name, x, 0.0, ANALYSIS_MAX, lo_open=True, where=func)


def _check_finite(func: str, out: object) -> None:
    """ConfigError if a result overflowed (a break-even that never happens is inf by design)."""
    if isinstance(out, BreakEven):
        values: list[object] = [out.value] if out.saves_when in ("above", "below") else []
    elif isinstance(out, Eq6Terms):
        values = [out.energy_term, out.new_gpu_term, out.old_gpu_term, out.paper_old_gpu_term]
    else:
        values = [out]
    for v in values:
        arr = np.asarray(v)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ConfigError(f"{func}: the result overflowed; the inputs are too extreme")


def _checked(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Check every argument (finite, 0 <= x <= ANALYSIS_MAX) before ``func`` runs, and turn a numpy
    error (shapes that do not broadcast) into ConfigError naming ``func``."""
    sig = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        bound = sig.bind(*args, **kwargs)  # a missing argument stays a TypeError
        for name, value in bound.arguments.items():
            finite_array(name, value, 0.0, ANALYSIS_MAX, where=func.__name__)
        try:
            with np.errstate(over="raise", invalid="raise", divide="ignore"):
                out = func(*args, **kwargs)
        except ConfigError:
            raise
        except (ValueError, TypeError, FloatingPointError, ZeroDivisionError, OverflowError) as err:
            raise ConfigError(f"{func.__name__}: {err}") from err  # e.g. an array for a scalar
        _check_finite(func.__name__, out)
        return out

    return wrapper


def _out(a: np.ndarray) -> Num:
    return float(a) if np.ndim(a) == 0 else a


@_checked
def energy_condition(N_A: Num, N_A2: Num, N_B: Num) -> bool | np.ndarray:
    """Eq. 4: ``N_A > N_A2 + N_B``. Under A.3 (E_A2 + E_B >= E_A) this is necessary to save."""
    out = _array(N_A) > _array(N_A2) + _array(N_B)
    return bool(out) if out.ndim == 0 else out


@_checked
def carbon_ratio(N_A: Num, N_A2: Num, N_B: Num, E_A: Num, E_A2: Num, E_B: Num, alpha: Num) -> Num:
    """Disaggregated / standalone total carbon, Eq. 5's closed form (< 1 means savings).

    ``S + (E_A2 + E_B - S * E_A) / (N_A * alpha + E_A)`` with ``S = (N_A2 + N_B) / N_A``.
    Its round-off scales with ``S``; :func:`carbon_ratio_direct` is the stabler first line.
    """
    n_a = _positive("carbon_ratio", "N_A", N_A)
    s = (_array(N_A2) + _array(N_B)) / n_a
    e_a, alpha = _array(E_A), _array(alpha)
    den = n_a * alpha + e_a
    if np.any(den <= 0):
        raise ConfigError("standalone carbon N_A*alpha + E_A must be > 0 (alpha or E_A > 0)")
    return _out(s + (_array(E_A2) + _array(E_B) - s * e_a) / den)


@_checked
def carbon_ratio_direct(
    N_A: Num, N_A2: Num, N_B: Num, E_A: Num, E_A2: Num, E_B: Num, alpha: Num
) -> Num:
    """Eq. 5's first line: ``((N_A2 + N_B) alpha + E_A2 + E_B) / (N_A alpha + E_A)``."""
    a = np.asarray(alpha, dtype=float)
    num = (np.asarray(N_A2) + np.asarray(N_B)) * a + np.asarray(E_A2) + np.asarray(E_B)
    return _out(num / (np.asarray(N_A, dtype=float) * a + np.asarray(E_A)))


@_checked
def ratio_slope_vs_intensity(
    N_A: Num, N_A2: Num, N_B: Num, E_A: Num, E_A2: Num, E_B: Num, alpha: Num
) -> Num:
    """``d ratio / d alpha = -N_A * D / (N_A alpha + E_A)^2``, ``D = E_A2 + E_B - S E_A``.

    Implication 2 (savings grow with alpha) holds exactly when ``D >= 0``, i.e.
    ``(E_A2 + E_B) / E_A >= (N_A2 + N_B) / N_A``; A.3 plus Eq. 4 imply it.
    """
    n_a = np.asarray(N_A, dtype=float)
    d = np.asarray(E_A2) + np.asarray(E_B) - (np.asarray(N_A2) + np.asarray(N_B)) / n_a * E_A
    return _out(-n_a * d / (n_a * np.asarray(alpha) + np.asarray(E_A)) ** 2)


@dataclass(frozen=True)
class Eq6Terms:
    """Eq. 6's split of the ratio: ``energy_term + new_gpu_term + old_gpu_term`` (exact).

    The paper's "Const." is ``energy_term + new_gpu_term``; ``paper_old_gpu_term`` is its
    approximate ``(t_B/T_B) B / (N_A alpha + (t'_A/T_A) A)`` (t'_A where the exact has t_A).
    """

    energy_term: Num
    new_gpu_term: Num
    old_gpu_term: Num
    paper_old_gpu_term: Num

    @property
    def ratio(self) -> Num:
        return self.energy_term + self.new_gpu_term + self.old_gpu_term

    @property
    def paper_constant(self) -> Num:
        return self.energy_term + self.new_gpu_term


@_checked
def lifetime_ratio_terms(
    N_A: Num, N_A2: Num, N_B: Num, t_A_s: Num, t_A2_s: Num, t_B_s: Num,
    total_A_g: Num, total_B_g: Num, T_A_years: Num, T_B_years: Num, alpha: Num,
) -> Eq6Terms:  # fmt: skip
    """Eq. 6: the ratio as a function of the lifetimes ``T_A`` (new GPU) and ``T_B`` (old)."""
    n_a = _positive("lifetime_ratio_terms", "N_A", N_A)
    s = (_array(N_A2) + _array(N_B)) / n_a
    e_a = amortized_embodied_g(t_A_s, total_A_g, T_A_years)
    e_a2 = amortized_embodied_g(t_A2_s, total_A_g, T_A_years)
    e_b = amortized_embodied_g(t_B_s, total_B_g, T_B_years)
    alpha = _array(alpha)
    den = n_a * alpha + e_a
    if np.any(den <= 0):
        raise ConfigError("standalone carbon N_A*alpha + E_A must be > 0 (alpha or E_A > 0)")
    return Eq6Terms(
        energy_term=_out(np.broadcast_arrays(s, den)[0].copy()),
        new_gpu_term=_out((e_a2 - s * e_a) / den),
        old_gpu_term=_out(e_b / den),
        paper_old_gpu_term=_out(e_b / (n_a * alpha + e_a2)),
    )


@_checked
def lifetime_ratio(
    N_A: Num, N_A2: Num, N_B: Num, t_A_s: Num, t_A2_s: Num, t_B_s: Num,
    total_A_g: Num, total_B_g: Num, T_A_years: Num, T_B_years: Num, alpha: Num,
) -> Num:  # fmt: skip
    """The exact Eq. 6 ratio: Eq. 5 with Eq. 1 embodied terms (computed in the direct form)."""
    e_a = amortized_embodied_g(t_A_s, total_A_g, T_A_years)
    e_a2 = amortized_embodied_g(t_A2_s, total_A_g, T_A_years)
    e_b = amortized_embodied_g(t_B_s, total_B_g, T_B_years)
    carbon_ratio(N_A, N_A2, N_B, e_a, e_a2, e_b, alpha)  # validates the inputs
    return carbon_ratio_direct(N_A, N_A2, N_B, e_a, e_a2, e_b, alpha)


@_checked
def shorter_new_lifetime_saves(
    N_A: Num, N_A2: Num, N_B: Num, t_A_s: Num, t_A2_s: Num, E_B: Num, alpha: Num
) -> bool | np.ndarray:
    """True where shortening ``T_A`` lowers the ratio (Implication 3's first half).

    With ``x = 1/T_A`` the ratio is ``(c + t'_A A x) / (N_A alpha + t_A A x)``, whose slope in
    ``x`` has the sign of ``t'_A N_A alpha - t_A ((N'_A + N_B) alpha + E_B)``.
    """
    slope = np.asarray(t_A2_s) * N_A * np.asarray(alpha) - np.asarray(t_A_s) * (
        (np.asarray(N_A2) + N_B) * np.asarray(alpha) + E_B
    )
    out = slope < 0
    return bool(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class BreakEven:
    """Where the ratio crosses 1: disaggregation saves when the variable is ``saves_when`` it.

    ``saves_when`` is ``"above"``/``"below"`` ``value``, ``"always"`` or ``"never"``.
    """

    value: float
    saves_when: Literal["above", "below", "always", "never"]
    unit: str

    def saves(self, x: float) -> bool:
        """Whether disaggregation saves carbon (ratio < 1) at ``x``."""
        rule = self.saves_when
        return rule == "always" or (rule == "above" and x > self.value) or (
            rule == "below" and x < self.value
        )  # fmt: skip

    def __str__(self) -> str:
        if self.saves_when in ("always", "never"):
            return self.saves_when
        return f"{self.saves_when} {self.value:.4g} {self.unit}"


def _crossing(c: float, d: float, unit: str) -> BreakEven:
    """Saves iff ``c * x > d`` for ``x > 0``: the sign analysis shared by the break-evens."""
    if c > 0:
        return BreakEven(d / c, "above", unit) if d > 0 else BreakEven(0.0, "always", unit)
    if c < 0:
        return BreakEven(d / c, "below", unit) if d < 0 else BreakEven(math.inf, "never", unit)
    return BreakEven(0.0, "always", unit) if d < 0 else BreakEven(math.inf, "never", unit)


@_checked
def breakeven_intensity(
    N_A: float, N_A2: float, N_B: float, E_A: float, E_A2: float, E_B: float
) -> BreakEven:
    """``alpha* = (E_A2 + E_B - E_A) / (N_A - N_A2 - N_B)``: the intensity where Eq. 5 = 1."""
    n = float(_array(N_A) - _array(N_A2) - _array(N_B))
    e = float(_array(E_A2) + _array(E_B) - _array(E_A))
    return _crossing(n, e, "g/kWh")


@_checked
def breakeven_old_lifetime_years(
    N_A: float, N_A2: float, N_B: float, E_A: float, E_A2: float,
    t_B_s: float, total_B_g: float, alpha: float,
) -> BreakEven:  # fmt: skip
    """Old-GPU lifetime ``T_B*`` (years) where the ratio = 1.

    ``T_B* = t_B B / ((N_A - N'_A - N_B) alpha + E_A - E'_A)``; saves for ``T_B > T_B*``.
    """
    k = float((_array(N_A) - N_A2 - N_B) * _array(alpha) + E_A - E_A2)
    c = float(_array(t_B_s) * _array(total_B_g))
    c /= SECONDS_PER_YEAR
    if c == 0.0:  # the old GPU adds no embodied carbon whatever its lifetime
        return _crossing(0.0, -k, "years")
    return BreakEven(c / k, "above", "years") if k > 0 else BreakEven(math.inf, "never", "years")


@_checked
def breakeven_new_lifetime_years(
    N_A: float, N_A2: float, N_B: float, t_A_s: float, t_A2_s: float,
    total_A_g: float, E_B: float, alpha: float,
) -> BreakEven:  # fmt: skip
    """New-GPU lifetime ``T_A*`` where the ratio = 1 (saves iff ``(t_A - t'_A) A / T_A > d``)."""
    c = float((_array(t_A_s) - _array(t_A2_s)) * total_A_g)
    c /= SECONDS_PER_YEAR
    d = float(_array(E_B) - (N_A - N_A2 - N_B) * _array(alpha))
    # c / T > d  <=>  c * x > d with x = 1 / T; convert the crossing in x back to T.
    be = _crossing(c, d, "years")
    if be.saves_when in ("always", "never"):
        return be
    flipped: Literal["above", "below"] = "below" if be.saves_when == "above" else "above"
    return BreakEven(1.0 / be.value, flipped, "years")


@_checked
def ratio_vs_intensity(
    N_A: float, N_A2: float, N_B: float, E_A: float, E_A2: float, E_B: float, alphas: npt.ArrayLike
) -> np.ndarray:
    """Eq. 5 over an array of intensities (g/kWh)."""
    return np.asarray(carbon_ratio(N_A, N_A2, N_B, E_A, E_A2, E_B, np.asarray(alphas, float)))


@_checked
def ratio_vs_lifetime(
    N_A: float, N_A2: float, N_B: float, t_A_s: float, t_A2_s: float, t_B_s: float,
    total_A_g: float, total_B_g: float, alpha: float, new_lifetimes_years: npt.ArrayLike,
    old_lifetimes_years: npt.ArrayLike,
) -> np.ndarray:  # fmt: skip
    """Eq. 6 on a grid: ``out[i, j]`` is the ratio at ``T_A = new[i]``, ``T_B = old[j]``."""
    T_A = np.asarray(new_lifetimes_years, dtype=float).reshape(-1, 1)
    T_B = np.asarray(old_lifetimes_years, dtype=float).reshape(1, -1)
    args = (N_A, N_A2, N_B, t_A_s, t_A2_s, t_B_s, total_A_g, total_B_g, T_A, T_B, alpha)
    return np.asarray(lifetime_ratio(*args))
