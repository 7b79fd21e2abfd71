"""One sequence's causal LM plus its KV cache: feed tokens, get logits, crop on rejection.

Used by the single-process generation loops in :mod:`greenllm.engine.model.verifier`. The cache is
a transformers ``DynamicCache``; :meth:`CachedLM.crop` drops the positions of rejected draft
tokens so nothing before them is recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from greenllm.errors import ConfigError, missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["CachedLM", "as_token_list"]


def as_token_list(input_ids: Any) -> list[int]:
    """Token ids as a flat list from a list, a 1-D tensor/array, or a (1, L) tensor/array."""
    ids = torch.as_tensor(input_ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or ids.numel() == 0 or ids.dtype.is_floating_point:
        raise ConfigError(
            f"input_ids of shape {tuple(ids.shape)} and dtype {ids.dtype}: "
            "need a non-empty 1-D (or 1 x L) sequence of integer token ids"
        )
    return [int(t) for t in ids]


class CachedLM:
    """A causal LM (``LlamaForCausalLM``-like) and the KV cache of one sequence."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache: Any = None
        self.length = 0  # tokens held in the cache

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def feed(
        self, token_ids: Sequence[int] | torch.Tensor, *, last_only: bool = False
    ) -> torch.Tensor:
        """Run the model over ``token_ids`` after the cached prefix; logits (n, vocab) float32,
        or (1, vocab) of the last position with ``last_only`` (a prompt: the LM head then runs
        on one row, not n, as vLLM's prefill does)."""
        ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(1, -1)
        if ids.shape[1] == 0:
            raise ConfigError("feed() got no tokens: pass at least one token id")
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(device), past_key_values=self.cache, use_cache=True,
                logits_to_keep=1 if last_only else 0,
            )
        self.cache = out.past_key_values
        self.length += ids.shape[1]
        return out.logits[0].float().cpu()

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` cached positions."""
        if not 0 <= length <= self.length:
            raise ConfigError(f"crop({length}): must be within [0, {self.length}]")
        if length < self.length:
            # a negative count removes that many tokens, in transformers 4.x and 5.x alike
            self.cache.crop(length - self.length)
            self.length = length
