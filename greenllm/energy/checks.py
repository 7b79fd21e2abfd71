"""Boundary checks of the energy API's numbers: finite, the right type, inside a stated range.

Every public entry point of :mod:`greenllm.energy` (samplers, the meter, its windows) checks
its numeric arguments here, so bad input (``nan``, ``inf``, ``-1``, ``1e300``, ``"5"``,
``None``) is a :class:`~greenllm.errors.ConfigError` naming the argument and the allowed range,
raised where it enters, never a ``TypeError``/``ValueError`` later.
"""

from __future__ import annotations

import math
import numbers

from greenllm.errors import ConfigError

__all__ = [
    "MAX_LIFETIME_YEARS",
    "MAX_PERIOD_S",
    "MAX_POWER_W",
    "MAX_PUE",
    "MAX_SPEED",
    "MAX_TIME_S",
    "MAX_TOKENS",
    "check_count",
    "check_number",
    "plain_numbers",
]

MAX_PERIOD_S = 86_400.0  # one poll a day at least
MAX_POWER_W = 100_000.0  # 100 kW per device: far above any GPU board or CPU socket
MAX_LIFETIME_YEARS = 100.0
MAX_PUE = 10.0
MAX_SPEED = 1e6  # replay speed-up
MAX_TIME_S = 1e12  # |time| (relative or epoch seconds): beyond ~31,700 years is an input error
MAX_TOKENS = 2**53  # counts stay exact as floats (per-token figures)


def check_number(
    where: str,
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
) -> float:
    """``value`` as a float if it is a real number (not a bool), finite and in ``[low, high]``
    (``(low, high]`` if ``low_open``); else :class:`ConfigError` naming ``where``/``name``."""
    lo = "(" if low_open else "["
    f = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            f = float(value)
        except (OverflowError, TypeError, ValueError):
            f = math.nan
    if not (math.isfinite(f) and (f > low if low_open else f >= low) and f <= high):
        raise ConfigError(
            f"{where}: {name} = {value!r}: must be a finite number in {lo}{low:g}, {high:g}]"
        )
    return f


def check_count(where: str, name: str, value: object, high: int = MAX_TOKENS) -> int:
    """``value`` as an int if it is an integer (not a bool) in ``[0, high]``; else ConfigError."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        n = int(value)
        if 0 <= n <= high:
            return n
    raise ConfigError(f"{where}: {name} = {value!r}: must be an integer in [0, {high}]")


def plain_numbers(value: object) -> bool:
    """False when ``value`` (a number or a list/tuple of them, nested) holds a bool, a string,
    None or anything else numpy would quietly turn into a float; arrays are left to dtype."""
    if isinstance(value, (list, tuple)):
        return all(plain_numbers(v) for v in value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return True
    return hasattr(value, "dtype")
