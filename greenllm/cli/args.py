"""Argument types shared by the subcommands; each raises ConfigError naming the bad value."""

from __future__ import annotations

import argparse
import math

from greenllm.errors import ConfigError


def add_intensity_args(p: argparse.ArgumentParser, default_region: str = "CISO") -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--region",
        default=None,
        help=f"grid region or ISO-3166 alpha-3 country (default {default_region}); "
        "see `greenllm regions`",
    )
    g.add_argument(
        "--intensity",
        type=float,
        default=None,
        metavar="G_PER_KWH",
        help="carbon intensity in gCO2/kWh (instead of --region)",
    )
    p.set_defaults(default_region=default_region)


def resolve_intensity(args: argparse.Namespace) -> tuple[float, str]:
    """(g/kWh, label) from --intensity or --region."""
    from greenllm.carbon import carbon_intensity

    if args.intensity is not None:
        value = nonnegative("--intensity", args.intensity)
        return value, f"{value:g} g/kWh"
    region = args.region or args.default_region
    return carbon_intensity(region), region.upper()


def nonnegative(name: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} = {value!r}: must be a finite number >= 0")
    return value


def positive(name: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} = {value!r}: must be a finite number > 0")
    return value


def float_range(name: str, text: str) -> list[float]:
    """``start:stop:step`` (inclusive of stop) or a comma list ``a,b,c``."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            n = math.floor((stop - start) / step + 1e-9) + 1
            return [round(start + i * step, 10) for i in range(n)]
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"{name} = {text!r}: expected start:stop:step with step > 0 and stop >= start, "
            "or a comma list like 1,2,4"
        ) from None


def gpu_lifetimes(items: list[str] | None, default_years: float) -> dict[str, float]:
    """``--lifetime T4=10`` items -> {"T4": 10.0}; the default applies to any other GPU."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, years = item.partition("=")
        try:
            value = float(years) if sep else float("nan")
        except ValueError:
            value = float("nan")
        if not name or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"--lifetime {item!r}: expected GPU=YEARS with YEARS > 0, e.g. T4=10")
        out[name.upper()] = value
    positive("--lifetime-years", default_years)
    return out
