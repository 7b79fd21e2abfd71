"""``greenllm serve``: an OpenAI-compatible gateway over one configuration, with carbon receipts.

The configuration comes from ``--config`` (the sweep grammar: ``standalone``, ``spec:DRAFT``,
``dpd:OLD_GPU``, ``dsd:OLD_GPU:DRAFT``, optional ``@NEW_GPU``) or from a plan
(``--plan plan.json --workload APP[@QPS]``: the plan's choice for that application, at the
given QPS or, without one, at the highest QPS the plan covers). Binds 127.0.0.1 unless
``--host`` says otherwise; prints ``greenllm serve: listening on URL`` once the engines are up;
Ctrl-C or SIGTERM drains in-flight requests and stops every process it started (exit 130).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from greenllm.cli.args import (
    add_intensity_args,
    duration_s,
    existing_file,
    float_in,
    int_in,
    path,
    text,
)
from greenllm.errors import ConfigError

BACKENDS = ("sim", "torch", "vllm")
ROLE_NAMES = ("target", "prefill", "decode", "draft")
PROVIDER_NAMES = ("static", "trace", "electricitymaps", "watttime")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a configuration behind an OpenAI-compatible API, with carbon receipts",
        description=(__doc__ or "").splitlines()[0],
    )
    p.add_argument("--backend", choices=BACKENDS, required=True,
                   help="sim (simulated GPUs), torch (greenllm's engine) or vllm")  # fmt: skip
    which = p.add_mutually_exclusive_group()
    which.add_argument("--config", type=text, metavar="SPEC",
                       help="standalone | spec:DRAFT | dpd:OLD_GPU | dsd:OLD_GPU:DRAFT"
                       " [@NEW_GPU]")  # fmt: skip
    which.add_argument(
        "--plan", type=path, metavar="FILE", help="a plan from `greenllm plan --json`"
    )
    which.add_argument("--deployment", type=path, metavar="FILE",
                       help="a fleet deployment from `greenllm fleet plan --out`: every replica, "
                       "each workload's traffic (model = the workload's name) split among them")
    p.add_argument("--workload", type=text, metavar="APP[@QPS]",
                   help="with --plan: the application (and QPS) to serve; with "
                   "--replan-every: the application the profiles are for")  # fmt: skip
    p.add_argument("--target", type=text, default=None,
                   help="target model (default llama-2-7b on sim, else smollm2-135m)")  # fmt: skip
    p.add_argument("--new-gpu", type=text, default="A100", help="new GPU (default A100)")
    p.add_argument("--link-gbps", type=float_in(0.001, 10_000, lo_open=False), default=16.0,
                   help="link between the GPUs, Gbit/s (default 16)")  # fmt: skip
    p.add_argument("--host", type=text, default="127.0.0.1", help="address to bind (default "
                   "127.0.0.1; 0.0.0.0 exposes the server to the network)")  # fmt: skip
    p.add_argument("--port", type=int_in(0, 65535), default=8000, help="port (0: any free one)")
    p.add_argument("--api-key", type=text, default=None,
                   help="require 'Authorization: Bearer KEY' (or $GREENLLM_API_KEY)")  # fmt: skip
    add_intensity_args(p)
    p.add_argument("--time-scale", type=float_in(0.001, 10_000), default=1.0,
                   help="sim: virtual seconds per wall second (default 1: real time)")  # fmt: skip
    p.add_argument("--max-inflight", type=int_in(1, 100_000), default=256,
                   help="requests in flight before 429 (default 256)")  # fmt: skip
    p.add_argument("--max-tokens-limit", type=int_in(1, 1_048_576), default=4096,
                   help="most output tokens one request may ask for (default 4096)")  # fmt: skip
    p.add_argument("--upstream", action="append", type=text, default=None, metavar="ROLE=URL",
                   help="vllm: attach to a running server instead of starting one "
                   f"(roles: {', '.join(ROLE_NAMES)}; repeatable)")  # fmt: skip
    p.add_argument("--model-dir", type=path, default=None,
                   help="vllm: the target model folder (default SmolLM2)")  # fmt: skip
    p.add_argument("--draft-dir", type=path, default=None, help="vllm: the draft model folder")
    p.add_argument("--draft-ahead", action="store_true",
                   help="DSD: the draft drafts the next round while the target verifies")
    p.add_argument("--adaptive-k", action="store_true",
                   help="torch DSD: K per request from its acceptance (0: speculation off)")
    p.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    live = p.add_argument_group("live re-planning (docs/operate.md)")
    live.add_argument("--replan-every", type=duration_s(0.0, 7 * 86_400.0), default=None,
                      metavar="DURATION", help="re-plan every DURATION (90s, 15m, 1h) from "
                      "the profiles in --store, switching make-before-break")  # fmt: skip
    live.add_argument("--store", type=path, default=None,
                      help="profile store the controller plans from (`greenllm profile`)")
    live.add_argument("--intensity-provider", choices=PROVIDER_NAMES, default=None,
                      help="live grid intensity: static (default with --replan-every), trace, "
                      "electricitymaps ($ELECTRICITYMAPS_API_KEY), watttime "
                      "($WATTTIME_USER, $WATTTIME_PASSWORD)")  # fmt: skip
    live.add_argument("--zone", type=text, default=None,
                      help="the provider's zone (default: --region), e.g. CISO, DE, CAISO_NORTH")
    live.add_argument("--trace-year", type=int_in(1900, 2100), default=None,
                      help="trace provider: the year today is read as (the shipped traces are "
                      "of 2022: --trace-year 2022)")  # fmt: skip
    live.add_argument("--hysteresis", type=float_in(0.0, 1000.0), default=1.0,
                      help="switch when the saving exceeds this x a switch's cost (default 1)")
    live.add_argument("--min-dwell", type=duration_s(0.0, 7 * 86_400.0, lo_open=False), default=0.0,
                      metavar="DURATION", help="least time on a configuration (default 0)")
    live.add_argument("--audit-log", type=path, default=None, metavar="FILE",
                      help="append every decision to this JSONL file")
    p.set_defaults(run=run)


def configuration_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~greenllm.config.Configuration` that ``--config`` or ``--plan`` names."""
    from greenllm.profiler.sweep import parse_configurations

    target = args.target or ("smollm2-135m" if args.backend == "torch" else "llama-2-7b")
    if args.config is not None:
        if args.workload is not None and args.replan_every is None:
            raise ConfigError("--workload goes with --plan or --replan-every, not --config")
        configs = parse_configurations(args.config, new_gpu=args.new_gpu, target_model=target,
                                       link_gbps=args.link_gbps)  # fmt: skip
        if len(configs) != 1:
            raise ConfigError(
                f"--config {args.config!r}: name one configuration, not {len(configs)}"
            )
        return configs[0]
    if args.plan is None:
        if args.replan_every is None:
            raise ConfigError("give --config SPEC or --plan FILE --workload APP (or "
                              "--replan-every with --store and --workload)")  # fmt: skip
        return None  # the controller's first decision chooses
    if args.workload is None:
        raise ConfigError("--plan needs --workload APP[@QPS] (the application to serve)")
    return plan_choice(existing_file("--plan", args.plan), args.workload)


