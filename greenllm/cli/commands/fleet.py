"""``greenllm fleet plan|compare``: what to run on the GPUs you have (docs/fleet.md).

``plan`` prints the deployment the carbon (or cost) MILP chooses for a fleet file: replicas,
their GPUs and hosts, each workload's load split, the GPUs left off. ``compare`` puts it beside
the paper's rule, Standalone on the newest GPU type and the cheapest deployment, with SLO
attainment simulated at every replica's load. Missing profiles are made on the simulator first
and kept in ``--store`` for the next run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from greenllm.cli.args import float_in, path
from greenllm.cli.output import dumps, emit_json, fmt, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="plan a fleet: which configurations on which GPUs",
                       description=(__doc__ or "").splitlines()[0])  # fmt: skip
    actions = p.add_subparsers(dest="fleet_command", required=True)
    for name, helptext in (("plan", "the deployment with the least carbon (or cost)"),
                           ("compare", "the optimum beside the baselines")):  # fmt: skip
        a = actions.add_parser(name, help=helptext, description=helptext)
        a.add_argument("--fleet", type=path, required=True, help="the fleet file (TOML)")
        a.add_argument("--store", type=path, default=None,
                       help="the simulator's profiles (default: fleet-sim.sqlite beside the "
                       "default profile store)")  # fmt: skip
        a.add_argument("--duration-s", type=float_in(5.0, 3600.0), default=60.0,
                       help="simulated seconds of arrivals per profiled cell (default 60)")
        a.add_argument("--measured", type=path, default=None, metavar="STORE",
                       help="a profile store of your own measurements (`greenllm import "
                       "vllm-bench`): used where it covers a workload and configuration")
        a.add_argument("--json", action="store_true", help="print JSON")
        if name == "plan":
            a.add_argument("--objective", choices=("carbon", "cost"), default="carbon")
            a.add_argument("--out", type=path, default=None,
                           help="also write the deployment JSON to this file")
        a.set_defaults(run=run)


def _store(args: argparse.Namespace) -> Path:
    from greenllm.profiler.store import default_store_path

    if args.store is not None:
        return Path(args.store)
    store = default_store_path().with_name("fleet-sim.sqlite")
    store.parent.mkdir(parents=True, exist_ok=True)
    return store


def run(args: argparse.Namespace) -> int:
    from greenllm.fleet import compare_fleet, declare, load_fleet, plan_fleet

    spec = load_fleet(args.fleet)
    declare(spec)
    store = _store(args)
    objective = getattr(args, "objective", "carbon")
    plan = plan_fleet(spec, store, objective, duration_s=args.duration_s, measured=args.measured)
    if args.fleet_command == "plan":
        dep = plan.deployment(str(args.fleet))
        if args.out is not None:
            Path(args.out).write_text(dumps(dep) + "\n", encoding="utf-8")
        if args.json:
            emit_json(dep)
        else:
            _print_plan(dep)
        return 0
    check = store.with_name(store.stem + "-check.sqlite")
    result = compare_fleet(plan, check, duration_s=args.duration_s)
    if args.json:
        emit_json(result)
    else:
        _print_compare(result)
    return 0


def _print_plan(dep: dict[str, Any]) -> None:
    rows = [[r["workload"], r["label"], " + ".join(f"{g}@{h}" for g, h in zip(r["gpus"],
             r["hosts"], strict=True)), fmt(r["qps"]), fmt(r["capacity_qps"])]
            for r in dep["replicas"]]  # fmt: skip
    print(table(["workload", "configuration", "GPUs@host", "QPS", "capacity QPS"], rows,
                title=f"{dep['fleet']}: {len(rows)} replica(s), objective {dep['objective']}"))
    cost = dep["cost_per_h"]
    print(f"carbon {fmt(dep['carbon_g_per_h'])} g/h ({fmt(dep['carbon_g_per_query'])} g/request)"
          f"; cost {'unknown' if cost is None else f'${cost:.2f}/h'}")  # fmt: skip
    off = ", ".join(f"{o['count']} x {o['type']}@{o['host']}" for o in dep["gpus_off"])
    print(f"off: {off or 'none'}")


def _print_compare(result: dict[str, Any]) -> None:
    rows = []
    for name, r in result.items():
        if name == "pareto":
            continue
        if "error" in r:
            rows.append([name, "-", "-", "-", "-", "-", r["error"][:60]])
            continue
        gpus = ", ".join(f"{k}x{t}" for t, k in r["gpus_used"].items() if k)
        att = r.get("slo_attainment", {}).get("all")
        saves = r.get("optimum_saves")
        rows.append([name, fmt(r["carbon_g_per_h"]),
                     "-" if r["cost_per_h"] is None else f"{r['cost_per_h']:.2f}", gpus,
                     "yes" if r["fits_inventory"] else "NO",
                     "-" if att is None else f"{att:.3f}",
                     "" if name == "optimum" else "needs more GPUs than the inventory"
                     if saves is None else f"optimum saves {saves:+.1%}"])  # fmt: skip
    print(table(["deployment", "g CO2e/h", "$/h", "GPUs", "fits", "SLO att.", ""], rows))
    if result.get("pareto"):
        points = ", ".join(f"${q['cost_per_h']:.2f}/h -> {q['carbon_g_per_h']:.4g} g/h"
                           for q in result["pareto"])  # fmt: skip
        print(f"carbon/cost Pareto points: {points}")
    sys.stdout.flush()
