"""Continuous batching of decode steps across concurrent requests (one new token per row).

Each admitted sequence brings its own KV cache (from its own prefill, or received from the
prefill worker in Disg-Pref-Decode). Decode steps run all active sequences as one batch: the
per-layer keys/values are left-padded to a common length, an attention mask hides the padding
and explicit position ids keep every row at its own position, so each row computes what it
would alone (up to float rounding from the different matrix shapes). When a sequence joins or
finishes, the batch cache is rebuilt from the rows' unpadded slices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from greenllm.engine.model.sampling import probs_from_logits, sample_row
from greenllm.errors import missing_extra

try:
    import torch
    from transformers import DynamicCache
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["BatchDecoder", "kv_layers", "prefill"]

logger = logging.getLogger(__name__)


def kv_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(keys, values), ...]`` per layer of a DynamicCache (tensors [B, H, L, D])."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def prefill(model: Any, prompt: list[int], counters: Any) -> tuple[torch.Tensor, Any]:
    """Run ``prompt`` through ``model``; (last-position logits float32 on CPU, DynamicCache).
    The LM head runs on the last position only."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    with torch.inference_mode(), counters.busy():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    return out.logits[0, -1].float().cpu(), out.past_key_values


@dataclass
class _Row:
    out: Any  # a greenllm.engine.worker.context.SeqOutput
    gen: Any
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None  # unpadded, set while not in the batch
    length: int  # tokens in the KV cache


class BatchDecoder:
    """Decode steps over up to ``max_batch`` sequences with a shared, left-padded KV cache."""

    def __init__(self, model: Any, counters: Any, max_batch: int = 8) -> None:
        self.model = model
        self.counters = counters
        self.max_batch = max(1, max_batch)
        self.device = next(model.parameters()).device
        self.rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._dirty = True

    @property
    def active(self) -> bool:
        return bool(self.rows)

    @property
    def has_room(self) -> bool:
        return len(self.rows) < self.max_batch

    def admit_prompt(self, out: Any, prompt: list[int], gen: Any, ctx: Any) -> None:
        """Prefill ``prompt`` alone, emit its first token, and join the batch if not done."""
        logits, cache = prefill(self.model, prompt, self.counters)
        first = sample_row(probs_from_logits(logits, out.params), gen)
        out.emit(ctx, [first])
        if out.done:
            ctx.finish(out.rid, out.reason)
            return
        self.admit_kv(out, kv_layers(cache), gen)

    def admit_kv(self, out: Any, kv: list[tuple[torch.Tensor, torch.Tensor]], gen: Any) -> None:
        """Join a sequence whose cache ``kv`` holds its context except the last emitted token."""
        length = int(kv[0][0].shape[-2])
        self.rows.append(_Row(out, gen, [(k.to(self.device), v.to(self.device)) for k, v in kv],
                              length))  # fmt: skip
        self._dirty = True

    def _unpad(self) -> None:
        """Give every row in the batch its own unpadded KV slices."""
        if self._cache is None:
            return
        layers = kv_layers(self._cache)
        total = int(layers[0][0].shape[-2])
        for i, row in enumerate(self.rows):
            if row.kv is None:
                start = total - row.length
                row.kv = [(k[i : i + 1, :, start:], v[i : i + 1, :, start:]) for k, v in layers]
        self._cache = None

    def _rebuild(self) -> None:
        self._unpad()
        width = max(r.length for r in self.rows)
        layers = []
        for layer in range(len(self.rows[0].kv)):  # type: ignore[arg-type]
            keys, values = [], []
            for r in self.rows:
                k, v = r.kv[layer]  # type: ignore[index]
                pad = width - r.length
                keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
                values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
            layers.append((torch.cat(keys), torch.cat(values)))
        self._cache = DynamicCache(ddp_cache_data=layers)
        self._mask = torch.zeros(len(self.rows), width, dtype=torch.long, device=self.device)
        for i, r in enumerate(self.rows):
            self._mask[i, width - r.length :] = 1
            r.kv = None
        self._dirty = False

    def step(self, ctx: Any) -> None:
        """One decode step for every active row: emit a token each, drop finished rows."""
        if not self.rows:
            return
        if self._dirty:
            self._rebuild()
        assert self._mask is not None
        last = torch.tensor([[r.out.tokens[-1]] for r in self.rows], device=self.device)
        positions = torch.tensor([[r.length] for r in self.rows], device=self.device)
        ones = torch.ones(len(self.rows), 1, dtype=torch.long, device=self.device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        with torch.inference_mode(), self.counters.busy():
            result = self.model(input_ids=last, attention_mask=self._mask, position_ids=positions,
                                past_key_values=self._cache, use_cache=True)  # fmt: skip
        self._cache = result.past_key_values
        logits = result.logits[:, -1].float().cpu()
        finished = []
        for i, r in enumerate(self.rows):
            r.length += 1
            r.out.emit(ctx, [sample_row(probs_from_logits(logits[i], r.out.params), r.gen)])
            if r.out.done:
                finished.append(i)
                ctx.finish(r.out.rid, r.out.reason)
        if finished:
            self._unpad()
            self.rows = [r for i, r in enumerate(self.rows) if i not in finished]
            self._dirty = True