def plan_choice(plan_file: Path, workload: str) -> Any:
    """The configuration a plan chose for ``APP[@QPS]`` (the highest QPS without one)."""
    from greenllm.scheduler import Plan

    try:
        plan = Plan.from_json(plan_file.read_bytes())
    except ConfigError as err:
        raise ConfigError(
            f"--plan {plan_file}: not a plan from `greenllm plan --json` ({err})"
        ) from err
    app, _, qps_text = workload.partition("@")
    entries = [e for e in plan.entries if e.application == app]
    if not entries:
        names = sorted({e.application for e in plan.entries})
        raise ConfigError(f"--workload {app!r}: the plan has no such application; it has "
                          f"{', '.join(names) or 'none'}")  # fmt: skip
    if qps_text:
        try:
            qps = float(qps_text)
        except ValueError:
            raise ConfigError(
                f"--workload {workload!r}: QPS {qps_text!r} is not a number"
            ) from None
        match = [e for e in entries if abs(e.qps - qps) <= 1e-9 * max(1.0, qps)]
        if not match:
            have = ", ".join(f"{e.qps:g}" for e in entries)
            raise ConfigError(f"--workload {workload!r}: the plan has {app} at QPS {have}")
        entry = match[0]
    else:
        entry = max(entries, key=lambda e: e.qps)
        logging.getLogger("greenllm").info(
            "serving the plan's choice for %s at its highest QPS, %g", app, entry.qps
        )
    return entry.configuration


