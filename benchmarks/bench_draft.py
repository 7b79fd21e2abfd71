"""Draft models for SmolLM2-135M: layer-skip truncation vs distilled draft (issue 5).

Builds (or loads from the cache) both drafts with ``greenllm.engine.model.draft.draft_dir``, then
prints side by side: parameters, greedy decode ms/token of each model alone, greedy acceptance
rate at K draft tokens on held-out HumanEval prompts (never used for distillation), and the
ms/token of single-process speculative decoding with each draft.

    nice .venv/bin/python benchmarks/bench_draft.py            # default distillation budget
    nice .venv/bin/python benchmarks/bench_draft.py --steps 100 --n-prompts 16   # quicker

The first run distils (minutes on 2 CPU cores) and caches the draft under
``$GREENLLM_CACHE`` or ``~/.cache/greenllm``; later runs only measure.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from greenllm.engine import (
    SamplingParams,
    autoregressive_generate,
    draft_dir,
    load_model,
    smollm2_dir,
    speculative_generate,
)
from greenllm.engine.model.draft import DISTILL_DEFAULTS, HELDOUT_HUMANEVAL
from greenllm.workloads import humaneval_prompts


def _decode_ms_per_token(model: Any, prompt: list[int], n_tokens: int) -> float:
    result = autoregressive_generate(model, prompt, SamplingParams(max_tokens=n_tokens))
    times = result.token_times_s
    return 1000 * (times[-1] - times[0]) / (len(times) - 1)


def _speculative(target: Any, draft: Any, prompts: list[list[int]], k: int,
                 n_tokens: int) -> tuple[float, float]:
    """(acceptance rate, decode ms per generated token after the first) over ``prompts``."""
    accepted = proposed = 0
    decode_s = 0.0
    tokens = 0
    for prompt in prompts:
        r = speculative_generate(target, draft, prompt, k, SamplingParams(max_tokens=n_tokens))
        accepted, proposed = accepted + r.n_accepted, proposed + r.n_proposed
        decode_s += r.token_times_s[-1] - r.token_times_s[0]
        tokens += len(r.tokens) - 1
    return accepted / proposed, 1000 * decode_s / tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DISTILL_DEFAULTS["steps"])
    parser.add_argument("--n-prompts", type=int, default=DISTILL_DEFAULTS["n_prompts"])
    parser.add_argument("--n-layers", type=int, default=DISTILL_DEFAULTS["n_layers"])
    parser.add_argument("--k", type=int, default=4, help="draft tokens per step")
    parser.add_argument("--n-heldout", type=int, default=12, help="held-out prompts measured")
    parser.add_argument("--n-tokens", type=int, default=48, help="tokens generated per prompt")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    start_s = time.perf_counter()
    target_dir = smollm2_dir()
    skip_dir = draft_dir("layerskip", n_layers=args.n_layers)
    distilled_dir = draft_dir("distilled", steps=args.steps, n_prompts=args.n_prompts,
                              n_layers=args.n_layers)
    build_s = time.perf_counter() - start_s
    target, tokenizer = load_model(target_dir)
    texts = [humaneval_prompts()[i] for i in list(HELDOUT_HUMANEVAL)[: args.n_heldout]]
    prompts = [tokenizer(t).input_ids[-DISTILL_DEFAULTS["max_prompt_tokens"]:] for t in texts]

    rows: dict[str, dict[str, float]] = {}
    target_ms = _decode_ms_per_token(target, prompts[0], args.n_tokens)
    rows["target"] = {"params_m": sum(p.numel() for p in target.parameters()) / 1e6,
                      "decode_ms_per_token": target_ms}
    for name, folder in (("layerskip", skip_dir), ("distilled", distilled_dir)):
        draft, _ = load_model(folder)
        acceptance, spec_ms = _speculative(target, draft, prompts, args.k, args.n_tokens)
        rows[name] = {
            "params_m": sum(p.numel() for p in draft.parameters()) / 1e6,
            "decode_ms_per_token": _decode_ms_per_token(draft, prompts[0], args.n_tokens),
            "acceptance": acceptance,
            "spec_decode_ms_per_token": spec_ms,
        }
    report = {"k": args.k, "n_heldout": len(prompts), "n_tokens": args.n_tokens,
              "distill_steps": args.steps, "distill_prompts": args.n_prompts,
              "n_layers": args.n_layers, "build_s": build_s, "models": rows,
              "distilled_dir": str(distilled_dir)}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"\nSmolLM2-135M drafts, {args.n_layers} layers, K={args.k}, greedy, "
          f"{len(prompts)} held-out HumanEval prompts x {args.n_tokens} tokens "
          f"(build/cache {build_s:.0f} s)")
    print(f"{'model':<10} {'params M':>9} {'ms/token':>9} {'acceptance':>11} {'spec ms/tok':>12}")
    for name, row in rows.items():
        acc = f"{row['acceptance']:.3f}" if "acceptance" in row else "-"
        spec = f"{row['spec_decode_ms_per_token']:.1f}" if "acceptance" in row else "-"
        print(f"{name:<10} {row['params_m']:>9.1f} {row['decode_ms_per_token']:>9.1f} "
              f"{acc:>11} {spec:>12}")
    print(f"distilled draft: {distilled_dir}")


if __name__ == "__main__":
    main()
