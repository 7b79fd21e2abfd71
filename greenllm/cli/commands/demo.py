"""``greenllm demo``: the paper's evaluation reproduced on the GPU simulator, then analysed.

1. Profile the paper's grid (Section 7.1: nine configurations x ShareGPT/HumanEval/LongBench x
   QPS, plus ShareGPT at P25/P75 and link bandwidths 1-16 Gbps) on the simulator into a SQLite
   profile store (resumable: a second run reuses the stored cells).
2. Plan with Algorithm 1 and print the headline: peak savings per dataset at >= 90% SLO
   attainment and the configuration chosen per QPS; write Figures 4 and 9-15 as PNG.
3. Beyond the paper: DSD with and without draft-ahead on A100 + T4/V100
   (:func:`greenllm.reproduce.compare_draft_ahead`).
4. Section 5 from Table 1 alone: carbon per GPU-hour and the break-even energy saving.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from greenllm.carbon.analysis import paper_setting
from greenllm.carbon.analysis.paper_setting import PAPER_REGIONS, WHAT_IF_ENERGY_CUTS
from greenllm.cli.args import (
    LIFETIME_RANGE,
    MAX_REQUESTS,
    MAX_WORKERS,
    float_in,
    int_in,
    path,
    writable_dir,
)
from greenllm.cli.output import dumps, emit_json, fmt, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: the paper's evaluation on the simulator")
    p.add_argument("--lifetime-years", type=float_in(*LIFETIME_RANGE), default=7.0,
                   help=f"GPU lifetime, {LIFETIME_RANGE[0]:g} to {LIFETIME_RANGE[1]:g} "
                   "(default 7)")  # fmt: skip
    p.add_argument("--out", type=path, default=Path("out/demo"),
                   help="folder for profiles.sqlite, results.json and the figures")  # fmt: skip
    p.add_argument("--requests", type=int_in(1, MAX_REQUESTS), default=400,
                   help=f"requests per profiled cell, 1 to {MAX_REQUESTS}")  # fmt: skip
    p.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=None,
                   help=f"processes, 1 to {MAX_WORKERS} (default: 2)")  # fmt: skip
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--analysis-only", action="store_true",
                   help="only the Table 1 / Section 5 analysis (no simulation)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def evaluate(out: Path, n_requests: int = 400, workers: int | None = None,
             figures: bool = True, quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Profile the paper's grid on the simulator (resumable), plan, write results and figures."""
    import sys
    import time

    from greenllm.cli.args import check_float
    from greenllm.profiler.store import ProfileStore
    from greenllm.reproduce import Experiment, analyse, compare_draft_ahead, run_cells

    check_float("--requests", n_requests, 1, MAX_REQUESTS)
    writable_dir("--out", out)
    out.mkdir(parents=True, exist_ok=True)
    exp = Experiment()
    start = time.perf_counter()

    def progress(i: int, n: int) -> None:
        if not quiet and (i == n or i % 25 == 0):
            print(f"\rprofiling on the simulator: {i}/{n} cells", end="", file=sys.stderr)

    with ProfileStore(out / "profiles.sqlite") as store:
        counts = run_cells(exp.cells(), store, backend="sim", n_requests=int(n_requests),
                           workers=workers, progress=progress)  # fmt: skip
        if not quiet and counts["measured"]:
            print(file=sys.stderr)
        records = store.query(backend="sim")
    result = analyse(records, exp)
    result["profiling"] = {**counts, "seconds": time.perf_counter() - start}
    result["draft_ahead"] = compare_draft_ahead(n_requests=min(int(n_requests), 300))
    (out / "results.json").write_text(dumps(result))
    if figures:
        from greenllm.reproduce.figures import write_figures

        result["figures"] = [str(p) for p in write_figures(result, out)]
    return result


def run(args: argparse.Namespace) -> int:
    writable_dir("--out", args.out)  # every argument is checked before a file is touched
    result = paper_setting(args.lifetime_years)
    text = dumps(result)
    evaluation = None
    if not args.analysis_only:
        evaluation = evaluate(args.out, args.requests, args.workers, not args.no_figures,
                              quiet=args.json)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(text)
    if args.json:
        emit_json({"paper_setting": result, "evaluation": evaluation})
        return 0
    if evaluation is not None:
        _print_evaluation(evaluation, args.out)
    _print_paper_setting(result)
    return 0