def build_upstream(args: argparse.Namespace, configuration: Any, origin: Any = None) -> Any:
    """The upstream for ``--backend`` (only the options that backend takes); ``origin``: the
    virtual clock a sim upstream shares (a switch's new configuration)."""
    from greenllm.serve.upstreams import upstream_class

    if args.backend != "vllm" and (args.upstream or args.model_dir or args.draft_dir):
        raise ConfigError("--upstream, --model-dir and --draft-dir are for --backend vllm")
    if args.backend != "sim" and args.time_scale != 1.0:
        raise ConfigError("--time-scale is for --backend sim")
    if args.adaptive_k and args.backend != "torch":
        raise ConfigError("--adaptive-k is for --backend torch")
    cls = upstream_class(args.backend)
    if args.backend == "sim":
        from greenllm.backends.sim import SimOptions

        return cls(configuration, time_scale=args.time_scale, origin=origin,
                   options=SimOptions(dsd_draft_ahead=args.draft_ahead))  # fmt: skip
    if args.backend == "torch":
        return cls(configuration, engine_options={"ahead": args.draft_ahead,
                                                  "adaptive_k": args.adaptive_k})  # fmt: skip
    urls: dict[str, str] = {}
    for item in args.upstream or []:
        role, eq, url = item.partition("=")
        http = url.startswith(("http://", "https://"))
        host_port = url.rpartition(":")[2].isdigit() and ":" in url  # the draft server: H:P
        if not eq or role not in ROLE_NAMES or not (http or (role == "draft" and host_port)):
            raise ConfigError(
                f"--upstream {item!r}: expected ROLE=URL with ROLE one of "
                f"{', '.join(ROLE_NAMES)} (e.g. target=http://10.0.0.2:8000, "
                "draft=10.0.0.3:9000)"
            )
        urls[role] = url.rstrip("/")
    kwargs: dict[str, Any] = {"upstream_urls": urls or None, "draft_ahead": args.draft_ahead}
    if args.model_dir is not None:
        kwargs["model_dir"] = args.model_dir
    if args.draft_dir is not None:
        kwargs["draft_dir"] = args.draft_dir
    return cls(configuration, **kwargs)


def table_intensity(args: argparse.Namespace) -> float:
    """The intensity the first choice is made at (--intensity, else the region's)."""
    from greenllm.carbon import carbon_intensity

    if args.intensity is not None:
        return float(args.intensity)
    return carbon_intensity(args.zone or args.region or args.default_region)


