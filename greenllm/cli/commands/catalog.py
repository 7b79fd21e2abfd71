"""``greenllm gpus`` and ``greenllm regions``: what the catalogs hold."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from greenllm.cli.output import emit_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpus", help="list the GPU catalog (Table 1 and more)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_gpus)
    p = sub.add_parser("regions", help="list grid regions and countries with their intensity")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_regions)


def run_gpus(args: argparse.Namespace) -> int:
    from greenllm.carbon import get_gpu, list_gpus

    specs = [get_gpu(n) for n in list_gpus()]
    if args.json:
        emit_json([asdict(s) for s in specs])
        return 0
    cols = [
        "name",
        "year",
        "vram_gb",
        "mem_bw_gbs",
        "fp16_tflops",
        "max_power_w",
        "idle_power_w",
        "die_area_mm2",
        "node_nm",
        "embodied_kg",
        "embodied_source",
    ]
    print(table(cols, [[getattr(s, c) for c in cols] for s in specs]))
    return 0


def run_regions(args: argparse.Namespace) -> int:
    from greenllm.carbon import list_regions, region_info

    infos = [region_info(code) for code in sorted(list_regions())]
    if args.json:
        emit_json(
            {
                i.code: {
                    "g_per_kwh": i.g_per_kwh,
                    "name": i.name,
                    "kind": i.kind,
                    "year": i.year,
                    "source": i.source,
                }
                for i in infos
            }
        )
        return 0
    cols = ["region", "g_per_kwh", "name", "kind", "year", "source"]
    print(table(cols, [[i.code, i.g_per_kwh, i.name, i.kind, i.year, i.source] for i in infos]))
    return 0
