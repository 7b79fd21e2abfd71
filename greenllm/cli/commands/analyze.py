"""``greenllm analyze``: Section 5 (Eq. 4-6) for a standalone and a disaggregated measurement."""

from __future__ import annotations

import argparse
from typing import Any

from greenllm.cli.args import (
    ENERGY_RANGE,
    INTENSITY_RANGE,
    LIFETIME_RANGE,
    MIN_RUN_ENERGY_J,
    MIN_RUN_SECONDS,
    SECONDS_RANGE,
    add_intensity_args,
    check_float,
    float_in,
    float_range,
    gpu_lifetimes,
    resolve_intensity,
    text,
)
from greenllm.cli.output import emit_json, fmt, table
from greenllm.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="does disaggregation onto an old GPU save carbon? (Section 5, Eq. 4-6)",
        description="Compare the new GPU alone (Case 1) with the new GPU plus an old GPU "
        "(Case 2) serving the same work. Each run is GPU:SECONDS:ENERGY_J.",
    )
    p.add_argument(
        "--standalone", type=text, required=True, metavar="GPU:S:J", help="e.g. A100:3600:1.2e6"
    )
    p.add_argument(
        "--disaggregated",
        type=text,
        required=True,
        action="append",
        metavar="GPU:S:J",
        help="give twice: the new GPU's run, then the old GPU's, e.g. A100:3600:6e5 T4:3600:2e5",
    )
    p.add_argument(
        "--lifetime-years",
        type=float_in(*LIFETIME_RANGE),
        default=7.0,
        help=f"default GPU lifetime, {LIFETIME_RANGE[0]:g} to {LIFETIME_RANGE[1]:g} (default 7)",
    )
    p.add_argument(
        "--lifetime",
        type=text,
        action="append",
        metavar="GPU=YEARS",
        help="per-GPU lifetime, e.g. T4=10",
    )
    p.add_argument(
        "--sweep-intensity", type=text, metavar="A:B:STEP", help="Eq. 5 over intensities, g/kWh"
    )
    p.add_argument(
        "--sweep-old-lifetime", type=text, metavar="A:B:STEP", help="Eq. 6 over old-GPU lifetimes"
    )
    p.add_argument(
        "--sweep-new-lifetime", type=text, metavar="A:B:STEP", help="Eq. 6 over new-GPU lifetimes"
    )
    add_intensity_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def _run_arg(text: str, lifetimes: dict[str, float], default_years: float) -> Any:
    from greenllm.carbon import DeviceUsage, get_gpu

    parts = text.split(":")
    if len(parts) != 3:
        raise ConfigError(f"run {text!r}: expected GPU:SECONDS:ENERGY_J, e.g. A100:3600:1.2e6")
    try:
        if not parts[1].strip() or not parts[2].strip() or len(text) > 200:
            raise ValueError
        seconds, energy = float(parts[1]), float(parts[2])
    except ValueError:
        raise ConfigError(f"run {text!r}: SECONDS and ENERGY_J must be numbers") from None
    check_float(f"run {text!r}: SECONDS", seconds, MIN_RUN_SECONDS, SECONDS_RANGE[1])
    check_float(f"run {text!r}: ENERGY_J", energy, MIN_RUN_ENERGY_J, ENERGY_RANGE[1])
    gpu = get_gpu(parts[0])
    years = next((y for k, y in lifetimes.items() if get_gpu(k).name == gpu.name), default_years)
    return DeviceUsage(gpu=gpu, seconds=seconds, energy_j=energy, lifetime_years=years)


def run(args: argparse.Namespace) -> int:
    from greenllm.carbon.analysis import compare

    lifetimes = gpu_lifetimes(args.lifetime, args.lifetime_years)
    if len(args.disaggregated) != 2:
        raise ConfigError(
            f"--disaggregated given {len(args.disaggregated)} times: give it twice, "
            "the new GPU's run and then the old GPU's"
        )
    alone = _run_arg(args.standalone, lifetimes, args.lifetime_years)
    new, old = (_run_arg(t, lifetimes, args.lifetime_years) for t in args.disaggregated)
    alpha, label = resolve_intensity(args)
    # Every sweep is checked (values, count) before any work.
    alphas = old_years = new_years = None
    if args.sweep_intensity:
        alphas = float_range("--sweep-intensity", args.sweep_intensity, *INTENSITY_RANGE)
    if args.sweep_old_lifetime:
        old_years = float_range("--sweep-old-lifetime", args.sweep_old_lifetime, *LIFETIME_RANGE)
    if args.sweep_new_lifetime:
        new_years = float_range("--sweep-new-lifetime", args.sweep_new_lifetime, *LIFETIME_RANGE)
    report = compare(alone, [new, old], alpha)
    sweeps: dict[str, Any] = {}
    sc = report.scenario
    if alphas is not None:
        sweeps["intensity"] = {
            "g_per_kwh": alphas,
            "ratio": sc.ratio_vs_intensity(alphas).tolist(),
        }
    if old_years is not None:
        grid = sc.ratio_vs_lifetime(alpha, [new.lifetime_years], old_years)
        sweeps["old_lifetime"] = {"years": old_years, "ratio": grid[0].tolist()}
    if new_years is not None:
        years = new_years
        grid = sc.ratio_vs_lifetime(alpha, years, [old.lifetime_years])
        sweeps["new_lifetime"] = {"years": years, "ratio": grid[:, 0].tolist()}
    if args.json:
        emit_json({"region": label, **report.to_dict(), "sweeps": sweeps})
        return 0
    print(report.summary + "\n")
    rows = [
        ["standalone", report.standalone_embodied_g, report.standalone_operational_g,
         report.standalone_g],
        ["disaggregated", report.disaggregated_embodied_g, report.disaggregated_operational_g,
         report.disaggregated_g],
    ]  # fmt: skip
    print(table(["case", "embodied_g", "operational_g", "total_g"], rows,
                title=f"Section 5 at {label} ({fmt(alpha)} g/kWh)"))  # fmt: skip
    print(
        f"\nEq. 5 ratio {fmt(report.ratio)} -> savings {report.savings_fraction:+.2%}; "
        f"Eq. 4 energy condition holds: {fmt(report.energy_condition)}\n"
        f"break-even intensity: saves {report.breakeven_intensity}; "
        f"break-even old-GPU lifetime: saves {report.breakeven_old_lifetime}"
    )
    titles = {"intensity": ("g_per_kwh", "Eq. 5 ratio vs carbon intensity"),
              "old_lifetime": ("years", "Eq. 6 ratio vs old-GPU lifetime"),
              "new_lifetime": ("years", "Eq. 6 ratio vs new-GPU lifetime")}  # fmt: skip
    for key, sweep in sweeps.items():
        col, title = titles[key]
        rows = [[x, r, 1 - r] for x, r in zip(sweep[col], sweep["ratio"], strict=True)]
        print("\n" + table([col, "ratio", "savings"], rows, title=title))
    return 0
