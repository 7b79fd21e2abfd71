"""Prompt text for HTTP load: synthetic words of a given length, or real HumanEval prompts.

Servers need text, while workloads give token counts. A synthetic prompt of ``n`` tokens is
``n`` random common words (one token each with Llama's and GPT's tokenizers, plus BOS); a
HumanEval prompt is cut to ``n`` word pieces, the same pieces
:func:`greenllm.workloads.humaneval.approx_token_count` counts. The server's own count
(``usage.prompt_tokens``) is what the result records when the server sends it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

from greenllm.errors import ConfigError
from greenllm.workloads import RequestSet

__all__ = ["PromptSource", "resolve_prompts", "synthetic_prompt", "truncate_prompt"]

PromptSource = Literal["synthetic", "humaneval"]

# Common English words that Llama's and GPT's tokenizers encode as one token each (with their
# leading space), so ``n`` of them make a prompt of about ``n`` tokens (plus BOS).
_WORDS = np.array(
    ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
     "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
     "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
     "been", "if", "more", "when", "will", "would", "who", "so", "no"]
)  # fmt: skip
# Same word pieces as greenllm.workloads.humaneval.approx_token_count.
_PIECE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]|\n|(?<=\n) +")


def synthetic_prompt(n_tokens: int, *, seed: int = 0, index: int = 0) -> str:
    """About ``n_tokens`` tokens of random common words, fixed by ``(seed, index)``.

    Requests get different words so a server's prefix cache cannot serve them from cache.
    """
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or n_tokens < 1:
        raise ConfigError(f"n_tokens = {n_tokens!r}: must be an integer >= 1")
    rng = np.random.default_rng([int(seed), int(index), 7])
    return " ".join(_WORDS[rng.integers(0, len(_WORDS), int(n_tokens))])


def truncate_prompt(text: str, n_tokens: int) -> str:
    """``text`` cut after its ``n_tokens``-th word piece (as counted by ``approx_token_count``)."""
    for k, match in enumerate(_PIECE.finditer(text), start=1):
        if k == n_tokens:
            return text[: match.end()]
    return text


def resolve_prompts(
    requests: RequestSet,
    prompts: Sequence[str] | PromptSource | None = None,
    *,
    seed: int = 0,
) -> tuple[str, ...]:
    """Prompt text per request: given texts, ``requests.prompts``, HumanEval or synthetic.

    ``None`` uses ``requests.prompts`` when present, else ``"synthetic"`` (about
    ``input_tokens`` random common words). ``"humaneval"`` takes the HumanEval prompts in a
    ``seed``-fixed order, each cut to at most ``input_tokens`` word pieces (the paper truncates
    prompts to the request size).
    """
    n = len(requests)
    if prompts is None:
        prompts = requests.prompts if requests.prompts is not None else "synthetic"
    if prompts == "synthetic":
        sizes = requests.input_tokens
        return tuple(synthetic_prompt(int(k), seed=seed, index=i) for i, k in enumerate(sizes))
    if prompts == "humaneval":
        from greenllm.workloads import humaneval_prompts

        pool = humaneval_prompts()
        rng = np.random.default_rng([seed, 3])
        order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))]
                               or [np.zeros(0, dtype=int)])  # fmt: skip
        return tuple(
            truncate_prompt(pool[int(j)], int(k))
            for j, k in zip(order[:n], requests.input_tokens, strict=True)
        )
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ConfigError(
            f"prompts = {prompts!r}: must be 'synthetic', 'humaneval', None or a list of texts"
        )
    if len(prompts) != n or not all(isinstance(p, str) for p in prompts):
        raise ConfigError(f"prompts: got {len(prompts)} items for {n} requests; give one text each")
    return tuple(prompts)
