"""Argument types shared by the subcommands, and the limits every option is checked against.

Every number an option takes goes through one of the types here (``type=`` of argparse), so a
bad value is a one-line usage error (exit 2) naming the option, before any work or file access.
Every float is finite and inside a documented range; every range and list has a size limit. The
limits are listed in docs/cli.md.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from greenllm.checks import finite_number
from greenllm.errors import ConfigError
from greenllm.units import MAX_INTENSITY_G_PER_KWH

# Limits (docs/cli.md, "Limits"). Sizes bound the work and memory one command can ask for.
MAX_RANGE_POINTS = 10_000  # values in one A:B:STEP range or comma list
MAX_GRID_CELLS = 100_000  # cells of one profiling sweep (rows x configurations)
MAX_REQUESTS = 1_000_000  # requests per profiled cell
MAX_WORKERS = 256  # local worker processes
MAX_BATCH_SIZE = 100_000  # records per store transaction
MAX_VERIFY_CELLS = 10_000  # cells `plan --verify` may profile
MAX_SEED = 2**32 - 1  # seeds are in [0, MAX_SEED]
MAX_TOKENS = 10**15  # tokens served in one window
MAX_SECONDS = 1e9  # one window, s (about 32 years)
MAX_ENERGY_J = 1e15  # one window, J (about 278 GWh)
MIN_RUN_SECONDS = 1e-3  # `analyze` GPU:SECONDS:ENERGY_J runs: both at least this
MIN_RUN_ENERGY_J = 1e-3
MAX_INTENSITY = MAX_INTENSITY_G_PER_KWH  # g/kWh (the dirtiest grids are near 1,100)
MIN_LIFETIME_YEARS = 0.1
MAX_LIFETIME_YEARS = 100.0
MIN_QPS = 1e-3  # requests per second
MAX_QPS = 1e4
MAX_DURATION_S = 86_400.0  # served seconds per profiled cell
MAX_WORK_REQUESTS = 1e7  # requests one cell may generate (QPS x duration)
MAX_LINK_GBPS = 1e4
MAX_MARGIN_SIGMAS = 100.0
MAX_SWITCH_ENERGY_KWH = 1e6
MAX_SWITCH_EMBODIED_G = 1e9
MAX_TEXT = 4096  # characters in a name, list or path option

SECONDS_RANGE = (0.0, MAX_SECONDS)
ENERGY_RANGE = (0.0, MAX_ENERGY_J)
INTENSITY_RANGE = (0.0, MAX_INTENSITY)
LIFETIME_RANGE = (MIN_LIFETIME_YEARS, MAX_LIFETIME_YEARS)
QPS_RANGE = (MIN_QPS, MAX_QPS)


def _number(text: str, kind: str) -> float:
    """``text`` parsed as a float (any float: the range is checked by
    :func:`~greenllm.checks.finite_number`), or ArgumentTypeError."""
    if not isinstance(text, str):  # a default that is already a number
        return float(text)
    s = text.strip()
    if not s:
        raise argparse.ArgumentTypeError(f"empty value: expected {kind}")
    if len(s) > 64:
        raise argparse.ArgumentTypeError(f"{s[:20]!r}...: too long for {kind}")
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not {kind}") from None


def check_float(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` if finite and in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``), else ConfigError."""
    return finite_number(name, value, lo, hi, lo_open=lo_open)


def float_in(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``)."""

    def parse(text: str) -> float:
        value = _number(text, "a number")
        try:
            return finite_number("value", value, lo, hi, lo_open=lo_open)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "number"
    return parse


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]`` (no floats, no huge values)."""

    def parse(text: str) -> int:
        s = text.strip() if isinstance(text, str) else str(text)
        if not s:
            raise argparse.ArgumentTypeError("empty value: expected an integer")
        if len(s) > 24:
            raise argparse.ArgumentTypeError(f"{s[:20]!r}...: must be an integer in [{lo}, {hi}]")
        try:
            value = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value}: must be an integer in [{lo}, {hi}]")
        return value

    parse.__name__ = "integer"
    return parse


_DURATION_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def duration_s(lo: float, hi: float, *, lo_open: bool = True) -> Callable[[str], float]:
    """An argparse type: a duration such as ``90s``, ``15m``, ``1h``, ``1.5h`` or plain
    seconds, in ``(lo, hi]`` seconds (``[lo, hi]`` without ``lo_open``)."""

    def parse(value: str) -> float:
        s = value.strip().lower() if isinstance(value, str) else str(value)
        unit = _DURATION_UNITS_S.get(s[-1:]) if s else None
        number = _number(s[:-1] if unit is not None else s, "a duration (90s, 15m, 1h)")
        seconds = number * (unit or 1.0)
        try:
            return finite_number("duration", seconds, lo, hi, lo_open=lo_open)
        except ConfigError:
            raise argparse.ArgumentTypeError(
                f"{value!r}: must be a duration in {'(' if lo_open else '['}{lo:g} s, {hi:g} s],"
                " e.g. 90s, 15m or 1h"
            ) from None

    parse.__name__ = "duration"
    return parse


