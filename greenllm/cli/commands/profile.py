"""``greenllm profile``: a resumable sweep of configurations x workloads x QPS into the store.

Rerunning the same command after Ctrl-C (or a kill) measures only the cells still missing.
Configuration grammar, sampling and the Ray cluster set-up: ``docs/sweeps.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from greenllm.cli.args import (
    MAX_BATCH_SIZE,
    MAX_DURATION_S,
    MAX_GRID_CELLS,
    MAX_LINK_GBPS,
    MAX_REQUESTS,
    MAX_SEED,
    MAX_WORK_REQUESTS,
    MAX_WORKERS,
    QPS_RANGE,
    float_in,
    int_in,
    path,
    text,
)
from greenllm.cli.output import emit_json, table

EXIT_INTERRUPTED = 130


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="profile configurations x workloads x QPS on a backend into the store (resumable)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--backend", type=text, default="sim", help="sim (default), torch, vllm or a plugin"
    )
    p.add_argument(
        "--configs",
        type=text,
        default="paper",
        metavar="LIST",
        help="comma list: standalone, spec:DRAFT, dpd:OLD_GPU, dsd:OLD_GPU:DRAFT, "
        "each optionally @NEW_GPU; or 'paper' (the nine of Section 7.1; default)",
    )
    p.add_argument(
        "--new-gpu", type=text, default="A100", help="new GPU where none is given (default A100)"
    )
    p.add_argument(
        "--target", type=text, default="llama-2-7b", help="target model (default llama-2-7b)"
    )
    p.add_argument(
        "--link-gbps",
        type=float_in(0.0, MAX_LINK_GBPS, lo_open=True),
        default=16.0,
        help=f"link between the two GPUs of DPD/DSD, in (0, {MAX_LINK_GBPS:g}] "
        "(default 16, the paper's)",
    )
    p.add_argument(
        "--apps",
        type=text,
        default="sharegpt,humaneval,longbench",
        help="applications of Table 2, comma-separated",
    )
    p.add_argument("--sizes", type=text, default="p50", help="request sizes: p25,p50,p75,sampled")
    p.add_argument(
        "--qps",
        type=text,
        default=None,
        metavar="START:STOP:STEP|LIST",
        help=f"QPS levels in [{QPS_RANGE[0]:g}, {QPS_RANGE[1]:g}], e.g. 0.5:8:0.5 or 1,2,4 "
        "(default: each app's paper range)",
    )
    p.add_argument(
        "--fraction",
        type=float_in(0.0, 1.0, lo_open=True),
        default=1.0,
        help="measure only this fraction of cells, covering every row and "
        "configuration (the planner fills the rest; default 1)",
    )
    p.add_argument(
        "--store",
        type=path,
        default=None,
        help="SQLite profile store (default $GREENLLM_STORE or the user data folder)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--requests",
        type=int_in(1, MAX_REQUESTS),
        default=None,
        help=f"Poisson requests per cell, 1 to {MAX_REQUESTS} (default 300)",
    )
    size.add_argument(
        "--duration-s",
        type=float_in(0.0, MAX_DURATION_S, lo_open=True),
        default=None,
        help=f"serve Poisson arrivals for this many seconds per cell instead, "
        f"at most {MAX_DURATION_S:g}",
    )
    p.add_argument(
        "--workers", type=int_in(1, MAX_WORKERS), default=1, help="local processes (default 1)"
    )
    p.add_argument("--ray", action="store_true", help="one Ray task per cell (see docs)")
    p.add_argument(
        "--ray-address",
        type=text,
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS or a new local one)",
    )
    p.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=0, help="arrivals and sampling seed (default 0)"
    )
    p.add_argument(
        "--run-id", type=text, default="default", help="label of this sweep in the store"
    )
    p.add_argument(
        "--batch-size",
        type=int_in(1, MAX_BATCH_SIZE),
        default=16,
        help="records per transaction",
    )
    p.add_argument(
        "--retry-infeasible",
        action="store_true",
        help="retry cells recorded as infeasible (model did not fit) earlier",
    )
    p.add_argument("--dry-run", action="store_true", help="list the cells, measure nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def _grid(args: argparse.Namespace) -> Any:
    from greenllm.cli.args import float_range
    from greenllm.errors import ConfigError
    from greenllm.profiler.sweep import SweepGrid, parse_configurations

    apps = _items("--apps", args.apps)
    sizes = _items("--sizes", args.sizes)
    qps = None
    if args.qps is not None:
        qps = float_range("--qps", args.qps, *QPS_RANGE)
        if args.duration_s is not None and max(qps) * args.duration_s > MAX_WORK_REQUESTS:
            raise ConfigError(
                f"--qps {max(qps):g} x --duration-s {args.duration_s:g}: more than "
                f"{MAX_WORK_REQUESTS:g} requests per cell; lower one of them"
            )
    n_configs = len(_items("--configs", args.configs)) * (9 if "paper" in args.configs else 1)
    bound = n_configs * len(apps) * len(sizes) * (len(qps) if qps else 1)
    if bound > MAX_GRID_CELLS:
        raise ConfigError(
            f"--configs x --apps x --sizes x --qps: up to {bound} cells, more than "
            f"{MAX_GRID_CELLS}; split the sweep"
        )
    configs = parse_configurations(
        args.configs, new_gpu=args.new_gpu, target_model=args.target, link_gbps=args.link_gbps
    )
    grid = SweepGrid.build(configs, apps, sizes, qps)
    if grid.shape[0] * grid.shape[1] > MAX_GRID_CELLS:
        raise ConfigError(
            f"the sweep has {grid.shape[0] * grid.shape[1]} cells, more than {MAX_GRID_CELLS}; "
            "split it"
        )
    return grid


def _items(name: str, value: str) -> list[str]:
    from greenllm.cli.args import MAX_RANGE_POINTS
    from greenllm.errors import ConfigError

    items = value.split(",")
    if any(not i.strip() for i in items):
        raise ConfigError(f"{name} {value!r}: an empty item in the comma list")
    if len(items) > MAX_RANGE_POINTS:
        raise ConfigError(f"{name}: more than {MAX_RANGE_POINTS} items")
    return [i.strip() for i in items]


def run(args: argparse.Namespace) -> int:
    from greenllm.profiler.store import ProfileStore, default_store_path
    from greenllm.profiler.sweep import SweepInterrupted, infeasible_sidecar_path, run_sweep

    grid = _grid(args)
    cells = grid.cells(args.fraction, args.seed)
    path = args.store if args.store is not None else default_store_path()
    if args.dry_run:
        return _dry_run(args, grid, cells, path)
    try:  # SIGTERM is a KeyboardInterrupt here too (greenllm.cli.main): finished cells are kept
        with ProfileStore(path) as store:
            report = run_sweep(
                cells,
                store,
                backend=args.backend,
                n_requests=args.requests,
                duration_s=args.duration_s,
                seed=args.seed,
                run_id=args.run_id,
                workers=args.workers,
                executor="ray" if args.ray else "local",
                ray_address=args.ray_address,
                progress=not args.quiet,
                batch_size=args.batch_size,
                retry_infeasible=args.retry_infeasible,
            )
        interrupted = False
    except SweepInterrupted as stop:
        report, interrupted = stop.report, True
    payload = {
        "store": str(path),
        "infeasible_sidecar": str(infeasible_sidecar_path(path)),
        "grid": {
            "rows": grid.shape[0],
            "configurations": grid.shape[1],
            "cells": len(cells),
            "fraction": args.fraction,
        },
        **report.as_dict(),
    }
    if args.json:
        emit_json(payload)
    else:
        _print(payload)
    if interrupted:
        print("greenllm: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _dry_run(args: argparse.Namespace, grid: Any, cells: list[Any], path: Path) -> int:
    import json

    from greenllm.profiler.sweep import infeasible_sidecar_path

    done: set[str] = set()
    infeasible: set[str] = set()
    if Path(path).exists():
        from greenllm.profiler.store import ProfileStore

        with ProfileStore(path) as store:
            done = store.done_cells(backend=args.backend, run_id=args.run_id)
        sidecar = infeasible_sidecar_path(path)
        if sidecar is not None and sidecar.exists() and not args.retry_infeasible:
            try:
                infeasible = set(json.loads(sidecar.read_text())["cells"])
            except (OSError, ValueError, KeyError, TypeError):
                infeasible = set()

    def state(c: Any) -> str:
        key = c.cell_id(args.backend, args.run_id)
        return "stored" if key in done else "infeasible" if key in infeasible else "to measure"

    rows = [
        [c.workload.application, c.row[1], c.workload.qps, c.configuration.label, state(c)]
        for c in cells
    ]
    if args.json:
        emit_json(
            {
                "store": str(path),
                "cells": [
                    dict(
                        zip(
                            ("application", "size", "qps", "configuration", "state"), r, strict=True
                        )
                    )
                    for r in rows
                ],
            }
        )
        return 0
    todo = sum(r[-1] == "to measure" for r in rows)
    title = (
        f"{len(cells)} of {grid.shape[0] * grid.shape[1]} cells ({grid.shape[0]} workloads x "
        f"{grid.shape[1]} configurations), {todo} to measure on {args.backend}"
    )
    print(table(["application", "size", "qps", "configuration", "state"], rows, title=title))
    return 0


def _print(p: dict[str, Any]) -> None:
    g = p["grid"]
    print(
        f"greenllm profile: {g['cells']} of {g['rows'] * g['configurations']} cells "
        f"({g['rows']} workloads x {g['configurations']} configurations, fraction "
        f"{g['fraction']:g}) on {p['backend']}, run {p['run_id']!r}, in {p['seconds']:.1f} s"
    )
    rows = [
        ["measured now", p["measured"]],
        ["already stored", p["already_done"]],
        ["infeasible (model does not fit)", p["infeasible"]],
        ["failed (retried on resume)", p["failed"]],
        ["not reached (interrupted)", p["remaining"]],
    ]
    print(table(["cells", "count"], rows))
    print(f"store: {p['store']}")
    if p["infeasible"]:
        print(f"infeasible cells: {p['infeasible_sidecar']}")
    for line in p["failures"]:
        print(f"failed: {line}")
