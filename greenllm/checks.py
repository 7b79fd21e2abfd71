"""Boundary checks of input numbers: the right type, finite, inside a stated range.

Every public entry point that takes a number checks it here where it enters, so bad input
(``nan``, ``inf``, ``-1``, ``1e300``, ``"5"``, ``True``, ``None``) is a
:class:`~greenllm.errors.ConfigError` naming the argument, the bad value and the allowed range,
never a ``TypeError``/``ValueError`` (or a NaN result) later. One message format everywhere::

    window_carbon: pue = 0.5: must be a finite number in [1, 10] (1 <= pue <= 10)

The limits themselves are constants in :mod:`greenllm.units`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from greenllm.errors import ConfigError

__all__ = ["finite_array", "finite_int", "finite_number", "plain_numbers"]

_SHOW_CHARS = 60


def _show(value: object) -> str:
    """A one-line repr of ``value`` of at most ~60 characters (numpy scalars shown plainly)."""
    if isinstance(value, np.generic):
        value = value.item()
    text = " ".join(repr(value).split())
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def _need(name: str, lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    """The allowed range as an interval, and as an inequality when ``name`` is an identifier
    (``pue``; not ``--pue`` or ``power (W)``, where it would not read as one)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if not name.isidentifier():
        return f"must be a finite number in {interval}"
    rule = f"{lo:g} {'<' if lo_open else '<='} {name} {'<' if hi_open else '<='} {hi:g}"
    return f"must be a finite number in {interval} ({rule})"


def _error(where: str, name: str, shown: str, need: str) -> ConfigError:
    return ConfigError(f"{where + ': ' if where else ''}{name} = {shown}: {need}")


def finite_number(
    name: str,
    value: object,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    where: str = "",
) -> float:
    """``value`` as a float if it is a real number (an int, a float or a numpy number; not a
    bool, a string or None), finite, and in ``[lo, hi]`` (an end is excluded when ``lo_open``
    or ``hi_open``); else :class:`ConfigError` ``"{where}: {name} = {value}: must be a finite
    number in [lo, hi] (lo <= name <= hi)"`` (the inequality only for a ``name`` that is an
    identifier)."""
    x = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            x = float(value)
        except (OverflowError, TypeError, ValueError):  # an int beyond float range
            x = math.nan
    if not (
        math.isfinite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    ):
        raise _error(where, name, _show(value), _need(name, lo, hi, lo_open, hi_open))
    return x


def finite_int(name: str, value: object, lo: int, hi: int, *, where: str = "") -> int:
    """``value`` as an int if it is an integer (a Python or numpy int; not a bool, nor a float
    such as ``3.0``) in ``[lo, hi]``; else :class:`ConfigError` naming ``name`` and the range."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        n = int(value)
        if lo <= n <= hi:
            return n
    raise _error(where, name, _show(value), f"must be an integer in [{lo}, {hi}]")


def plain_numbers(value: object) -> bool:
    """False when ``value`` (a number or a list/tuple of them, nested) holds a bool, a string,
    None or anything else numpy would quietly turn into a float; arrays are left to dtype."""
    if isinstance(value, (list, tuple)):
        return all(plain_numbers(v) for v in value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return True
    return hasattr(value, "dtype")


def finite_array(
    name: str,
    values: object,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    where: str = "",
) -> np.ndarray:
    """``values`` (a number, a nested list/tuple of numbers or a numeric array) as a float
    ndarray of the same shape, every element finite and in ``[lo, hi]`` (ends excluded as in
    :func:`finite_number`); else :class:`ConfigError` naming ``name``, the first bad element
    (or the bad value, for a wrong type: strings, bools, None, ragged or non-numeric arrays)
    and the range."""
    if type(values) is float or (type(values) is int and abs(values) < 2**53):
        x = float(values)  # the common scalar, when in range: no array checks
        if math.isfinite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open
                                                                     else x <= hi):  # fmt: skip
            return np.array(x)
    need = _need(name, lo, hi, lo_open, hi_open)
    if isinstance(values, (bool, str, bytes, np.bool_)) or values is None:
        raise _error(where, name, _show(values), need)
    try:
        raw = np.asarray(values)
        if raw.size and raw.dtype.kind not in "iuf":
            raise TypeError(f"dtype {raw.dtype}")
        if isinstance(values, (list, tuple)) and not plain_numbers(values):
            raise TypeError("a bool, a string or None among the numbers")
        with np.errstate(over="ignore"):
            arr = raw.astype(float)
    except (TypeError, ValueError, OverflowError) as err:
        raise _error(where, name, _show(values), need) from err
    with np.errstate(invalid="ignore"):
        low = (arr <= lo) if lo_open else (arr < lo)
        high = (arr >= hi) if hi_open else (arr > hi)
        bad = ~np.isfinite(arr) | low | high
    if bad.any():
        raise _error(where, name, repr(float(arr[bad].flat[0])), need)
    return arr
