"""Draft models for speculative decoding of SmolLM2 (no second model ships with its tokenizer).

Two kinds, both sharing the target's vocabulary and tokenizer:

- ``layerskip``: the target with only some decoder layers kept (embeddings, chosen layers,
  final norm, lm_head), as in early-exit / LayerSkip drafts. Seconds to build, but a shallow
  truncation agrees with the target rarely.
- ``distilled``: the same truncation as initialisation, then trained on the target's own
  outputs: the target greedily continues real HumanEval prompts (the train split, never the
  :data:`HELDOUT_HUMANEVAL` prompts), and the draft learns the target's next-token
  distribution at every position (cross-entropy to the target's renormalised top-k
  probabilities, i.e. KL up to a constant). Deterministic for a seed and a step budget.

:func:`draft_dir` caches both as plain Hugging Face folders (weights + the target's tokenizer
files) under :func:`greenllm.engine.model.pretrained.cache_dir`, loadable by vLLM as a separate
draft model. :func:`measure_acceptance` gives the greedy acceptance rate of a draft against a
target. Model aliases of the drafts are in :mod:`greenllm.engine.model.resolve`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.engine.model.cache import as_token_list
from greenllm.engine.model.generate import autoregressive_generate, speculative_generate
from greenllm.engine.model.pretrained import (
    DISTILLED_DRAFT_PREFIX,
    atomic_build,
    cache_dir,
    load_folder,
    smollm2_dir,
)
from greenllm.engine.model.sampling import SamplingParams
from greenllm.errors import ConfigError, missing_extra

try:
    import torch
    from transformers import LlamaForCausalLM
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = [
    "DISTILL_DEFAULTS",
    "HELDOUT_HUMANEVAL",
    "distill",
    "distill_draft",
    "draft_dir",
    "layerskip_draft",
    "measure_acceptance",
]

logger = logging.getLogger(__name__)

#: HumanEval problems kept out of distillation, for measuring acceptance.
HELDOUT_HUMANEVAL = range(128, 164)

#: Defaults of :func:`distill_draft` (and of ``draft_dir("distilled")``).
DISTILL_DEFAULTS: dict[str, Any] = {
    "n_layers": 4,
    "steps": 300,
    "n_prompts": 48,
    "max_new_tokens": 48,
    "max_prompt_tokens": 192,
    "top_k": 32,
    "lr": 1e-3,
    "seed": 0,
}
_LAYERSKIP_LAYERS = 4


def layerskip_draft(model: Any, keep_layers: int | Sequence[int]) -> Any:
    """A smaller ``LlamaForCausalLM`` keeping the embeddings, the chosen decoder layers (an int
    ``n`` keeps the first ``n``), the final norm and the lm_head of ``model`` (copied)."""
    n_total = int(model.config.num_hidden_layers)
    keep = list(range(keep_layers)) if isinstance(keep_layers, int) else list(keep_layers)
    if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= n_total:
        raise ConfigError(
            f"keep_layers={keep_layers!r}: need a positive count <= {n_total} or increasing "
            f"distinct layer indices in [0, {n_total})"
        )
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.layers."):
            old = int(key.split(".")[2])
            if old not in keep:
                continue
            key = key.replace(f"model.layers.{old}.", f"model.layers.{keep.index(old)}.", 1)
        state[key] = value.detach().clone()
    draft = LlamaForCausalLM(config)
    draft.load_state_dict(state, strict=True)
    return draft.to(model.dtype).eval()


def _teacher_data(
    target: Any, prompts: list[list[int]], max_new_tokens: int, top_k: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(sequence ids, top-k target probs, their token ids) per prompt + greedy continuation."""
    data = []
    params = SamplingParams(max_tokens=max_new_tokens)
    start_s = time.perf_counter()
    for n, ids in enumerate(prompts, 1):
        sequence = ids + autoregressive_generate(target, ids, params).tokens
        seq = torch.tensor(sequence[:-1], dtype=torch.long)
        with torch.inference_mode():
            probs = torch.softmax(target(input_ids=seq[None]).logits[0].float(), dim=-1)
        top_p, top_i = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        data.append((seq, top_p / top_p.sum(-1, keepdim=True), top_i))
        if n % 8 == 0 or n == len(prompts):
            logger.info("teacher outputs: %d/%d prompts, %.0f s", n, len(prompts),
                        time.perf_counter() - start_s)
    return data


