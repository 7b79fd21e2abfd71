"""``greenllm plan``: Algorithm 1 over a profile store, per workload or per hour of a trace."""

from __future__ import annotations

import argparse
from datetime import UTC
from pathlib import Path

from greenllm.cli.args import (
    LIFETIME_RANGE,
    MAX_MARGIN_SIGMAS,
    MAX_REQUESTS,
    MAX_SEED,
    MAX_SWITCH_EMBODIED_G,
    MAX_SWITCH_ENERGY_KWH,
    MAX_VERIFY_CELLS,
    QPS_RANGE,
    add_intensity_args,
    existing_file,
    float_in,
    float_range,
    gpu_lifetimes,
    int_in,
    path,
    text,
)
from greenllm.cli.output import emit_json, fmt, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="the lowest-carbon configuration that meets the SLO, per workload (Algorithm 1)",
        description="Complete the carbon and SLO-attainment matrices of a profile store by "
        "collaborative filtering and run Algorithm 1. With --trace, choose per hour of a real "
        "2022 grid-intensity trace instead (switching cost and hysteresis included).",
    )
    p.add_argument("--store", type=path, default=None,
                   help="profile store, an existing file (default: user data)")  # fmt: skip
    p.add_argument("--backend", type=text, default=None, help="only profiles from this backend")
    p.add_argument("--slo-target", type=float_in(0.0, 1.0), default=0.9,
                   help="SLO attainment target, 0 to 1 (default 0.9)")  # fmt: skip
    p.add_argument("--priority", choices=("slo", "default"), default="slo", help="fallback rule")
    p.add_argument(
        "--method",
        type=text,
        default="als",
        help="completion: als (default), sgd, softimpute, surprise, mean",
    )
    p.add_argument(
        "--margin",
        type=float_in(0.0, MAX_MARGIN_SIGMAS),
        default=2.0,
        metavar="SIGMAS",
        help="filled cells must clear the target by this many estimated errors, "
        f"0 to {MAX_MARGIN_SIGMAS:g} (default 2)",
    )
    p.add_argument(
        "--verify",
        type=int_in(0, MAX_VERIFY_CELLS),
        default=0,
        metavar="CELLS",
        help="profile up to CELLS of the chosen cells that were filled (on --backend, default "
        "sim) and plan again, until every choice is measured",
    )
    p.add_argument("--requests", type=int_in(1, MAX_REQUESTS), default=300,
                   help=f"requests per verified cell, 1 to {MAX_REQUESTS}")  # fmt: skip
    p.add_argument("--lifetime-years", type=float_in(*LIFETIME_RANGE), default=7.0,
                   help="default GPU lifetime")  # fmt: skip
    p.add_argument("--lifetime", type=text, action="append", metavar="GPU=YEARS",
                   help="e.g. T4=10")  # fmt: skip
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0,
                   help=f"seed, 0 to {MAX_SEED}")  # fmt: skip
    add_intensity_args(p)
    g = p.add_argument_group("hourly planning (beyond the paper)")
    g.add_argument(
        "--trace",
        type=text,
        default=None,
        help="hourly intensity: CISO, MISO, ERCO, PJM, NYIS, "
        "BPAT (2022) or a CSV file of timestamp,g_per_kwh",
    )
    g.add_argument("--application", type=text, default=None,
                   help="application to plan for with --trace")  # fmt: skip
    g.add_argument("--qps", type=text, default=None,
                   help=f"rate in [{QPS_RANGE[0]:g}, {QPS_RANGE[1]:g}]: one value, or 24 comma "
                   "values (hour of day, UTC) or one per hour of the trace; default 1")  # fmt: skip
    g.add_argument("--switch-energy-kwh", type=float_in(0.0, MAX_SWITCH_ENERGY_KWH), default=None,
                   help=f"energy of one switch, 0 to {MAX_SWITCH_ENERGY_KWH:g} (default: "
                        "estimated from the profiles: one engine restart)")  # fmt: skip
    g.add_argument("--switch-embodied-g", type=float_in(0.0, MAX_SWITCH_EMBODIED_G), default=None,
                   help=f"fixed g of one switch, 0 to {MAX_SWITCH_EMBODIED_G:g} (default: "
                        "estimated from the profiles)")  # fmt: skip
    g.add_argument("--solver", choices=("offline", "online"), default="offline")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)  # fmt: skip


