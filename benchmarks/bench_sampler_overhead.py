"""Sampler overhead: CPU time of the background sampling thread, as a % of one core.

Each sampler runs at ``--period`` (200 ms, as in the paper) for ``--duration`` seconds while the
main thread sleeps inside one open window; we report the sampling thread's own CPU time
(``time.thread_time`` read inside the thread) and the whole process's CPU time
(``time.process_time``) beside a baseline with no sampler. Samplers: the replay of a recorded
trace, the modelled sampler (a constant and a simulator run's curves), and RAPL / NVML when this
machine has them. Target: < 1% of one core.

    python benchmarks/bench_sampler_overhead.py               # ~50 s
    python benchmarks/bench_sampler_overhead.py --duration 3 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

from greenllm.energy import (
    ModelledSampler,
    NVMLSampler,
    PowerSampler,
    RAPLSampler,
    ReplaySampler,
    nvml_available,
    rapl_available,
    read_power_csv,
)

TRACE = Path(__file__).resolve().parent.parent / "tests/energy/data/sim_dsd_a100_t4_sharegpt.csv"
TARGET_PCT = 1.0


def measure(
    make: Callable[[float], PowerSampler] | None, period_s: float, duration_s: float
) -> dict:
    sampler = make(period_s) if make else None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if sampler is not None:
        sampler.begin_window("bench")
    time.sleep(duration_s)
    m = sampler.end_window("bench") if sampler is not None else None
    if sampler is not None:
        sampler.stop()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    thread_cpu = sampler.thread_cpu_s if sampler is not None else 0.0
    return {
        "wall_s": wall,
        "samples": m.n_samples if m else 0,
        "thread_cpu_ms": 1e3 * thread_cpu,
        "thread_pct_core": 100.0 * thread_cpu / wall,
        "process_pct_core": 100.0 * cpu / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--period", type=float, default=0.2, help="sampling period, s")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per sampler")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    curves = read_power_csv(TRACE)
    cases: dict[str, Callable[[float], PowerSampler] | None] = {
        "baseline (no sampler)": None,
        "replay (recorded trace)": lambda p: ReplaySampler(TRACE, period_s=p),
        "modelled (constant 300 W)": lambda p: ModelledSampler(300.0, period_s=p),
        "modelled (2 simulated GPUs)": lambda p: ModelledSampler(curves, period_s=p),
    }
    if rapl_available():
        cases["rapl (CPU package/DRAM)"] = lambda p: RAPLSampler(period_s=p)
    if nvml_available():
        cases["nvml (all GPUs)"] = lambda p: NVMLSampler(period_s=p)
    rows = {name: measure(make, args.period, args.duration) for name, make in cases.items()}
    if args.json:
        print(
            json.dumps(
                {
                    "period_s": args.period,
                    "duration_s": args.duration,
                    "python": platform.python_version(),
                    "rows": rows,
                },
                indent=2,
            )
        )
        return
    print(
        f"period {args.period} s, {args.duration} s each, Python {platform.python_version()}, "
        f"{platform.machine()}; target < {TARGET_PCT}% of one core"
    )
    print(
        f"{'sampler':30} {'samples':>8} {'thread CPU ms':>14} {'thread %core':>13} "
        f"{'process %core':>14}"
    )
    for name, r in rows.items():
        print(
            f"{name:30} {r['samples']:>8} {r['thread_cpu_ms']:>14.2f} "
            f"{r['thread_pct_core']:>13.3f} {r['process_pct_core']:>14.3f}"
        )
    if not rapl_available():
        print("rapl: not readable here (skipped)")
    if not nvml_available():
        print("nvml: no NVIDIA GPU here (skipped)")


if __name__ == "__main__":
    main()
