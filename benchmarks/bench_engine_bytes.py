"""Link bytes per generated token: Disg-Pref-Decode (KV cache) vs Disg-Spec-Decode with full
draft rows (the paper) vs Disg-Spec-Decode lean (draft-token probabilities, one row per
rejection), at the paper's request sizes (Table 2, P50 input/output of each application).

Inputs are real HumanEval text truncated to exactly the P50 input length; outputs are the P50
output length divided by ``--out-scale`` (default 4, for CPU time; bytes per token of DSD do
not depend on the output length, DPD's KV bytes are per request and so per token they shrink
with longer outputs: the table also gives DPD at the full P50 output length, computed from the
measured bytes per request).

Run: ``nice python benchmarks/bench_engine_bytes.py [--draft layerskip] [--out-scale 4]``
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from greenllm.engine import Engine, SamplingParams, draft_dir, load_model, smollm2_dir
from greenllm.workloads import get_application, humaneval_prompts

APPS = ("sharegpt", "humaneval", "longbench")


def _prompt_ids(tokenizer: Any, n_tokens: int) -> list[int]:
    ids: list[int] = []
    for text in humaneval_prompts():
        ids += tokenizer(text)["input_ids"]
        if len(ids) >= n_tokens:
            return ids[:n_tokens]
    raise ValueError(f"not enough HumanEval text for {n_tokens} tokens")


def _measure(engine: Engine, prompt: list[int], out_tokens: int, **opts: Any) -> dict[str, Any]:
    before = engine.stats()
    out = asyncio.run(engine.generate(prompt, SamplingParams(max_tokens=out_tokens), **opts))
    after = engine.stats()
    total = after.link_bytes - before.link_bytes
    by_kind: dict[str, int] = {}
    for direction in ("bytes_new_to_old", "bytes_old_to_new"):
        a, b = getattr(after, direction), getattr(before, direction)
        for k in set(a) | set(b):
            by_kind[k] = by_kind.get(k, 0) + a.get(k, 0) - b.get(k, 0)
    proposed = after.proposed_tokens - before.proposed_tokens
    accepted = after.accepted_tokens - before.accepted_tokens
    return {"tokens": len(out.tokens), "bytes": total, "by_kind": by_kind,
            "acceptance": accepted / proposed if proposed else float("nan"),
            "fetches": after.row_fetches - before.row_fetches, "out": out.tokens}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draft", default="layerskip", choices=["layerskip", "distilled"])
    parser.add_argument("--out-scale", type=int, default=4)
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    target, draft = smollm2_dir(), draft_dir(args.draft)
    _, tokenizer = load_model(target)
    print(f"config: target=SmolLM2-135M (30 layers, 3 KV heads x 64, vocab 49152, float32) "
          f"draft={draft.name} K={args.k} greedy; P50 sizes of Table 2, outputs / "
          f"{args.out_scale}; one request per row; bytes include 96-byte headers")  # fmt: skip
    rows = []
    with Engine("dpd", str(target), timeout_s=300) as dpd_engine:
        for app in APPS:
            size = get_application(app).p50
            out_n = max(2, size.output_tokens // args.out_scale)
            prompt = _prompt_ids(tokenizer, size.input_tokens)
            rows.append((app, size, out_n, "DPD", _measure(dpd_engine, prompt, out_n)))
    with Engine("dsd", str(target), str(draft), k=args.k, timeout_s=300) as dsd_engine:
        for app in APPS:
            size = get_application(app).p50
            out_n = max(2, size.output_tokens // args.out_scale)
            prompt = _prompt_ids(tokenizer, size.input_tokens)
            full = _measure(dsd_engine, prompt, out_n, lean=False)
            lean = _measure(dsd_engine, prompt, out_n, lean=True)
            assert full["out"] == lean["out"], "lean mode changed the output"
            rows += [
                (app, size, out_n, "DSD full rows", full),
                (app, size, out_n, "DSD lean", lean),
            ]
    print(f"{'app':10}{'P50 (in,out)':>14}{'out run':>8}  {'mode':14}{'bytes/token':>13}"
          f"{'kv':>11}{'probs':>11}{'ids':>7}{'other':>9}{'accept':>8}{'rows':>6}")  # fmt: skip
    for app, size, out_n, mode, r in rows:
        k = r["by_kind"]
        other = r["bytes"] - k.get("kv", 0) - k.get("probs", 0) - k.get("ids", 0)
        print(f"{app:10}{size!s:>14}{out_n:8d}  {mode:14}{r['bytes'] / r['tokens']:13,.0f}"
              f"{k.get('kv', 0):11,}{k.get('probs', 0):11,}{k.get('ids', 0):7,}{other:9,}"
              f"{r['acceptance']:8.2f}{r['fetches']:6d}")  # fmt: skip
    print("DPD at the full P50 output length (KV bytes are per request):")
    for app, size, _, mode, r in rows:
        if mode == "DPD":
            print(f"  {app:10} {r['bytes'] / size.output_tokens:13,.0f} bytes/token")


if __name__ == "__main__":
    main()