def _planner(args: argparse.Namespace):
    from greenllm.scheduler import Planner

    lifetimes = {
        **gpu_lifetimes(args.lifetime, args.lifetime_years),
        "default": args.lifetime_years,
    }
    kw = {"intensity_g_per_kwh": args.intensity} if args.intensity is not None else {
        "region": args.region or "CISO"}  # fmt: skip
    return Planner(**kw, lifetimes_years=lifetimes, slo_target=args.slo_target,
                   priority=args.priority, method=args.method, margin_sigmas=args.margin,
                   seed=args.seed)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from greenllm.errors import ConfigError
    from greenllm.profiler.store import ProfileStore, default_store_path

    if args.store is not None:
        store_path = existing_file("--store", args.store)
    else:
        store_path = Path(default_store_path())
        if not store_path.is_file():
            raise ConfigError(
                f"no profile store at {str(store_path)!r} (the default); run `greenllm profile` "
                "first or give --store"
            )
    if not args.trace and (args.application or args.qps is not None):
        raise ConfigError("--application and --qps plan per hour: give --trace too")
    planner = _planner(args)
    with ProfileStore(store_path) as store:
        if args.trace:
            return _run_hourly(args, planner, store)
        if args.verify:
            plan = _verified(args, planner, store)
        else:
            plan = planner.plan(store, backend=args.backend)
    _energy_note(plan)
    if args.json:
        import json

        from greenllm.cli.output import dumps

        emit_text = dumps(json.loads(plan.to_json()))  # strict: no NaN or infinity
        print(emit_text)
        return 0
    rows = [[e.application, f"({e.input_tokens},{e.output_tokens})", e.qps, e.configuration.label,
             e.carbon_g_per_token, e.slo_attainment, _pct(e.savings),
             "measured" if e.measured else "filled", e.energy_source,
             "yes" if e.fallback else ""]
            for e in plan.entries]  # fmt: skip
    where = plan.region or f"{fmt(plan.intensity_g_per_kwh)} g/kWh"
    print(table(["app", "size", "qps", "configuration", "g/token", "slo_att", "savings",
                 "cell", "energy", "fallback"], rows,
                title=f"Plan at {where}, SLO target {plan.slo_target:g}, baseline "
                f"{plan.baseline.label}, completion {plan.method}"))  # fmt: skip
    return 0


def _energy_note(plan) -> None:
    """One line on stderr when a chosen or baseline figure rests on energy not measured."""
    import sys

    sources = {s for e in plan.entries for s in (e.energy_source, e.baseline_energy_source)}
    weak = sorted(sources & {"modelled", "unmeasured"})
    if weak:
        print(f"note: some figures rest on {' or '.join(weak)} energy, not measured energy "
              "(unmeasured: 0 J, so carbon is embodied only); see the energy column or "
              "energy_source in --json", file=sys.stderr)  # fmt: skip


def _verified(args: argparse.Namespace, planner, store):
    from greenllm.profiler.sweep import sweep_measure
    from greenllm.scheduler import matrices_from_store
    from greenllm.scheduler.refine import verify_plan

    backend = args.backend or "sim"
    measure = sweep_measure(store, backend=backend, n_requests=args.requests, seed=args.seed)
    v = verify_plan(planner, matrices_from_store(store, backend=backend), measure, args.verify)
    if not args.json:
        print(f"verified: profiled {len(v.profiled)} cells on {backend} in {v.rounds} "
              f"rounds; {len(v.unverified)} choices still filled")  # fmt: skip
    return v.plan


