"""``greenllm plan``: Algorithm 1 over a profile store, per workload or per hour of a trace."""

from __future__ import annotations

import argparse
from pathlib import Path

from greenllm.cli.args import add_intensity_args, float_range, gpu_lifetimes
from greenllm.cli.output import emit_json, fmt, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="the lowest-carbon configuration that meets the SLO, per workload (Algorithm 1)",
        description="Complete the carbon and SLO-attainment matrices of a profile store by "
        "collaborative filtering and run Algorithm 1. With --trace, choose per hour of a real "
        "2022 grid-intensity trace instead (switching cost and hysteresis included).",
    )
    p.add_argument("--store", type=Path, default=None, help="profile store (default: user data)")
    p.add_argument("--backend", default=None, help="only profiles from this backend")
    p.add_argument("--slo-target", type=float, default=0.9, help="SLO attainment target")
    p.add_argument("--priority", choices=("slo", "default"), default="slo", help="fallback rule")
    p.add_argument(
        "--method", default="als", help="completion: als (default), sgd, softimpute, surprise, mean"
    )
    p.add_argument(
        "--margin",
        type=float,
        default=2.0,
        metavar="SIGMAS",
        help="filled cells must clear the target by this many estimated errors (default 2)",
    )
    p.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="CELLS",
        help="profile up to CELLS of the chosen cells that were filled (on --backend, default "
        "sim) and plan again, until every choice is measured",
    )
    p.add_argument("--requests", type=int, default=300, help="requests per verified cell")
    p.add_argument("--lifetime-years", type=float, default=7.0, help="default GPU lifetime")
    p.add_argument("--lifetime", action="append", metavar="GPU=YEARS", help="e.g. T4=10")
    p.add_argument("--seed", type=int, default=0)
    add_intensity_args(p)
    g = p.add_argument_group("hourly planning (beyond the paper)")
    g.add_argument(
        "--trace",
        default=None,
        help="hourly intensity: CISO, MISO, ERCO, PJM, NYIS, "
        "BPAT (2022) or a CSV file of timestamp,g_per_kwh",
    )
    g.add_argument("--application", default=None, help="application to plan for with --trace")
    g.add_argument("--qps", default="1", help="rate: one value, or 24 comma values (hour of day)")
    g.add_argument("--switch-energy-kwh", type=float, default=0.0, help="energy of one switch")
    g.add_argument("--switch-embodied-g", type=float, default=0.0, help="fixed g of one switch")
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
    from greenllm.profiler.store import ProfileStore

    planner = _planner(args)
    with ProfileStore(args.store) as store:
        if args.trace:
            return _run_hourly(args, planner, store)
        if args.verify:
            plan = _verified(args, planner, store)
        else:
            plan = planner.plan(store, backend=args.backend)
    if args.json:
        print(plan.to_json())
        return 0
    rows = [[e.application, f"({e.input_tokens},{e.output_tokens})", e.qps, e.configuration.label,
             e.carbon_g_per_token, e.slo_attainment, f"{e.savings:+.1%}",
             "measured" if e.measured else "filled", "yes" if e.fallback else ""]
            for e in plan.entries]  # fmt: skip
    where = plan.region or f"{fmt(plan.intensity_g_per_kwh)} g/kWh"
    print(table(["app", "size", "qps", "configuration", "g/token", "slo_att", "vs_base",
                 "cell", "fallback"], rows,
                title=f"Plan at {where}, SLO target {plan.slo_target:g}, baseline "
                f"{plan.baseline.label}, completion {plan.method}"))  # fmt: skip
    return 0


def _verified(args: argparse.Namespace, planner, store):
    from greenllm.errors import ConfigError
    from greenllm.profiler.sweep import sweep_measure
    from greenllm.scheduler import matrices_from_store
    from greenllm.scheduler.refine import verify_plan

    if args.verify < 0:
        raise ConfigError(f"--verify {args.verify}: must be a number of cells >= 0")
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
    path = Path(args.trace)
    trace = (CarbonIntensityTrace.from_csv(path) if path.suffix == ".csv" or path.exists()
             else CarbonIntensityTrace.from_region(args.trace))  # fmt: skip
    qps = float_range("--qps", args.qps)
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
    result = {
        "trace": args.trace, "hours": len(hp.choice), "switches": hp.switches,
        "total_g": hp.total_g, "static_total_g": hp.static_total_g,
        "baseline_total_g": hp.baseline_total_g, "savings_vs_static": hp.savings_vs_static,
        "savings_vs_baseline": hp.savings_vs_baseline,
        "hours_per_configuration": _hours_per_config(m.configs, hp.choice),
    }  # fmt: skip
    if args.json:
        emit_json(result)
        return 0
    print(table(["plan", "carbon_kg", "vs_hourly"], [
        ["hourly (this planner)", hp.total_g / 1000, "0.0%"],
        ["static (paper, mean intensity)", hp.static_total_g / 1000,
         f"{hp.static_total_g / hp.total_g - 1:+.1%}"],
        ["baseline", hp.baseline_total_g / 1000, f"{hp.baseline_total_g / hp.total_g - 1:+.1%}"],
    ], title=f"{args.application} over {len(hp.choice)} hours of {args.trace}: "
       f"{hp.switches} switches"))  # fmt: skip
    print()
    print(table(["configuration", "hours"], sorted(result["hours_per_configuration"].items())))
    return 0


def _hours_per_config(configs, choice) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in choice:
        counts[configs[c].label] = counts.get(configs[c].label, 0) + 1
    return counts
