"""``greenllm profile``: a resumable sweep of configurations x workloads x QPS into the store.

Rerunning the same command after Ctrl-C (or a kill) measures only the cells still missing.
Configuration grammar, sampling and the Ray cluster set-up: ``docs/sweeps.md``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from greenllm.cli.output import emit_json, table

EXIT_INTERRUPTED = 130


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="profile configurations x workloads x QPS on a backend into the store (resumable)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--backend", default="sim", help="sim (default), torch, vllm or a plugin")
    p.add_argument(
        "--configs",
        default="paper",
        metavar="LIST",
        help="comma list: standalone, spec:DRAFT, dpd:OLD_GPU, dsd:OLD_GPU:DRAFT, "
        "each optionally @NEW_GPU; or 'paper' (the nine of Section 7.1; default)",
    )
    p.add_argument("--new-gpu", default="A100", help="new GPU where none is given (default A100)")
    p.add_argument("--target", default="llama-2-7b", help="target model (default llama-2-7b)")
    p.add_argument(
        "--link-gbps",
        type=float,
        default=16.0,
        help="link between the two GPUs of DPD/DSD (default 16, the paper's)",
    )
    p.add_argument(
        "--apps",
        default="sharegpt,humaneval,longbench",
        help="applications of Table 2, comma-separated",
    )
    p.add_argument("--sizes", default="p50", help="request sizes: p25,p50,p75,sampled")
    p.add_argument(
        "--qps",
        default=None,
        metavar="START:STOP:STEP|LIST",
        help="QPS levels, e.g. 0.5:8:0.5 or 1,2,4 (default: each app's paper range)",
    )
    p.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="measure only this fraction of cells, covering every row and "
        "configuration (the planner fills the rest; default 1)",
    )
    p.add_argument(
        "--store",
        type=Path,
        default=None,
        help="SQLite profile store (default $GREENLLM_STORE or the user data folder)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--requests", type=int, default=None, help="Poisson requests per cell (default 300)"
    )
    size.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="serve Poisson arrivals for this many seconds per cell instead",
    )
    p.add_argument("--workers", type=int, default=1, help="local processes (default 1)")
    p.add_argument("--ray", action="store_true", help="one Ray task per cell (see docs)")
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS or a new local one)",
    )
    p.add_argument("--seed", type=int, default=0, help="arrivals and sampling seed (default 0)")
    p.add_argument("--run-id", default="default", help="label of this sweep in the store")
    p.add_argument("--batch-size", type=int, default=16, help="records per transaction")
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
    from greenllm.cli.args import float_range, positive
    from greenllm.errors import ConfigError
    from greenllm.profiler.sweep import SweepGrid, parse_configurations

    positive("--link-gbps", args.link_gbps)
    if not 0 < args.fraction <= 1:
        raise ConfigError(f"--fraction = {args.fraction!r}: must be in (0, 1], e.g. 0.3")
    configs = parse_configurations(
        args.configs, new_gpu=args.new_gpu, target_model=args.target, link_gbps=args.link_gbps
    )
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    qps = None
    if args.qps is not None:
        qps = [positive("--qps", q) for q in float_range("--qps", args.qps)]
    return SweepGrid.build(configs, apps, sizes, qps)


def run(args: argparse.Namespace) -> int:
    from greenllm.profiler.store import ProfileStore, default_store_path
    from greenllm.profiler.sweep import SweepInterrupted, infeasible_sidecar_path, run_sweep

    grid = _grid(args)
    cells = grid.cells(args.fraction, args.seed)
    path = args.store if args.store is not None else default_store_path()
    if args.dry_run:
        return _dry_run(args, grid, cells, path)
    previous = _sigterm_as_interrupt()
    try:
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
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
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


def _sigterm_as_interrupt() -> Any:
    """SIGTERM (a batch scheduler's stop) behaves like Ctrl-C: finished cells are stored."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


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