def distill(
    target: Any,
    prompts: Sequence[Sequence[int]],
    *,
    n_layers: int = 4,
    steps: int = 400,
    max_new_tokens: int = 48,
    top_k: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    minutes: float | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train a ``n_layers`` draft (initialised by :func:`layerskip_draft`) on ``target``'s
    next-token distributions over ``prompts`` + its greedy continuations; (draft, stats).

    Embeddings and lm_head stay frozen (shared with the target's). ``steps`` sequences are
    visited in a seeded order; ``minutes`` optionally caps the training time (the result is
    then no longer deterministic).
    """
    if steps < 1 or not prompts:
        raise ConfigError(f"steps={steps}, {len(prompts)} prompts: need steps >= 1 and prompts")
    token_prompts = [as_token_list(p) for p in prompts]
    data = _teacher_data(target, token_prompts, max_new_tokens, top_k)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        draft = layerskip_draft(target, n_layers).float().train()
        frozen = {id(draft.get_input_embeddings().weight), id(draft.get_output_embeddings().weight)}
        trainable = [p for p in draft.parameters() if id(p) not in frozen]
        for p in draft.parameters():
            p.requires_grad_(id(p) not in frozen)
        opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                    pct_start=0.1)
        order = np.random.default_rng(seed).integers(0, len(data), size=steps)
        start_s, losses = time.perf_counter(), []
        for step, index in enumerate(order, 1):
            seq, top_p, top_i = data[int(index)]
            logp = torch.log_softmax(draft(input_ids=seq[None]).logits[0].float(), dim=-1)
            loss = -(top_p * logp.gather(-1, top_i)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            elapsed_s = time.perf_counter() - start_s
            if step % 50 == 0 or step == steps:
                logger.info("distill step %d/%d loss %.3f (%.0f s)", step, steps,
                            float(np.mean(losses[-50:])), elapsed_s)
            if minutes is not None and elapsed_s > 60 * minutes:
                logger.warning("distillation stopped by the %.1f min cap at step %d", minutes, step)
                break
    draft.requires_grad_(False)
    stats = {"steps_done": len(losses), "loss_first": losses[0], "loss_last_50": float(
        np.mean(losses[-50:])), "train_s": time.perf_counter() - start_s,
        "n_sequences": len(data), "n_tokens": int(sum(len(d[0]) for d in data))}
    return draft.eval(), stats


def _default_prompts(tokenizer: Any, n_prompts: int, max_prompt_tokens: int) -> list[list[int]]:
    from greenllm.workloads import humaneval_prompts

    texts = [p for i, p in enumerate(humaneval_prompts()) if i not in HELDOUT_HUMANEVAL]
    return [tokenizer(t).input_ids[-max_prompt_tokens:] for t in texts[:n_prompts]]


def distill_draft(
    target_dir: str | Path,
    out_dir: str | Path,
    *,
    prompts: Sequence[Sequence[int] | str] | None = None,
    n_prompts: int = DISTILL_DEFAULTS["n_prompts"],
    max_prompt_tokens: int = DISTILL_DEFAULTS["max_prompt_tokens"],
    **kwargs: Any,
) -> Path:
    """Distil a draft of the model in folder ``target_dir`` into ``out_dir`` (skipped if
    complete).

    ``prompts``: token-id lists or strings (default: the first ``n_prompts`` HumanEval prompts
    of the train split). Other keywords go to :func:`distill`. The target's tokenizer files
    (if any) are saved beside the draft; ``distill.json`` records the settings and losses.
    """

    def build(tmp: Path) -> None:
        target, tokenizer = load_folder(target_dir)
        needs_tokenizer = prompts is None or any(isinstance(p, str) for p in prompts)
        if needs_tokenizer and tokenizer is None:
            raise ConfigError(f"{target_dir} has no tokenizer: pass prompts as token ids")
        if prompts is None:
            ids = _default_prompts(tokenizer, n_prompts, max_prompt_tokens)
        else:
            ids = [tokenizer(p).input_ids[-max_prompt_tokens:] if isinstance(p, str)
                   else as_token_list(p) for p in prompts]
        logger.info("distilling a draft of %s on %d prompts into %s", target_dir, len(ids), out_dir)
        draft, stats = distill(target, ids, **kwargs)
        draft.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "distill.json").write_text(json.dumps({"settings": kwargs, **stats}, indent=1))

    return atomic_build(Path(out_dir), build)


def draft_dir(kind: str = "distilled", **kwargs: Any) -> Path:
    """Cached folder of a SmolLM2 draft: ``"layerskip"`` (first ``n_layers`` layers, seconds)
    or ``"distilled"`` (:func:`distill_draft` with :data:`DISTILL_DEFAULTS` overridden by
    ``kwargs``; minutes on first use, then cached)."""
    target = smollm2_dir()
    if kind == "layerskip":
        n_layers = int(kwargs.pop("n_layers", _LAYERSKIP_LAYERS))
        if kwargs:
            raise ConfigError(f"draft_dir('layerskip') got unknown options {sorted(kwargs)}")

        def build(tmp: Path) -> None:
            model, tokenizer = load_folder(target)
            layerskip_draft(model, n_layers).save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)

        return atomic_build(cache_dir() / f"smollm2-135m-draft-layerskip-{n_layers}l", build)
    if kind == "distilled":
        unknown = set(kwargs) - set(DISTILL_DEFAULTS) - {"minutes"}
        if unknown:
            raise ConfigError(f"draft_dir('distilled') got unknown options {sorted(unknown)}; "
                              f"known: {sorted(DISTILL_DEFAULTS)} and 'minutes'")
        settings = {**DISTILL_DEFAULTS, **kwargs}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        folder = cache_dir() / f"{DISTILLED_DRAFT_PREFIX}{settings['n_layers']}l-{key}"
        return distill_draft(target, folder, **settings)
    raise ConfigError(f"draft kind {kind!r}: use 'distilled' or 'layerskip'")


def measure_acceptance(
    target: Any,
    draft: Any,
    prompts: Sequence[Sequence[int] | str],
    k: int = 4,
    n_tokens: int = 32,
    tokenizer: Any = None,
) -> float:
    """Greedy acceptance rate (accepted / proposed draft tokens) of ``draft`` against
    ``target`` over ``prompts`` (token-id lists, or strings with ``tokenizer``)."""
    params = SamplingParams(max_tokens=n_tokens)
    accepted = proposed = 0
    for prompt in prompts:
        if isinstance(prompt, str):
            if tokenizer is None:
                raise ConfigError("string prompts need a tokenizer: pass tokenizer=...")
            prompt = tokenizer(prompt).input_ids
        result = speculative_generate(target, draft, prompt, k, params)
        accepted += result.n_accepted
        proposed += result.n_proposed
    if proposed == 0:
        raise ConfigError(f"no draft tokens proposed: n_tokens={n_tokens} must be >= 2")
    return accepted / proposed

