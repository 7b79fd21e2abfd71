"""``greenllm carbon``: Eq. 1-3 for one window on one or more GPUs."""

from __future__ import annotations

import argparse

from greenllm.cli.args import add_intensity_args, nonnegative, positive, resolve_intensity
from greenllm.cli.output import emit_json, fmt, table
from greenllm.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "carbon",
        help="embodied, operational and total carbon of a window (Eq. 1-3)",
        description="Carbon of a serving window: Eq. 1 (embodied), Eq. 2 (operational), Eq. 3. "
        "Repeat --gpu/--seconds/--energy-j for several GPUs.",
    )
    p.add_argument("--gpu", action="append", required=True, help="GPU name, e.g. A100 (repeatable)")
    p.add_argument(
        "--seconds",
        action="append",
        type=float,
        required=True,
        help="time the GPU was allocated, s (one value, or one per --gpu)",
    )
    p.add_argument(
        "--energy-j",
        action="append",
        type=float,
        required=True,
        help="energy the GPU drew, J (one per --gpu)",
    )
    p.add_argument("--lifetime-years", type=float, default=7.0, help="GPU lifetime (default 7)")
    p.add_argument("--tokens", type=int, default=None, help="tokens served, for per-token carbon")
    p.add_argument("--pue", type=float, default=1.0, help="power usage effectiveness (default 1)")
    add_intensity_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from greenllm.carbon import DeviceUsage, get_gpu, window_carbon

    gpus = [get_gpu(g) for g in args.gpu]
    seconds = _broadcast("--seconds", args.seconds, len(gpus))
    energy = _broadcast("--energy-j", args.energy_j, len(gpus))
    lifetime = positive("--lifetime-years", args.lifetime_years)
    if args.tokens is not None and args.tokens <= 0:
        raise ConfigError(f"--tokens = {args.tokens}: must be > 0")
    intensity, label = resolve_intensity(args)
    devices = [
        DeviceUsage(
            gpu=g,
            seconds=nonnegative("--seconds", s),
            energy_j=nonnegative("--energy-j", e),
            lifetime_years=lifetime,
        )
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


def _broadcast(name: str, values: list[float], n: int) -> list[float]:
    if len(values) == n:
        return values
    if len(values) == 1:
        return values * n
    raise ConfigError(
        f"{name} given {len(values)} times for {n} --gpu: give one value or one per GPU"
    )
