"""The simulator's ``cpu`` device against greenllm's engine on this machine (issue 17).

Measures this CPU's ceilings (float32 GEMM, GEMV read bandwidth; cached), then times the engine
(prefill, decode per token, a DSD step of draft K + verify K + 1, DPD's KV transfer over the
emulated link) and prints measured, predicted and their ratio. ``--fit`` instead measures the
fit points of the cpu efficiency (tiny-model overheads, SmolLM2 forwards at context 0) and
prints the fitted constants (``greenllm.backends.sim.cpu.CPU_EFFICIENCY``).

    .venv/bin/python benchmarks/bench_sim_vs_engine.py [--reps 5] [--fit]
"""

from __future__ import annotations

import argparse
import os
import statistics

from greenllm.backends.sim import measure_cpu
from greenllm.backends.sim.cpu import CPU_EFFICIENCY
from greenllm.backends.torch.sim_check import (
    check_cpu,
    fit_cpu_efficiency,
    fit_samples,
    overhead_samples,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="rounds (check) / repeats (--fit)")
    ap.add_argument("--gbps", type=float, default=1.0)
    ap.add_argument("--fit", action="store_true", help="measure the fit points and refit")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    c = measure_cpu(1)
    print(f"{c.cpu_model}: {c.gemm_gflops:.1f} GFLOP/s float32 GEMM, {c.bandwidth_gbs:.2f} GB/s "
          f"GEMV read (1 thread)")  # fmt: skip
    if args.fit:
        # rounds of (ceilings, overheads, samples); each round's samples are predicted with the
        # ceilings measured just before them
        overs, rounds = [], []
        for _ in range(args.reps):
            c = measure_cpu(1, refresh=True)
            overs.append(overhead_samples())
            rounds.append(((c.gemm_gflops, c.bandwidth_gbs), fit_samples(1)))
        over = [(o[0][0], statistics.median(x[1] for x in o)) for o in zip(*overs, strict=True)]
        print("ceilings per round (GFLOP/s, GB/s):", [(round(g, 1), round(b, 2))
                                                      for (g, b), _ in rounds])  # fmt: skip
        print("overheads (layers, ms, median of rounds):",
              [(n, round(t * 1e3, 3)) for n, t in over])  # fmt: skip
        for j, (m, n, ctx, _) in enumerate(rounds[0][1]):
            ms = [round(r[1][j][3] * 1e3, 1) for r in rounds]
            print(f"  {m} n={n} context={ctx}: {ms} ms")
        print("fitted:", fit_cpu_efficiency(over, rounds))
        print("in use:", CPU_EFFICIENCY)
    else:
        rows = check_cpu(rounds=args.reps, gbps=args.gbps)
        print("| quantity | engine (ms) | simulator (ms) | sim / engine |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r.quantity} | {r.measured_s * 1e3:.1f} | {r.predicted_s * 1e3:.1f} | "
                  f"{r.ratio:.2f} |")  # fmt: skip
    print(f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
