"""Greedy decode speed on this CPU: target-only vs speculative decoding, in and across processes
(issue 5, benchmark 1).

Same target (SmolLM2-135M), same draft (the distilled draft if cached, else the layer-skip draft
with a loud note), same held-out HumanEval prompts (never used for distillation), K draft
tokens, prompts served one at a time. Rows:

    a  target-only autoregressive, in process     (generate.autoregressive_generate)
    b  transformers assisted generation           (generate(assistant_model=draft), K constant)
    c  speculative decoding, in process           (generate.speculative_generate)
    d  Engine spec_decode (one worker process: target + draft)
    e  Engine DSD (two worker processes: target + verifier | draft)
    f  Engine DSD lean (only the draft tokens' probabilities cross the link)

tokens/s = generated tokens / end-to-end time (prefill included), summed over prompts. Every
output must equal (a) token for token. Threads: two settings, because DSD runs two processes
(one per "GPU") while a-d run one: ``per-process`` gives every process 1 torch thread (DSD then
uses 2 cores, the others 1); ``fair`` gives every row the machine's 2 cores (a-d: 2 threads in
their one process; DSD: 1 thread in each of its two processes).

    nice .venv/bin/python benchmarks/bench_engine_speed.py                  # 6 prompts x 64 tokens
    nice .venv/bin/python benchmarks/bench_engine_speed.py --prompts 2 --tokens 16   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from typing import Any

import torch

from greenllm.engine import (
    Engine,
    SamplingParams,
    autoregressive_generate,
    cached_distilled_draft,
    draft_dir,
    load_model,
    smollm2_dir,
    speculative_generate,
)
from greenllm.engine.model.draft import DISTILL_DEFAULTS, HELDOUT_HUMANEVAL
from greenllm.workloads import humaneval_prompts

ROWS = {"a": "target only (in process)", "b": "transformers assisted generation",
        "c": "speculative (in process)", "d": "Engine spec_decode (1 process)",
        "e": "Engine DSD (2 processes)", "f": "Engine DSD lean (2 processes)"}  # fmt: skip


def _assisted(target: Any, draft: Any, prompt: list[int], n: int, k: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = target.generate(ids, attention_mask=torch.ones_like(ids), assistant_model=draft,
                          do_sample=False, max_new_tokens=n, min_new_tokens=n,
                          num_assistant_tokens=k, num_assistant_tokens_schedule="constant",
                          assistant_confidence_threshold=0.0, pad_token_id=0)  # fmt: skip
    return out[0, len(prompt):].tolist()


def _in_process(row: str, target: Any, draft: Any, prompts: list[list[int]], n: int,
                k: int) -> dict[str, Any]:  # fmt: skip
    params = SamplingParams(max_tokens=n)
    tokens, elapsed_s, proposed, accepted = [], 0.0, 0, 0
    for p in prompts:
        start_s = time.perf_counter()
        if row == "a":
            out = autoregressive_generate(target, p, params).tokens
        elif row == "b":
            out = _assisted(target, draft, p, n, k)
        else:
            r = speculative_generate(target, draft, p, k, params)
            out, proposed, accepted = r.tokens, proposed + r.n_proposed, accepted + r.n_accepted
        elapsed_s += time.perf_counter() - start_s
        tokens.append(out)
    return {"tokens": tokens, "elapsed_s": elapsed_s, "proposed": proposed, "accepted": accepted}


def _engine(engine: Engine, prompts: list[list[int]], n: int, lean: bool) -> dict[str, Any]:
    async def one_by_one() -> list[Any]:
        return [await engine.generate(p, SamplingParams(max_tokens=n), lean=lean)
                for p in prompts]  # fmt: skip

    outs = asyncio.run(one_by_one())
    return {"tokens": [list(o.tokens) for o in outs],
            "elapsed_s": sum(o.finish_s - o.arrival_s for o in outs),
            "proposed": sum(o.proposed_tokens for o in outs),
            "accepted": sum(o.accepted_tokens for o in outs)}  # fmt: skip


def run_setting(name: str, models: dict[str, Any], prompts: list[list[int]], n: int, k: int,
                in_process_threads: int, engine_threads: int,
                dsd_threads: int) -> list[dict[str, Any]]:  # fmt: skip
    target, draft = models["target"], models["draft"]
    warm = [prompts[0][:16]]
    rows: list[dict[str, Any]] = []
    torch.set_num_threads(in_process_threads)
    for row in "abc":
        _in_process(row, target, draft, warm, 4, k)  # warm-up, not timed
        rows.append({"row": row, "threads": in_process_threads,
                     **_in_process(row, target, draft, prompts, n, k)})  # fmt: skip
    for mode, threads, row_names in (("spec_decode", engine_threads, "d"),
                                     ("dsd", dsd_threads, "ef")):  # fmt: skip
        with Engine(mode, models["target_dir"], models["draft_dir"], k=k, threads=threads) as eng:
            _engine(eng, warm, 4, False)
            for row in row_names:
                rows.append({"row": row, "threads": threads,
                             **_engine(eng, prompts, n, lean=row == "f")})  # fmt: skip
    base = rows[0]
    for r in rows:
        n_tok = sum(len(t) for t in r["tokens"])
        r["setting"] = name
        r["tokens_per_s"] = n_tok / r["elapsed_s"]
        r["vs_a"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["acceptance"] = r["accepted"] / r["proposed"] if r["proposed"] else float("nan")
        r["equal_to_a"] = r["tokens"] == base["tokens"]
        r["processes"] = 2 if r["row"] in "ef" else 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=6, help="held-out HumanEval prompts")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per prompt")
    parser.add_argument("--k", type=int, default=4, help="draft tokens per step")
    parser.add_argument("--draft", choices=("auto", "distilled", "layerskip"), default="auto")
    parser.add_argument("--settings", default="per-process,fair")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_start = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    target_dir = smollm2_dir()
    cached = cached_distilled_draft()
    if args.draft == "layerskip" or (args.draft == "auto" and cached is None):
        draft_folder, draft_kind = draft_dir("layerskip"), "layerskip"
        print("!!! NOTE: the distilled draft is not cached; using the LAYER-SKIP draft, whose "
              "acceptance is near zero. Build the distilled one: benchmarks/bench_draft.py !!!")
    else:
        draft_folder, draft_kind = cached or draft_dir("distilled"), "distilled"
    target, tokenizer = load_model(target_dir)
    draft, _ = load_model(draft_folder)
    texts = [humaneval_prompts()[i] for i in list(HELDOUT_HUMANEVAL)[: args.prompts]]
    prompts = [tokenizer(t).input_ids[-DISTILL_DEFAULTS["max_prompt_tokens"]:] for t in texts]
    models = {"target": target, "draft": draft, "target_dir": str(target_dir),
              "draft_dir": str(draft_folder)}  # fmt: skip
    threads = {"per-process": (1, 1, 1), "fair": (cores, cores, max(1, cores // 2))}
    rows = []
    for name in args.settings.split(","):
        rows += run_setting(name, models, prompts, args.tokens, args.k, *threads[name])
    load_end = os.getloadavg()
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "tokens"} for r in rows]))
        return
    print(f"SmolLM2-135M target, {draft_kind} draft ({draft_folder.name}), K={args.k}, "
          f"{len(prompts)} held-out HumanEval prompts x {args.tokens} tokens, greedy, "
          f"{cores} cores; load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}")
    print(f"{'setting':<12}{'row':<38}{'thr/proc':>9}{'tok/s':>8}{'vs a':>7}{'accept':>8}"
          f"{'= a':>5}")
    for r in rows:
        print(f"{r['setting']:<12}{r['row'] + ' ' + ROWS[r['row']]:<38}{r['threads']:>9}"
              f"{r['tokens_per_s']:>8.2f}{r['vs_a']:>7.2f}{r['acceptance']:>8.3f}"
              f"{'yes' if r['equal_to_a'] else 'NO':>5}")
    for name in dict.fromkeys(r["setting"] for r in rows):
        by = {r["row"]: r for r in rows if r["setting"] == name}
        print(f"{name}: DSD >= 1.3x target-only: {by['e']['vs_a'] >= 1.3} "
              f"({by['e']['vs_a']:.2f}x); DSD >= transformers assisted: "
              f"{by['e']['tokens_per_s'] >= by['b']['tokens_per_s']}")


if __name__ == "__main__":
    main()
