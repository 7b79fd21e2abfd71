"""Timing greenllm's engine on this CPU: thread CPU seconds, medians, seeded prompts and the
decode step every loop runs (:mod:`.cpu_profile` and :mod:`.sim_check` share them)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from greenllm.errors import missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["cached_lm", "decode_s", "median", "random_prompt", "thread_clock"]


def thread_clock() -> float:
    """CPU seconds of the calling thread: with one torch thread every forward computes in it,
    so time-slicing by other jobs on a shared machine does not count (a quiet machine's wall
    time is the same)."""
    return time.thread_time()


def median(times: Sequence[float]) -> float:
    return float(statistics.median(times))


def random_prompt(n: int, seed: int = 0, vocab: int = 49152) -> list[int]:
    """``n`` token ids in [2, vocab), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab, (n,), generator=gen).tolist()


def cached_lm(model: Any, context: int) -> Any:
    """A :class:`~greenllm.engine.model.cache.CachedLM` of ``model`` holding ``context`` tokens."""
    from greenllm.engine.model.cache import CachedLM

    lm = CachedLM(model)
    lm.feed(random_prompt(context, vocab=int(model.config.vocab_size)), last_only=True)
    return lm


def decode_s(model: Any, context: int, tokens: int) -> float:
    """Median seconds per greedy decode step after ``context`` tokens (``tokens`` steps, after
    one warm-up): ``CachedLM.feed`` of one token and sampling, as every decode loop."""
    from greenllm.engine import SamplingParams, probs_from_logits
    from greenllm.engine.model.sampling import sample_row

    params, lm, token, times = SamplingParams(), cached_lm(model, context), 7, []
    for _ in range(tokens + 1):
        start = thread_clock()
        token = sample_row(probs_from_logits(lm.feed([token])[-1], params))
        times.append(thread_clock() - start)
    return median(times[1:])
