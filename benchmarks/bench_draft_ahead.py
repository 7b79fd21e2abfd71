"""Draft-ahead in Disg-Spec-Decode on this CPU: how much drafting it hides, and what it buys.

Side by side in one run, on the same prompts, greedy, one request at a time (draft-ahead's
case: the draft is idle while the target verifies): target-only (the target alone, one
thread like the DSD target worker), DSD without draft-ahead, DSD with it, and DSD with
draft-ahead and adaptive K. Reported per row: ms per output token and its ratio to
target-only; for draft-ahead: the hit rate (verdicts whose next proposal was drafted ahead),
the share of the hits' drafting time done before their verdicts (hidden behind the target's
verification), and the drafting time spent on outcomes that did not happen (wasted). All rows
must produce the same tokens (asserted).

``--draft self`` drafts with the target itself: greedy, every proposal is accepted and every
bonus guess is right, the upper bound of the hit rate (the draft then costs a target forward).

Run: ``nice python benchmarks/bench_draft_ahead.py [--draft layerskip|distilled|self] [--k 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from greenllm.engine import Engine, SamplingParams, draft_dir, smollm2_dir
from greenllm.workloads import humaneval_prompts


def _run(engine: Engine, prompts: list[str], sp: SamplingParams, **options: Any) -> dict[str, Any]:
    before = engine.stats()
    start = time.perf_counter()
    outs = [asyncio.run(engine.generate(p, sp, **options)) for p in prompts]  # one at a time
    wall_s = time.perf_counter() - start
    after = engine.stats()
    tokens = sum(len(o.tokens) for o in outs)
    hits = after.ahead_hits - before.ahead_hits
    misses = after.ahead_misses - before.ahead_misses
    hidden_s = after.ahead_hidden_s - before.ahead_hidden_s
    exposed_s = after.ahead_exposed_s - before.ahead_exposed_s
    proposed = after.proposed_tokens - before.proposed_tokens
    return {
        "outs": [o.tokens for o in outs], "ms_per_token": 1e3 * wall_s / tokens,
        "hit_rate": hits / (hits + misses) if hits + misses else None,
        "hidden": hidden_s / (hidden_s + exposed_s) if hidden_s + exposed_s else None,
        "wasted_ms": 1e3 * (after.ahead_wasted_s - before.ahead_wasted_s),
        "acceptance": (after.accepted_tokens - before.accepted_tokens) / proposed
        if proposed else None, "proposed": proposed,
    }  # fmt: skip


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draft", default="layerskip", choices=["layerskip", "distilled", "self"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the rows this often")
    args = parser.parse_args()
    target = smollm2_dir()
    draft = target if args.draft == "self" else draft_dir(args.draft)
    prompts = humaneval_prompts()[128 : 128 + args.prompts]
    sp = SamplingParams(max_tokens=args.tokens)
    print(f"config: target=SmolLM2-135M draft={draft.name} K={args.k} prompts={len(prompts)} "
          f"HumanEval max_tokens={args.tokens} greedy, one request at a time, one torch thread "
          f"per worker, {args.rounds} alternating rounds")  # fmt: skip
    rows: dict[str, list[dict[str, Any]]] = {}
    names = ("DSD", "DSD + draft-ahead", "DSD + draft-ahead + adaptive K")
    options = ({"ahead": False}, {"ahead": True}, {"ahead": True, "adaptive_k": True})
    with Engine("standalone", str(target), threads=1, timeout_s=120) as alone, Engine(
        "dsd", str(target), str(draft), k=args.k, timeout_s=120
    ) as dsd:
        _run(alone, prompts[:1], SamplingParams(max_tokens=4))  # warm-up
        _run(dsd, prompts[:1], SamplingParams(max_tokens=4))
        for _ in range(args.rounds):
            rows.setdefault("target-only", []).append(_run(alone, prompts, sp))
            for name, opts in zip(names, options, strict=True):
                rows.setdefault(name, []).append(_run(dsd, prompts, sp, **opts))
    outs = {name: r[0]["outs"] for name, r in rows.items()}
    assert all(o == outs["target-only"] for o in outs.values()), "an output differed"
    base = sum(r["ms_per_token"] for r in rows["target-only"]) / args.rounds
    print(f"{'':34}{'ms/token':>9}{'vs target':>10}{'accept':>8}{'hit rate':>9}"
          f"{'hidden':>8}{'wasted ms':>10}")  # fmt: skip
    for name, runs in rows.items():
        ms = sum(r["ms_per_token"] for r in runs) / len(runs)
        last = runs[-1]
        acc = "n/a" if last["acceptance"] is None else f"{last['acceptance']:.2f}"
        print(f"{name:34}{ms:9.2f}{base / ms:9.2f}x{acc:>8}{_pct(last['hit_rate']):>9}"
              f"{_pct(last['hidden']):>8}{last['wasted_ms']:10.1f}")  # fmt: skip
    print("identical greedy outputs in every row: True")


if __name__ == "__main__":
    main()
