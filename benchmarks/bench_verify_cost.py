"""What speculative decoding can gain on this machine: the verification cost curve (issue 5).

Speculative decoding pays when the target scores K+1 tokens in one forward for about the price
of one, as on a GPU, whose decode step is bound by memory bandwidth. This measures, with a
warm KV cache of ``--context`` tokens, the target's forward time for n = 1 .. K+1 new tokens and
the draft's time per token, then prints, for per-token acceptance alpha (the chance that the
draft's token equals the target's; tokens accepted per step are then
``(1 - alpha**(K+1)) / (1 - alpha)`` counting the target's own token):

* the ceiling with a free draft:      speedup = E(alpha, K) * t(1) / t(K+1)
* sequential draft then verify:       speedup = E(alpha, K) * t(1) / (t(K+1) + K * d)

and the smallest alpha that reaches 1.3x, for every K. Medians of ``--reps`` forwards. The
cached draft's own alpha is measured too: its greedy agreement with the target's greedy
continuation (teacher-forced) of held-out HumanEval prompts.

    nice .venv/bin/python benchmarks/bench_verify_cost.py                  # 1 thread
    nice .venv/bin/python benchmarks/bench_verify_cost.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from greenllm.engine import (
    SamplingParams,
    autoregressive_generate,
    cached_distilled_draft,
    draft_dir,
    load_model,
    smollm2_dir,
)
from greenllm.engine.model.draft import DISTILL_DEFAULTS, HELDOUT_HUMANEVAL
from greenllm.workloads import humaneval_prompts

ALPHAS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0)


def forward_ms(model: Any, n_new: int, context: int, reps: int) -> float:
    """Median ms of one forward of ``n_new`` tokens after ``context`` cached tokens."""
    gen = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    with torch.inference_mode():
        cache = model(input_ids=torch.randint(vocab, (1, context), generator=gen),
                      use_cache=True).past_key_values  # fmt: skip
        new = torch.randint(vocab, (1, n_new), generator=gen)
        times = []
        for _ in range(reps + 1):  # the first is a warm-up
            start = time.perf_counter()
            model(input_ids=new, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - start)
            cache.crop(-n_new)
    return 1000 * sorted(times[1:])[reps // 2]


def agreement(target: Any, draft: Any, prompts: list[list[int]], n_tokens: int) -> float:
    """Fraction of the target's greedy tokens that are also the draft's greedy choice, with
    the draft fed the target's text (per-token alpha of greedy speculative decoding)."""
    agree = total = 0
    for prompt in prompts:
        out = autoregressive_generate(target, prompt, SamplingParams(max_tokens=n_tokens)).tokens
        with torch.inference_mode():
            logits = draft(input_ids=torch.tensor([prompt + out[:-1]])).logits[0]
        guesses = logits[len(prompt) - 1 :].argmax(-1).tolist()
        agree += sum(g == t for g, t in zip(guesses, out, strict=True))
        total += len(out)
    return agree / total


def tokens_per_step(alpha: float, k: int) -> float:
    """Expected tokens per verification step (accepted drafts + the target's token)."""
    return float(k + 1) if alpha >= 1 else (1 - alpha ** (k + 1)) / (1 - alpha)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-k", type=int, default=6)
    ap.add_argument("--context", type=int, default=224, help="cached tokens before the forward")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (DSD: 1 per process)")
    ap.add_argument("--prompts", type=int, default=4, help="held-out prompts for the draft alpha")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    target, _ = load_model(smollm2_dir())
    draft_folder = cached_distilled_draft() or draft_dir("layerskip")
    draft, tokenizer = load_model(draft_folder)
    t = {n: forward_ms(target, n, args.context, args.reps) for n in range(1, args.max_k + 2)}
    d = forward_ms(draft, 1, args.context, args.reps)
    print(
        f"SmolLM2-135M target, draft {draft_folder.name}; {args.threads} torch thread(s), "
        f"context {args.context}, load average {load_start:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    print("target forward ms for n new tokens: " + ", ".join(
        f"n={n}: {ms:.1f} ({ms / t[1]:.2f}x)" for n, ms in t.items()))  # fmt: skip
    print(f"draft forward ms for 1 token: {d:.1f} ({d / t[1]:.2f}x the target's)")
    texts = [humaneval_prompts()[i] for i in list(HELDOUT_HUMANEVAL)[: args.prompts]]
    prompts = [tokenizer(x).input_ids[-DISTILL_DEFAULTS["max_prompt_tokens"] :] for x in texts]
    alpha = agreement(target, draft, prompts, 32)
    print(
        f"this draft's alpha: {alpha:.3f} (greedy agreement over {len(prompts)} held-out "
        f"HumanEval prompts x 32 tokens)"
    )
    header = "".join(f"{'a=' + format(a, 'g'):>8}" for a in ALPHAS)
    print(f"{'K':>3} {'draft':<11}{header}{'alpha for 1.3x':>16}")
    for k in range(1, args.max_k + 1):
        for label, cost in (("free", t[k + 1]), ("sequential", t[k + 1] + k * d)):
            speedups = [tokens_per_step(a, k) * t[1] / cost for a in ALPHAS]
            grid = [a / 1000 for a in range(1001)]
            need = next((a for a in grid if tokens_per_step(a, k) * t[1] / cost >= 1.3), None)
            print(
                f"{k:>3} {label:<11}"
                + "".join(f"{s:>8.2f}" for s in speedups)
                + f"{'unreachable' if need is None else format(need, '.3f'):>16}"
            )


if __name__ == "__main__":
    main()
