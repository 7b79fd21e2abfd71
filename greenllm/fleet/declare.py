"""What a fleet file declares, made known to every ``greenllm`` command: its own GPUs (to the
GPU catalog), its own models (to the simulator, from their Hugging Face ``config.json``), the
acceptance rates it declares (to the simulator's table) and its workloads (as applications).

``greenllm --fleet FILE COMMAND ...`` (or ``$GREENLLM_FLEET``) registers them before the
command runs, so that ``greenllm profile --apps chat --configs dsd:MI50:my-draft`` works with
names only the fleet file defines; ``greenllm fleet plan|compare`` register their own file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from greenllm.carbon import GPUSpec, get_gpu, register_gpu
from greenllm.config import ModelSpec
from greenllm.errors import ConfigError
from greenllm.fleet.capacity import workload_application
from greenllm.fleet.spec import FleetSpec

__all__ = ["declare", "model_from_hf_config"]

logger = logging.getLogger(__name__)

_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float": 4, "half": 2, "int8": 1,
          "float8_e4m3fn": 1}  # fmt: skip


def model_from_hf_config(name: str, path: str | Path) -> tuple[ModelSpec, int | None]:
    """A simulator model from a Hugging Face ``config.json`` of a Llama-shaped decoder
    (``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``,
    ``intermediate_size``, ``vocab_size``, ``tie_word_embeddings``, ``torch_dtype``), and its
    context length (``max_position_embeddings``, None if absent)."""
    p = Path(path)
    try:
        cfg: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model {name!r}: config_json {str(p)!r}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"model {name!r}: config_json {str(p)!r}: not JSON ({err})") from None
    need = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
            "vocab_size")  # fmt: skip
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ConfigError(f"model {name!r}: {p} has no {', '.join(missing)}: a Llama-shaped "
                          "decoder's config.json is needed")  # fmt: skip
    dtype = str(cfg.get("torch_dtype", "float16")).removeprefix("torch.")
    spec = ModelSpec(
        name=name, n_layers=cfg["num_hidden_layers"], hidden_size=cfg["hidden_size"],
        n_heads=cfg["num_attention_heads"],
        n_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"], vocab_size=cfg["vocab_size"],
        bytes_per_param=_BYTES.get(dtype, 2),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )  # fmt: skip
    ctx = cfg.get("max_position_embeddings")
    return spec, int(ctx) if isinstance(ctx, int) and ctx > 1 else None


def declare(spec: FleetSpec) -> list[str]:
    """Register everything ``spec`` declares (see the module docstring); the names added."""
    from greenllm.backends.sim import ACCEPTANCE_RATES
    from greenllm.backends.sim.live import CONTEXT_TOKENS
    from greenllm.backends.sim.models import register_model

    added: list[str] = []
    for g in spec.gpus:
        if g.spec is None:
            get_gpu(g.type)  # a catalog name, or a ConfigError listing the known ones
            continue
        fields = g.spec.model_dump(exclude={"embodied_kg"})
        gpu = GPUSpec.create(g.type, embodied_kg=g.spec.embodied_kg, **fields)
        register_gpu(gpu, replace=True)
        added.append(f"gpu:{g.type}")
    for m in spec.models.custom:
        model, ctx = model_from_hf_config(m.name, spec.base_dir / m.config_json)
        register_model(model, replace=True)
        if ctx is not None:
            CONTEXT_TOKENS[model.name] = ctx
        added.append(f"model:{m.name}")
    target = spec.models.target
    for draft, rate in spec.models.acceptance.items():
        ACCEPTANCE_RATES[(draft, target)] = float(rate)
        added.append(f"acceptance:{draft}->{target}")
    for w in spec.workloads:
        app = workload_application(w)
        if app.name == w.name.lower():
            added.append(f"application:{app.name}")
    logger.info("fleet file declares %s", ", ".join(added) or "nothing new")
    return added