def _run_hourly(args: argparse.Namespace, planner, store) -> int:
    from greenllm.carbon import CarbonIntensityTrace
    from greenllm.errors import ConfigError
    from greenllm.scheduler import matrices_from_store

    if not args.application:
        raise ConfigError("--trace needs --application (which application to plan for)")
    qps = float_range("--qps", args.qps if args.qps is not None else "1", *QPS_RANGE)
    trace_path = Path(args.trace)
    trace = (CarbonIntensityTrace.from_csv(trace_path)
             if trace_path.suffix == ".csv" or trace_path.exists()
             else CarbonIntensityTrace.from_region(args.trace))  # fmt: skip
    if len(qps) not in (1, 24, len(trace)):
        raise ConfigError(
            f"--qps: {len(qps)} values; give one, 24 (hour of day, UTC) or {len(trace)} "
            "(one per hour of the trace)"
        )
    m = matrices_from_store(store, backend=args.backend)
    hp = planner.plan_hourly(
        m,
        trace,
        args.application,
        qps if len(qps) > 1 else qps[0],
        switch_energy_kwh=args.switch_energy_kwh,
        switch_embodied_g=args.switch_embodied_g,
        solver=args.solver,
    )
    base = hp.baseline_total_g
    # Savings are always 1 - carbon / baseline carbon: positive = less carbon (as in `plan`).
    result = {
        "trace": args.trace, "hours": len(hp.choice), "switches": hp.switches,
        "total_g": hp.total_g, "static_total_g": hp.static_total_g,
        "baseline_total_g": base,
        "savings_vs_static": _saving(hp.total_g, hp.static_total_g),
        "savings_vs_baseline": _saving(hp.total_g, base),
        "static_savings_vs_baseline": _saving(hp.static_total_g, base),
        "hours_per_configuration": _hours_per_config(m.configs, hp.choice),
        "switch_energy_kwh": hp.switch_energy_kwh,
        "switch_embodied_g": hp.switch_embodied_g,
        "switch_cost_source": hp.switch_cost_source,
        "profiled_qps": list(hp.profiled_qps) if hp.profiled_qps else None,
        "load_outside_profiled": hp.load_outside_profiled,
        "hours_above_profiled": hp.hours_above_profiled,
        "hours_below_profiled": hp.hours_below_profiled,
        "load_warning": hp.load_warning,
        "schedule": _schedule(trace, m.configs, hp),
    }  # fmt: skip
    if args.json:
        emit_json(result)
        return 0
    print(table(["plan", "carbon_kg", "savings_vs_baseline"], [
        ["hourly (this planner)", hp.total_g / 1000, _pct(result["savings_vs_baseline"])],
        ["static (paper, mean intensity)", hp.static_total_g / 1000,
         _pct(result["static_savings_vs_baseline"])],
        ["baseline", base / 1000, _pct(0.0 if base > 0 else None)],
    ], title=f"{args.application} over {len(hp.choice)} hours of {args.trace}: "
       f"{hp.switches} switches; the hourly plan saves "
       f"{_pct(result['savings_vs_static'])} vs the static one"))  # fmt: skip
    print()
    print(table(["configuration", "hours"], sorted(result["hours_per_configuration"].items())))
    return 0


def _saving(carbon_g: float, reference_g: float) -> float | None:
    """1 - carbon / reference (positive = saving); None when the reference is 0."""
    import math

    if not (reference_g > 0 and math.isfinite(reference_g) and math.isfinite(carbon_g)):
        return None
    return 1.0 - carbon_g / reference_g


def _pct(value: float | None) -> str:
    import math

    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.1%}"


def _schedule(trace, configs, hp) -> list[dict]:
    """One entry per hour: its start (UTC), intensity, configuration and carbon."""
    from datetime import datetime

    from greenllm.errors import ProfileError

    starts = list(trace.timestamps_s)
    if len(starts) != len(hp.choice):
        raise ProfileError(
            f"the hourly plan has {len(hp.choice)} hours but the trace {len(starts)}"
        )
    return [
        {
            "start": datetime.fromtimestamp(float(t), tz=UTC).isoformat(),
            "start_s": float(t),
            "g_per_kwh": float(g),
            "configuration": configs[int(c)].label,
            "carbon_g": float(cg),
            "switch_g": float(sg),
            "static_configuration": configs[int(sc)].label,
        }
        for t, g, c, cg, sg, sc in zip(starts, trace.g_per_kwh, hp.choice, hp.carbon_g,
                                       hp.switch_g, hp.static_choice, strict=True)
    ]  # fmt: skip


def _hours_per_config(configs, choice) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in choice:
        counts[configs[c].label] = counts.get(configs[c].label, 0) + 1
    return counts
