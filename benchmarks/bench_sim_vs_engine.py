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
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gbps", type=float, default=1.0)
    ap.add_argument("--fit", action="store_true", help="measure the fit points and refit")
    ap.add_argument("--runs", type=int, default=3, help="--fit: rounds of measurements")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    c = measure_cpu(1, refresh=True)
    print(f"{c.cpu_model}: {c.gemm_gflops:.1f} GFLOP/s float32 GEMM, {c.bandwidth_gbs:.2f} GB/s "
          f"GEMV read (1 thread)")  # fmt: skip
    if args.fit:
        # --runs rounds of (ceilings, overheads, forwards); each point's median over the rounds
        gemm, bw, overs, runs = [c.gemm_gflops], [c.bandwidth_gbs], [], []
        for i in range(args.runs):
            if i:
                c = measure_cpu(1, refresh=True)
                gemm.append(c.gemm_gflops)
                bw.append(c.bandwidth_gbs)
            overs.append(overhead_samples())
            runs.append(fit_samples(args.reps))
        over = [(o[0][0], statistics.median(x[j][1] for x in overs)) for j, o in
                enumerate(zip(*overs, strict=True))]  # fmt: skip
        samples = [(*s[0][:3], statistics.median(x[3] for x in s)) for s in zip(*runs, strict=True)]
        print(f"ceilings per round: GEMM {[round(g, 1) for g in gemm]} GFLOP/s, bandwidth "
              f"{[round(b, 2) for b in bw]} GB/s")  # fmt: skip
        print("overheads (layers, ms):", [(n, round(t * 1e3, 3)) for n, t in over])
        for m, n, ctx, t in samples:
            print(f"  {m} n={n} context={ctx}: {t * 1e3:.1f} ms")
        print("fitted:", fit_cpu_efficiency(over, samples, ceilings=(statistics.median(gemm),
                                                                     statistics.median(bw))))
        print("in use:", CPU_EFFICIENCY)
    else:
        rows = check_cpu(reps=args.reps, gbps=args.gbps)
        print("| quantity | engine (ms) | simulator (ms) | sim / engine |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r.quantity} | {r.measured_s * 1e3:.1f} | {r.predicted_s * 1e3:.1f} | "
                  f"{r.ratio:.2f} |")  # fmt: skip
    print(f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
