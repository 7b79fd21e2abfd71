"""``greenllm replay``: a day of real requests and hourly grid intensity through the gateway.

Serves the day on the simulator three times, on the same requests and intensities: re-planned
live every hour (the controller of ``greenllm serve --replan-every``), on the paper's static
plan, and on Standalone; prints carbon, switches and SLO attainment side by side and writes a
figure and the full report to ``--out``. Each hour is served as a ``--sample-s`` sample of its
requests (docs/operate.md says why and how it scales to the hour).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from greenllm.cli.args import existing_file, float_in, float_range, int_in, path, text, writable_dir
from greenllm.cli.output import dumps, emit_json, fmt, table
from greenllm.errors import ConfigError

POLICIES = ("live", "static", "standalone")
MAX_LAG_S = 2.0  # the simulator's lag behind its clock worth a warning (virtual s)
MIN_REQUEST_TOKENS = 1024  # a configuration holding less is left out of the replay's candidates


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a day of requests and grid intensity: live "
                       "re-planning vs the static plan vs Standalone",
                       description=(__doc__ or "").splitlines()[0])  # fmt: skip
    p.add_argument("--requests", type=text, default="conversation",
                   help="request trace: conversation (default) or code")  # fmt: skip
    p.add_argument("--intensity", type=text, default="CISO", metavar="REGION",
                   help="hourly intensity trace of 2022: CISO (default), ERCO, PJM, MISO, NYIS, "
                   "BPAT")  # fmt: skip
    p.add_argument("--hours", type=int_in(1, 744), default=24, help="hours to replay (default 24)")
    p.add_argument("--start", type=text, default="2022-07-01",
                   help="first hour, UTC (a date of 2022 or 2022-07-01T06:00Z; default 2022-07-01)")
    p.add_argument("--time-scale", type=float_in(1.0, 1e6), default=3600.0,
                   help="the day runs this many times faster than real time: an hour takes "
                   "3600/S wall seconds per policy (default 3600)")  # fmt: skip
    p.add_argument("--sample-s", type=float_in(1.0, 3600.0), default=20.0,
                   help="seconds of each hour's requests actually served (default 20)")
    p.add_argument("--qps", type=float_in(0.01, 1000.0), default=2.0,
                   help="mean request rate (default 2; the trace's arrivals rescaled)")
    p.add_argument("--load", type=text, default="1", metavar="LIST",
                   help="relative load per hour, cycled (default 1: flat), e.g. 0.5,1,1.5")
    p.add_argument("--store", type=path, default=None,
                   help="profile store to plan from (default: profile the trace's application "
                   "on the simulator first, a few seconds)")  # fmt: skip
    p.add_argument("--application", type=text, default=None,
                   help="the profiled application (default: the trace's, e.g. sharegpt)")
    p.add_argument("--policies", type=text, default=",".join(POLICIES),
                   help="comma list of live, static, standalone (default all three)")
    p.add_argument("--hysteresis", type=float_in(0.0, 1000.0), default=1.0,
                   help="live: switch when the saving exceeds this x a switch's cost (default 1)")
    p.add_argument("--engine-start-s", type=float_in(0.0, 3600.0), default=60.0,
                   help="modelled engine start of a switch, seconds (default 60)")
    p.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="acceptance draws")
    p.add_argument("--out", type=path, default=Path("out/replay"),
                   help="folder for replay.png and replay.json (default out/replay)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def _policies(spec: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in spec.split(",") if x.strip())
    bad = [x for x in items if x not in POLICIES]
    if not items or bad or len(set(items)) != len(items):
        raise ConfigError(f"--policies {spec!r}: a comma list of distinct names from "
                          f"{', '.join(POLICIES)}")  # fmt: skip
    return items


def _table(args: argparse.Namespace, application: str, levels: list[float]) -> Any:
    """The completed profiles: --store, or the simulator's profile of ``application``."""
    from greenllm.profiler.store import ProfileStore
    from greenllm.profiler.sweep import SweepGrid, paper_configurations, run_sweep
    from greenllm.scheduler import Planner

    if args.store is not None:
        return Planner().table(ProfileStore(existing_file("--store", args.store)), application)
    with tempfile.TemporaryDirectory(prefix="greenllm-replay-") as tmp, ProfileStore(
        Path(tmp) / "profiles.sqlite"
    ) as store:
        grid = SweepGrid.build(paper_configurations(), [application], ["sampled"], levels)
        run_sweep(grid, store, backend="sim", n_requests=300, seed=args.seed)
        return Planner().table(store, application)


