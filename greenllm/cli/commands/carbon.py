"""``greenllm carbon``: Eq. 1-3 for one window on one or more GPUs."""

from __future__ import annotations

import argparse
import sys

from greenllm.cli.args import (
    ENERGY_RANGE,
    LIFETIME_RANGE,
    MAX_RANGE_POINTS,
    MAX_TOKENS,
    SECONDS_RANGE,
    add_intensity_args,
    float_in,
    int_in,
    resolve_intensity,
    text,
)
from greenllm.cli.output import emit_json, fmt, table
from greenllm.errors import ConfigError
from greenllm.units import MAX_PUE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "carbon",
        help="embodied, operational and total carbon of a window (Eq. 1-3)",
        description="Carbon of a serving window: Eq. 1 (embodied), Eq. 2 (operational), Eq. 3. "
        "Repeat --gpu and --energy-j for several GPUs (one --energy-j per --gpu); --seconds once "
        "for all or once per GPU.",
    )
    p.add_argument(
        "--gpu", action="append", type=text, required=True, help="GPU name, e.g. A100 (repeatable)"
    )
    p.add_argument(
        "--seconds",
        action="append",
        type=float_in(*SECONDS_RANGE),
        required=True,
        help=f"time the GPU was allocated, 0 to {SECONDS_RANGE[1]:g} s "
        "(one value for all GPUs, or one per --gpu)",
    )
    p.add_argument(
        "--energy-j",
        action="append",
        type=float_in(*ENERGY_RANGE),
        required=True,
        help=f"energy the GPU drew, 0 to {ENERGY_RANGE[1]:g} J (exactly one per --gpu)",
    )
    p.add_argument(
        "--lifetime-years",
        type=float_in(*LIFETIME_RANGE),
        default=7.0,
        help=f"GPU lifetime, {LIFETIME_RANGE[0]:g} to {LIFETIME_RANGE[1]:g} (default 7)",
    )
    p.add_argument(
        "--tokens",
        type=int_in(1, MAX_TOKENS),
        default=None,
        help="tokens served, for per-token carbon",
    )
    p.add_argument(
        "--pue",
        type=float_in(1.0, MAX_PUE),
        default=1.0,
        help=f"power usage effectiveness, 1 to {MAX_PUE:g} (default 1)",
    )
    add_intensity_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from greenllm.carbon import DeviceUsage, get_gpu, window_carbon

    if len(args.gpu) > MAX_RANGE_POINTS:
        raise ConfigError(f"--gpu given {len(args.gpu)} times: at most {MAX_RANGE_POINTS}")
    gpus = [get_gpu(g) for g in args.gpu]
    seconds = _broadcast("--seconds", args.seconds, len(gpus))
    if len(args.energy_j) != len(gpus):
        raise ConfigError(
            f"--energy-j given {len(args.energy_j)} times for {len(gpus)} --gpu: "
            "give exactly one per GPU, in the same order"
        )
    energy = list(args.energy_j)
    lifetime = args.lifetime_years
    intensity, label = resolve_intensity(args)
    for g, s, e in zip(gpus, seconds, energy, strict=True):
        _warn_if_above_max_power(g, s, e)
    devices = [
        DeviceUsage(gpu=g, seconds=s, energy_j=e, lifetime_years=lifetime)
        for g, s, e in zip(gpus, seconds, energy, strict=True)
    ]
    per_gpu = [window_carbon([d], intensity, pue=args.pue) for d in devices]
    total = window_carbon(devices, intensity, tokens=args.tokens, pue=args.pue)
    if args.json:
        emit_json(
            {
                "intensity_g_per_kwh": intensity,
                "region": label,
                "lifetime_years": lifetime,
                "devices": [
                    {"gpu": d.gpu.name, "seconds": d.seconds, "energy_j": d.energy_j, **b.to_dict()}
                    for d, b in zip(devices, per_gpu, strict=True)
                ],
                "total": total.to_dict(),
            }
        )
        return 0
    rows = [
        [d.gpu.name, d.seconds, d.energy_j, b.embodied_g, b.operational_g, b.total_g]
        for d, b in zip(devices, per_gpu, strict=True)
    ]
    if len(devices) > 1:
        rows.append(
            ["all", None, total.energy_j, total.embodied_g, total.operational_g, total.total_g]
        )
    print(
        table(
            ["gpu", "seconds", "energy_j", "embodied_g", "operational_g", "total_g"],
            rows,
            title=f"Carbon at {label} ({fmt(intensity)} g/kWh), lifetime {lifetime:g} years",
        )
    )
    if args.tokens:
        print(
            f"\nper token: {fmt(total.total_per_token_g)} g "
            f"(embodied {fmt(total.embodied_per_token_g)} g, "
            f"operational {fmt(total.operational_per_token_g)} g)"
        )
    return 0


def _warn_if_above_max_power(gpu, seconds: float, energy_j: float) -> None:
    """One line on stderr when ``energy_j`` exceeds what the GPU's max power allows."""
    max_w = getattr(gpu, "max_power_w", None)
    if not max_w or energy_j <= max_w * seconds:
        return
    avg = f"{energy_j / seconds:.4g} W on average" if seconds > 0 else "energy in 0 s"
    print(
        f"greenllm carbon: warning: {gpu.name}: {energy_j:g} J in {seconds:g} s is {avg}, above "
        f"its {max_w:g} W max power; check --energy-j and --seconds",
        file=sys.stderr,
    )


def _broadcast(name: str, values: list[float], n: int) -> list[float]:
    if len(values) == n:
        return values
    if len(values) == 1:
        return values * n
    raise ConfigError(
        f"{name} given {len(values)} times for {n} --gpu: give one value or one per GPU"
    )