def text(value: str) -> str:
    """An argparse type: a non-empty string (a name, list or path) of at most MAX_TEXT chars."""
    s = value.strip()
    if not s:
        raise argparse.ArgumentTypeError("empty value")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise argparse.ArgumentTypeError(f"longer than {MAX_TEXT} characters or has a NUL")
    return s


def path(value: str) -> Path:
    """An argparse type: a non-empty path."""
    return Path(text(value))


def add_intensity_args(p: argparse.ArgumentParser, default_region: str = "CISO") -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--region",
        type=text,
        default=None,
        help=f"grid region or ISO-3166 alpha-3 country (default {default_region}); "
        "see `greenllm regions`",
    )
    g.add_argument(
        "--intensity",
        type=float_in(*INTENSITY_RANGE),
        default=None,
        metavar="G_PER_KWH",
        help=f"carbon intensity in gCO2/kWh, 0 to {MAX_INTENSITY:g} (instead of --region)",
    )
    p.set_defaults(default_region=default_region)


def resolve_intensity(args: argparse.Namespace) -> tuple[float, str]:
    """(g/kWh, label) from --intensity or --region."""
    from greenllm.carbon import carbon_intensity

    if args.intensity is not None:
        value = check_float("--intensity", args.intensity, *INTENSITY_RANGE)
        return value, f"{value:g} g/kWh"
    region = args.region or args.default_region
    value = float(carbon_intensity(region))
    check_float(f"intensity of region {region!r}", value, *INTENSITY_RANGE)
    return value, region.upper()


def float_range(
    name: str,
    spec: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
    max_points: int = MAX_RANGE_POINTS,
) -> list[float]:
    """``start:stop:step`` (inclusive of stop) or a comma list ``a,b,c``.

    Every value is finite and in ``[lo, hi]``; at most ``max_points`` values; no empty item.
    The count is checked before any list is built.
    """
    usage = "expected start:stop:step with step > 0 and stop >= start, or a comma list like 1,2,4"
    s = spec.strip() if isinstance(spec, str) else ""
    if not s:
        raise ConfigError(f"{name}: empty value; {usage}")
    if len(s) > MAX_TEXT:
        raise ConfigError(f"{name}: longer than {MAX_TEXT} characters")
    try:
        if ":" in s:
            parts = s.split(":")
            if len(parts) != 3 or not all(p.strip() for p in parts):
                raise ValueError
            start, stop, step = (float(x) for x in parts)
            if not all(math.isfinite(v) for v in (start, stop, step)):
                raise ValueError
            if step <= 0 or stop < start:
                raise ValueError
            count = (stop - start) / step + 1e-9
            if not math.isfinite(count) or count >= max_points:  # floor(count) + 1 values
                raise ConfigError(
                    f"{name} {s!r}: more than {max_points} values; use a larger step"
                )
            n = math.floor(count) + 1
            values = [round(start + i * step, 10) for i in range(n)]
        else:
            items = s.split(",")
            if len(items) > max_points:
                raise ConfigError(f"{name} {s!r}: more than {max_points} values")
            if not all(x.strip() for x in items):
                raise ConfigError(f"{name} {s!r}: an empty item; {usage}")
            values = [float(x) for x in items]
    except ConfigError:
        raise
    except ValueError:  # float() of a bad item, or a malformed range
        raise ConfigError(f"{name} {s!r}: {usage}") from None
    for v in values:
        check_float(name, v, lo, hi, lo_open=lo_open)
    return values


def gpu_lifetimes(items: list[str] | None, default_years: float) -> dict[str, float]:
    """``--lifetime T4=10`` items -> {"T4": 10.0}; the default applies to any other GPU."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, years = item.partition("=")
        try:
            value = float(years) if sep and len(years) < 64 else float("nan")
        except ValueError:
            value = float("nan")
        lo, hi = LIFETIME_RANGE
        if not name.strip() or not math.isfinite(value) or not lo <= value <= hi:
            raise ConfigError(
                f"--lifetime {item!r}: expected GPU=YEARS with YEARS in [{lo:g}, {hi:g}], "
                "e.g. T4=10"
            )
        out[name.strip().upper()] = value
    check_float("--lifetime-years", default_years, *LIFETIME_RANGE)
    return out


def writable_dir(name: str, folder: Path) -> Path:
    """``folder`` if it is, or can be created as, a folder we may write in (nothing is created)."""
    p = Path(folder)
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{name} {str(p)!r}: exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"{name} {str(p)!r}: the folder is not writable")
        return p
    parent = p.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{name} {str(p)!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} {str(p)!r}: cannot create it in {str(parent)!r}")
    return p


def existing_file(name: str, file: Path) -> Path:
    """``file`` if it exists as a file (so that opening it creates nothing)."""
    p = Path(file)
    if not p.exists():
        raise ConfigError(f"{name} {str(p)!r}: no such file")
    if not p.is_file():
        raise ConfigError(f"{name} {str(p)!r}: not a file")
    return p