class _OneLine(logging.Formatter):
    """``greenllm serve: message`` without tracebacks (they stay out of the terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"greenllm serve: {' '.join(record.getMessage().split())}"


class _NoTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().lstrip().startswith("Traceback")


def _log_to_stderr(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    handler.addFilter(_NoTraceback())
    quiet = "DEBUG" if level == "debug" else "WARNING"  # uvicorn's start/stop chatter
    for name, lvl in (("greenllm", level.upper()), ("uvicorn.error", quiet)):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(lvl)
        log.propagate = False


def build_controller(args: argparse.Namespace, gateway: Any, table: Any) -> Any:
    """The controller of ``--replan-every`` (None without it)."""
    from greenllm.carbon import make_provider
    from greenllm.serve import Controller, ControllerSettings

    zone = args.zone or (None if args.intensity is not None else
                         (args.region or args.default_region))  # fmt: skip
    provider = make_provider(args.intensity_provider or "static", zone=zone,
                             year=args.trace_year)  # fmt: skip
    settings = ControllerSettings(
        period_s=args.replan_every, hysteresis=args.hysteresis, min_dwell_s=args.min_dwell,
        time_scale=args.time_scale if args.backend == "sim" else 1.0,
    )  # fmt: skip
    live = getattr(gateway.upstream, "live", None)  # sim: one virtual clock across switches
    origin = None if live is None else live.origin
    return Controller(gateway, table, provider, lambda c: build_upstream(args, c, origin),
                      settings, audit_path=args.audit_log)  # fmt: skip


def plan_table(args: argparse.Namespace) -> Any:
    """The completed profiles the controller chooses from (--store, --workload)."""
    from greenllm.profiler.store import ProfileStore
    from greenllm.scheduler import Planner

    if args.store is None or args.workload is None:
        raise ConfigError("--replan-every needs --store FILE (profiles) and --workload APP")
    if args.upstream:
        raise ConfigError("--replan-every starts the engines it switches to: drop --upstream")
    if args.intensity is not None and args.intensity_provider not in (None, "static"):
        raise ConfigError("--intensity fixes the intensity: drop it to use a live provider")
    store = ProfileStore(existing_file("--store", args.store))
    return Planner().table(store, args.workload.partition("@")[0])


def deployment_gateway(args: argparse.Namespace, settings: Any) -> Any:
    """The :class:`~greenllm.serve.FleetGateway` of ``--deployment``: one upstream per replica,
    weighted by the QPS the deployment gives it."""
    import json

    from greenllm.config import Configuration
    from greenllm.serve import FleetGateway

    if args.replan_every is not None or args.upstream:
        raise ConfigError("--deployment starts every replica itself and plans nothing live: drop "
                          "--replan-every and --upstream")  # fmt: skip
    file = existing_file("--deployment", args.deployment)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        replicas = data["replicas"]
        if not isinstance(replicas, list) or not replicas:
            raise ValueError("no replicas")
        pools: dict[str, list[tuple[Any, float]]] = {}
        for i, r in enumerate(replicas):
            cfg = Configuration.model_validate(r["configuration"])
            weight = float(r["qps"])
            if not (weight >= 0 and math.isfinite(weight)) or not isinstance(r["workload"], str):
                raise ValueError(f"replicas[{i}]: workload and qps >= 0 needed")
            pools.setdefault(r["workload"], []).append((cfg, max(weight, 1e-9)))
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as err:
        raise ConfigError(f"--deployment {file}: not a deployment from `greenllm fleet plan "
                          f"--out` ({type(err).__name__}: {err})") from None
    upstreams = {name: [(build_upstream(args, cfg), w) for cfg, w in reps]
                 for name, reps in pools.items()}  # fmt: skip
    region = None if args.intensity is not None else (args.region or args.default_region)
    return FleetGateway.build(upstreams, settings, region=region,
                              intensity_g_per_kwh=args.intensity)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from greenllm.serve import Gateway, run_server

    live = [f for f in ("store", "intensity_provider", "zone", "trace_year", "audit_log")
            if getattr(args, f) is not None]  # fmt: skip
    if live and args.replan_every is None:
        raise ConfigError(f"--{live[0].replace('_', '-')} goes with --replan-every")
    if args.deployment is not None:
        return _serve_deployment(args)
    table = plan_table(args) if args.replan_every is not None else None
    configuration = configuration_from_args(args)
    if configuration is None:  # the profiles' lowest-carbon choice at the lowest load
        import numpy as np

        carbon = table.carbon_g_per_token(0, table_intensity(args))
        configuration = table.configs[int(np.argmin(np.where(table.allowed[0], carbon,
                                                             np.inf)))]  # fmt: skip
    settings = _settings(args)
    upstream = build_upstream(args, configuration)
    region = None if args.intensity is not None else (args.region or args.default_region)
    gateway = Gateway(upstream, settings, region=region, intensity_g_per_kwh=args.intensity)
    _log_to_stderr(args.log_level)
    _warn_if_exposed(args, settings)

    def listening(url: str) -> None:
        print(f"greenllm serve: listening on {url} ({configuration.label}, {args.backend})",
              file=sys.stderr, flush=True)  # fmt: skip

    controller = None if table is None else build_controller(args, gateway, table)
    uvicorn_level = "debug" if args.log_level == "debug" else "warning"
    run_server(gateway, args.host, args.port, log_level=uvicorn_level, on_listening=listening,
               controller=controller)  # fmt: skip
    print("greenllm serve: stopped (in-flight requests drained)", file=sys.stderr, flush=True)
    return 130  # run_server returns only once Ctrl-C or SIGTERM stopped it: exit as interrupted


def _settings(args: argparse.Namespace) -> Any:
    from greenllm.serve import GatewaySettings

    api_key = args.api_key if args.api_key is not None else os.environ.get("GREENLLM_API_KEY")
    return GatewaySettings(
        max_inflight=args.max_inflight, max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=min(16, args.max_tokens_limit), api_key=api_key or None,
    )  # fmt: skip


def _serve_deployment(args: argparse.Namespace) -> int:
    from greenllm.serve import run_server

    settings = _settings(args)
    gateway = deployment_gateway(args, settings)
    _log_to_stderr(args.log_level)
    _warn_if_exposed(args, settings)

    def listening(url: str) -> None:
        print(f"greenllm serve: listening on {url} ({gateway.label}: {', '.join(gateway.models)};"
              f" {args.backend})", file=sys.stderr, flush=True)  # fmt: skip

    uvicorn_level = "debug" if args.log_level == "debug" else "warning"
    run_server(gateway, args.host, args.port, log_level=uvicorn_level, on_listening=listening)
    print("greenllm serve: stopped (in-flight requests drained)", file=sys.stderr, flush=True)
    return 130


def _warn_if_exposed(args: argparse.Namespace, settings: Any) -> None:
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("greenllm").warning(
            "binding %s: the server is reachable from the network%s", args.host,
            "" if settings.api_key else " and has no API key (--api-key)",
        )  # fmt: skip
