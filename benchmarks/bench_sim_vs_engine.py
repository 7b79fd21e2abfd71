"""The simulator's ``cpu`` device against greenllm's engine on this machine (issue 17).

Each round measures this CPU's profile with the engine's kernels (weight stream, GEMM rate,
attention, the framework's fixed times: greenllm.backends.torch.cpu_profile), then times the
engine (prefill, decode per token, a DSD step of draft K + verify K + 1); DPD's KV transfer
runs over the emulated link. Prints the median profile, then measured, predicted and their
ratio.

    .venv/bin/python benchmarks/bench_sim_vs_engine.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os

from greenllm.backends.sim.cpu import cpu_efficiency
from greenllm.backends.torch.sim_check import check_cpu
from greenllm.carbon import get_gpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="rounds, after a warm-up round")
    ap.add_argument("--gbps", type=float, default=1.0)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    rows = check_cpu(rounds=args.reps, gbps=args.gbps)
    print(get_gpu("cpu").source)
    print("efficiency:", cpu_efficiency())
    print("| quantity | engine (ms) | simulator (ms) | sim / engine |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r.quantity} | {r.measured_s * 1e3:.1f} | {r.predicted_s * 1e3:.1f} | "
              f"{r.ratio:.2f} |")  # fmt: skip
    print(f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
