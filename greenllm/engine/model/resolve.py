"""Model names to local folders: greenllm's one alias table, used by the engine and by every
backend, so an alias means the same weights everywhere.

:func:`resolve_model_dir` takes a local Hugging Face folder (with ``config.json``) or exactly one
of :data:`ALIASES` (a name that merely starts with an alias is neither):

- ``smollm2-135m``: SmolLM2-135M-Instruct in float32
  (:func:`~greenllm.engine.model.pretrained.smollm2_dir`);
- ``smollm2-135m-draft``: the newest cached distilled draft, else the layer-skip draft; it never
  starts a distillation;
- ``smollm2-135m-draft-distilled``: the distilled draft of
  :func:`~greenllm.engine.model.draft.draft_dir`, distilled on first use (minutes): the only
  alias that may start a distillation;
- ``smollm2-135m-draft-layerskip``: the layer-skip draft (seconds to build).

Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenllm.engine.model.pretrained import (
    DISTILLED_DRAFT_PREFIX,
    DONE_MARKER,
    cache_dir,
    is_complete,
    load_folder,
    smollm2_dir,
    torch_dtype,
)
from greenllm.errors import ConfigError

__all__ = ["ALIASES", "cached_distilled_draft", "load_model", "resolve_model_dir"]

logger = logging.getLogger(__name__)

def cached_distilled_draft() -> Path | None:
    """The newest complete distilled SmolLM2 draft in the cache, or None (nothing is built)."""
    done = [p for p in cache_dir().glob(DISTILLED_DRAFT_PREFIX + "*") if is_complete(p)]
    return max(done, key=lambda p: (p / DONE_MARKER).stat().st_mtime) if done else None


def _draft(kind: str) -> Path:
    from greenllm.engine.model.draft import draft_dir

    logger.info("building/using the %s SmolLM2 draft", kind)
    return draft_dir(kind)


#: alias -> how to get its folder; the one table of model aliases.
_ALIAS_TABLE: dict[str, Callable[[], Path]] = {
    "smollm2-135m": lambda: smollm2_dir(),
    "smollm2-135m-draft": lambda: cached_distilled_draft() or _draft("layerskip"),
    "smollm2-135m-draft-distilled": lambda: _draft("distilled"),
    "smollm2-135m-draft-layerskip": lambda: _draft("layerskip"),
}

#: The model aliases :func:`resolve_model_dir` accepts.
ALIASES: tuple[str, ...] = tuple(_ALIAS_TABLE)


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """The local model folder of an alias (exact match) or of a folder with ``config.json``.

    ConfigError, listing :data:`ALIASES`, for anything else.
    """
    name = os.fspath(name_or_path)
    resolve = _ALIAS_TABLE.get(name)
    if resolve is not None:
        return resolve()
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path.resolve()
    near = [a for a in ALIASES if name.startswith(a)]
    hint = f" (aliases match exactly; did you mean {near[-1]!r}?)" if near else ""
    raise ConfigError(
        f"model {name!r} is neither a folder with config.json nor a known alias{hint}; use a "
        f"local Hugging Face folder or one of {list(ALIASES)} (simulator names such as "
        "'llama-1b' have no weights here)"
    )


def load_model(
    path_or_name: str | os.PathLike[str], dtype: str = "float32", device: str = "cpu"
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local folder or an alias, the model in eval mode.

    The tokenizer is None for a folder without tokenizer files (e.g. a saved ``tiny_llama``).
    """
    torch_dtype(dtype)  # a bad dtype fails before any model is built
    return load_folder(resolve_model_dir(path_or_name), dtype, device)
