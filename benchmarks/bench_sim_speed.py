"""Simulator speed: one hour of traffic at 10 QPS per configuration, against a 5 s target.

Each configuration (llama-2-7b target on an A100, llama-1b draft, T4 or V100 as the old GPU)
serves the same 36,000-request set -- ``RequestSet.poisson(10, RequestSize(160, 140),
duration_s=3600)``, ShareGPT's median size -- and the wall time of ``SimBackend.run`` is
measured side by side in one process (best of ``--repeat``). DPD cannot sustain 10 QPS (the
7B model leaves a T4/V100 ~1,400 tokens of KV cache) and stops at overload detection, so an
extra row runs DPD for a full hour at a rate it sustains.

    python benchmarks/bench_sim_speed.py             # ~1 min on 2 cores
    python benchmarks/bench_sim_speed.py --repeat 1 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from greenllm.backends.sim import SimBackend
from greenllm.config import Configuration, RequestSize, Workload
from greenllm.workloads import RequestSet

TARGET_S = 5.0
SIZE = RequestSize(input_tokens=160, output_tokens=140)
CONFIGS = [
    Configuration(kind="standalone"),
    Configuration(kind="spec_decode", draft_model="llama-1b"),
    Configuration(kind="dpd", old_gpu="T4"),
    Configuration(kind="dpd", old_gpu="V100"),
    Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b"),
    Configuration(kind="dsd", old_gpu="V100", draft_model="llama-1b"),
]


def measure(cfg: Configuration, qps: float, hours: float, repeat: int) -> dict:
    reqs = RequestSet.poisson(qps, SIZE, duration_s=3600 * hours, seed=0)
    workload = Workload(application="sharegpt", request_size=SIZE, qps=qps)
    backend = SimBackend()
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = backend.run(cfg, workload, requests=reqs, seed=0)
        best = min(best, time.perf_counter() - t)
    assert result is not None
    served = int(result.requests.served.sum())
    return {
        "configuration": cfg.label,
        "qps": qps,
        "requests": len(reqs),
        "served": served,
        "simulated_s": round(result.duration_s, 1),
        "iterations": result.extra["iterations"],
        "overloaded": result.overloaded,
        "wall_s": round(best, 3),
        "requests_per_s": round(len(reqs) / best),
        "ratio_to_target": round(best / TARGET_S, 3),
        "mean_ttft_ms": round(float(np.nanmean(result.requests.ttft_s)) * 1e3, 2),
        "mean_tpot_ms": round(float(np.nanmean(result.requests.tpot_s)) * 1e3, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qps", type=float, default=10.0)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    ap.add_argument("--json", action="store_true", help="print JSON rows")
    args = ap.parse_args()
    rows = [measure(cfg, args.qps, args.hours, args.repeat) for cfg in CONFIGS]
    rows.append(measure(Configuration(kind="dpd", old_gpu="V100"), 0.5, args.hours, args.repeat))
    if args.json:
        print(
            json.dumps(
                {"python": platform.python_version(), "target_s": TARGET_S, "rows": rows}, indent=2
            )
        )
        return
    print(
        f"target: {args.hours:g} h of traffic per configuration in < {TARGET_S:g} s "
        f"(Python {platform.python_version()}, best of {args.repeat})"
    )
    head = (
        f"{'configuration':<32}{'QPS':>5}{'requests':>9}{'iters':>9}{'wall s':>8}"
        f"{'req/s':>9}{'x target':>9}  note"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        note = "overloaded: stopped at detection" if r["overloaded"] else ""
        print(
            f"{r['configuration']:<32}{r['qps']:>5g}{r['requests']:>9}{r['iterations']:>9}"
            f"{r['wall_s']:>8.2f}{r['requests_per_s']:>9}{r['ratio_to_target']:>9.2f}  {note}"
        )


if __name__ == "__main__":
    main()