def _print_evaluation(ev: dict[str, Any], out: Path) -> None:
    from greenllm.reproduce import summary_rows

    p = ev["profiling"]
    print(f"greenllm demo: the GreenLLM evaluation reproduced on the GPU simulator "
          f"({p['total']} cells, {p['measured']} simulated now, {p['skipped']} reused, "
          f"{p['infeasible']} infeasible; {p['seconds']:.0f} s)\n")  # fmt: skip
    rows = [[a, q, c, None if s is None else f"{100 * s:.1f}%", att]
            for a, q, c, s, att in summary_rows(ev)]  # fmt: skip
    print(table(["dataset", "qps", "configuration", "peak_savings", "slo_att"], rows,
                title=f"Peak carbon savings vs Standalone A100 at >= {ev['slo_target']:.0%} SLO "
                f"attainment ({ev['region']})"))  # fmt: skip
    for app, data in ev["fig9"].items():
        rows = [[r["qps"], r["configuration"], f"{100 * r['savings']:+.1f}%",
                 f"{100 * r['operational_savings']:+.1f}%", f"{100 * r['embodied_savings']:+.1f}%",
                 r["slo_attainment"], "fallback" if r["fallback"] else ""]
                for r in data["rows"]]  # fmt: skip
        print()
        print(table(["qps", "chosen configuration", "savings", "operational", "embodied",
                     "slo_att", ""], rows, title=f"{app} (P50): the configuration Algorithm 1 "
                    "picks per QPS"))  # fmt: skip
    rows = [[r["old_gpu"], r["draft"], r["k"], r["qps"], *(fmt(x, 3) for x in r["tpot_ms"]),
             *(fmt(x, 3) for x in r["j_per_token"]), f"{r['hit_rate']:.0%}",
             f"{r['hidden_share']:.0%}"] for r in ev["draft_ahead"]]  # fmt: skip
    print()
    print(table(["old", "draft", "K", "qps", "tpot_ms", "+ahead", "J/token", "+ahead", "hits",
                 "hidden"], rows, title="Beyond the paper: DSD on the A100 + an old GPU, without "
                "and with draft-ahead (ShareGPT, median time per output token, energy per "
                "output token of both GPUs; hits: verdicts whose next proposal was drafted "
                "ahead; hidden: share of their drafting done behind verification)"))  # fmt: skip
    print(f"\nresults: {out / 'results.json'}; figures: {out}/fig*.png\n")


def _print_paper_setting(result: dict[str, Any]) -> None:
    life = result["lifetime_years"]
    print(f"The paper's setting from Table 1 alone ({life:g}-year lifetimes)\n")
    rows = [
        [
            g["gpu"],
            g["year"],
            g["embodied_kg"],
            g["embodied_g_per_hour"],
            *g["operational_g_per_hour_at_max_power"].values(),
        ]
        for g in result["gpus"]
    ]
    heads = ["gpu", "year", "embodied_kg", "embodied_g/h"] + [f"op_g/h@{r}" for r in PAPER_REGIONS]
    print(
        table(
            heads,
            rows,
            title="1. Carbon per hour of one GPU: Eq. 1 (embodied), "
            "Eq. 2 at max power (operational)",
        )
    )
    print()
    rows = [
        [
            b["old_gpu"],
            b["region"],
            b["intensity_g_per_kwh"],
            b["min_energy_saving_wh_per_hour"],
            b["ratio_at_breakeven"],
        ]
        for b in result["breakeven"]
    ]
    print(
        table(
            ["old_gpu", "region", "g_per_kwh", "min_saving_Wh/h", "Eq5_ratio_there"],
            rows,
            title="2. Section 5: the A100 plus an old GPU beats the A100 alone only if the pair "
            "saves at least this much energy per hour (Eq. 4-5 break-even)",
        )
    )
    print()
    cuts = WHAT_IF_ENERGY_CUTS
    grid: dict[tuple[str, str], list[float]] = {}
    for w in result["what_if_a100_at_max_power"]:
        grid.setdefault((w["old_gpu"], w["region"]), []).append(w["carbon_savings"])
    rows = [
        [old, region, *(fmt(100 * s, 3) + "%" for s in vals)]
        for (old, region), vals in grid.items()
    ]
    print(
        table(
            ["old_gpu", "region", *(f"energy -{c:.0%}" for c in cuts)],
            rows,
            title="3. What if (Eq. 5): A100 at its 400 W for an hour, and disaggregation cuts "
            "that energy by 10/20/30%: carbon saved",
        )
    )
