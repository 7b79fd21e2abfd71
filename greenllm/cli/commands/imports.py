"""``greenllm import vllm-bench RESULT.json ...``: your own measurements into the profile store.

Each result of ``vllm bench serve --save-result --save-detailed`` becomes one record of the
configuration it ran on (``--config``), for the application and request size it stands for,
at the QPS it ran at (its ``request_rate``, or the measured throughput for ``inf``), with the
SLO attainment computed from its per-request TTFTs and inter-token latencies. Energy comes
from ``--power-log`` files (nvidia-smi CSV, one per GPU of the configuration, new GPU first),
or is modelled and flagged (docs/profile-store.md).
"""

from __future__ import annotations

import argparse
from typing import Any

from greenllm.cli.args import existing_file, float_in, path, text
from greenllm.cli.output import emit_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import measurements made elsewhere into the profile store",
                       description=(__doc__ or "").splitlines()[0])  # fmt: skip
    kinds = p.add_subparsers(dest="import_kind", required=True)
    v = kinds.add_parser("vllm-bench", help="results of `vllm bench serve --save-detailed`",
                         description=(__doc__ or "").splitlines()[0])  # fmt: skip
    v.add_argument("results", nargs="+", type=path, metavar="RESULT.json")
    v.add_argument("--config", type=text, required=True, metavar="SPEC",
                   help="the configuration it ran on: standalone | spec:DRAFT | dpd:OLD_GPU | "
                   "dsd:OLD_GPU:DRAFT [@NEW_GPU]")  # fmt: skip
    v.add_argument("--new-gpu", type=text, default="A100", help="new GPU (default A100)")
    v.add_argument("--target", type=text, default="llama-2-7b", help="target model name")
    v.add_argument("--link-gbps", type=float_in(0.001, 10_000), default=16.0)
    v.add_argument("--application", type=text, required=True,
                   help="the application the requests stand for (its SLO is applied)")
    v.add_argument("--size", choices=("p25", "p50", "p75", "sampled"), default="p50",
                   help="the request-size row to file it under (default p50)")
    v.add_argument("--qps", type=float_in(0.001, 100_000), default=None,
                   help="the row's QPS (default: the result's request rate)")
    v.add_argument("--power-log", action="append", type=path, default=None, metavar="CSV",
                   help="nvidia-smi power log, one per GPU of the configuration, in order")
    v.add_argument("--store", type=path, default=None, help="profile store (default: the "
                   "default store)")  # fmt: skip
    v.add_argument("--run-id", type=text, default="vllm-bench")
    v.add_argument("--json", action="store_true")
    v.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from greenllm.errors import ConfigError
    from greenllm.profiler.store import (
        ProfileStore,
        default_store_path,
        record_from_vllm_bench,
        request_rate,
    )
    from greenllm.profiler.sweep import parse_configurations
    from greenllm.workloads import workload

    configs = parse_configurations(args.config, new_gpu=args.new_gpu, target_model=args.target,
                                   link_gbps=args.link_gbps)  # fmt: skip
    if len(configs) != 1:
        raise ConfigError(f"--config {args.config!r}: name one configuration")
    cfg = configs[0]
    logs = [existing_file("--power-log", p) for p in args.power_log or []]
    records = []
    for result in args.results:
        existing_file("RESULT.json", result)
        qps = args.qps if args.qps is not None else request_rate(result)
        w = workload(args.application, qps, args.size)
        records.append(record_from_vllm_bench(result, cfg, w, power_logs=logs,
                                              run_id=args.run_id))  # fmt: skip
    store_path = args.store if args.store is not None else default_store_path()
    with ProfileStore(store_path) as store:
        store.put_many(records)
    rows: list[dict[str, Any]] = [{
        "file": str(f), "cell_id": r.cell_id, "configuration": cfg.label,
        "application": r.workload.application, "qps": r.workload.qps,
        "requests": r.n_requests, "slo_attainment": r.slo_attainment, "energy_j": r.energy_j,
        "energy_source": r.energy_source,
    } for f, r in zip(args.results, records, strict=True)]  # fmt: skip
    if args.json:
        emit_json({"store": str(store_path), "imported": rows})
        return 0
    print(table(["file", "configuration", "QPS", "requests", "SLO att.", "energy J", "energy"],
                [[r["file"], r["configuration"], f"{r['qps']:g}", r["requests"],
                  f"{r['slo_attainment']:.3f}", f"{r['energy_j']:.0f}", r["energy_source"]]
                 for r in rows], title=f"imported into {store_path}"))  # fmt: skip
    return 0