def run(args: argparse.Namespace) -> int:
    from greenllm.backends.sim import LiveSim
    from greenllm.serve.replay import plan_day, plot_replay, replay
    from greenllm.workloads import TRACES, list_traces

    policies = _policies(args.policies)
    load = tuple(float_range("--load", args.load, 0.01, 100.0))
    out = writable_dir("--out", args.out)
    name = args.requests.strip().lower()
    if name not in TRACES or TRACES[name].application is None or name == "summarization":
        arrivals = [t for t in list_traces() if t != "summarization"]
        raise ConfigError(f"--requests {args.requests!r}: a trace with arrival times, one of "
                          f"{', '.join(arrivals)}")  # fmt: skip
    application = args.application or TRACES[name].application
    day_args = dict(hours=args.hours, start=args.start, qps=args.qps, load=load,
                    sample_s=args.sample_s, seed=args.seed)  # fmt: skip
    plan_day(name, args.intensity, **day_args)  # bad days fail here, before any profiling
    peak = args.qps * max(load)
    levels = sorted({round(args.qps * f, 4) for f in (0.25, 0.5, 1.0, 1.5, 2.0)}
                    | {round(args.qps * x, 4) for x in load} | {round(peak * 1.25, 4)})
    table = _table(args, application, levels)
    usable = {int(i) for i in table.allowed.any(axis=0).nonzero()[0]} | {table.baseline}
    caps = [LiveSim(table.configs[i]).max_request_tokens for i in sorted(usable)]
    cap = min(c for c in caps if c >= MIN_REQUEST_TOKENS)
    sim_scale = args.sample_s * args.time_scale / 3600.0
    if not 0.01 <= sim_scale <= 1e6:
        raise ConfigError(f"--sample-s x --time-scale / 3600 = {sim_scale:g}: the simulator's "
                          "speed must be 0.01 to 1e6 virtual seconds per wall second")  # fmt: skip
    day = plan_day(name, args.intensity, max_request_tokens=cap,
                   max_output_tokens=min(1024, cap // 2), **day_args)  # fmt: skip
    logging.getLogger("greenllm.serve").setLevel(logging.ERROR)  # switches are in the report
    report = replay(day, table, policies=policies, time_scale=sim_scale,
                    engine_start_s=args.engine_start_s, hysteresis=args.hysteresis,
                    seed=args.seed)  # fmt: skip
    payload = report.to_dict()
    payload["simulator_time_scale"] = sim_scale
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(dumps(payload) + "\n", encoding="utf-8")
    figure = plot_replay(report, out / "replay.png")
    if args.json:
        emit_json(payload)
    else:
        _print(report, payload, figure)
    lag = max(o.max_lag_s for o in report.outcomes.values())
    if lag > MAX_LAG_S:
        sys.stdout.flush()
        print(f"greenllm: warning: the simulator fell up to {lag:.1f} virtual s behind its "
              "clock (arrivals may come late, energy is smeared over the lag); lower --time-scale "
              "or --sample-s", file=sys.stderr)  # fmt: skip
    return 0


def _print(report: Any, payload: dict[str, Any], figure: Path) -> None:
    day = report.day
    print(f"{day.trace} requests at {payload['qps_mean']:g} QPS on average, {day.region} "
          f"intensity, {len(day.hours)} h from {day.hours[0].label}; each hour served as a "
          f"{day.sample_s:g} s sample; static plan: {report.static_configuration}")  # fmt: skip
    rows = []
    for name, o in report.outcomes.items():
        rows.append([name, o.requests, sum(h.errors for h in o.hours), len(o.switches),
                     fmt(o.g_per_token * 1e3), fmt(o.day_estimate_g / 1e3),
                     f"{o.slo_attainment:.3f}", f"{o.wall_s:.1f}"])  # fmt: skip
    print(table(["policy", "requests", "errors", "switches", "mg/token", "day kg (est.)",
                 "SLO att.", "wall s"], rows))  # fmt: skip
    for key, v in payload["savings"].items():
        p, q = key.split("_vs_")
        per_token, day_estimate = v["per_token"], v["day_estimate"]
        print(f"{p} saves {per_token:+.1%} of {q}'s carbon per token, {day_estimate:+.1%} "
              "over the day (switches included; - is more carbon)")  # fmt: skip
    print(f"figure: {figure}")
