"""vLLM engine keyword arguments for each role of the four configurations (no vLLM import).

Roles (Section 7.1 of the paper):

* Standalone: ``target`` (one engine).
* SpecDecode: ``target+draft``: one engine with ``speculative_config`` method ``draft_model``.
* DPD: ``prefill`` (``kv_role="kv_producer"``, run with max_tokens=1) on the new GPU and
  ``decode`` (``kv_role="kv_consumer"``) on the old GPU. Connector ``ExampleConnector``
  (file-based KV store, works on CPU) or ``NixlConnector`` (GPU servers; needs ``nixl``).
* DSD: ``target`` with ``speculative_config`` method ``custom_class`` pointing at
  :class:`~greenllm.backends.vllm.proposer.RemoteDraftProposer`; the draft runs in a separate
  draft server (:mod:`.draft_server`) on the old GPU.

:class:`EngineSettings` carries the per-device settings: on CPU a fixed KV cache
(``kv_cache_memory_bytes``; the default memory fraction fails at start), float32 (exact
greedy equality), eager mode (15-20 s start instead of ~60 s of compilation), statistics on
(``RequestOutput.metrics`` is None otherwise) and ``block_size=32`` (16 is refused on CPU).
Old GPUs (compute capability 7.x: T4, V100) get float16 and the Triton attention backend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from greenllm.errors import ConfigError

__all__ = [
    "PROPOSER_CLASS",
    "EngineSettings",
    "dpd_kwargs",
    "dsd_kwargs",
    "settings_for",
    "spec_decode_kwargs",
    "split_cores",
    "standalone_kwargs",
]

#: Import path of the DSD proposer, as vLLM's ``speculative_config["model"]`` wants it.
PROPOSER_CLASS = "greenllm.backends.vllm.proposer.RemoteDraftProposer"
Connector = Literal["ExampleConnector", "NixlConnector"]
_CONNECTORS = ("ExampleConnector", "NixlConnector")


@dataclass(frozen=True)
class EngineSettings:
    """Settings of one vLLM engine that do not depend on the configuration kind."""

    device: Literal["cpu", "cuda"] = "cpu"
    """Where the engine runs (vLLM picks the platform; recorded for the reports)."""
    dtype: str = "float32"
    """Weights and activations; float32 keeps greedy outputs identical across configurations."""
    kv_cache_memory_bytes: int | None = 1 << 30
    """Fixed KV-cache size. Needed on CPU; None lets vLLM use gpu_memory_utilization."""
    gpu_memory_utilization: float = 0.9
    """Fraction of GPU memory vLLM may take (GPU only, when kv_cache_memory_bytes is None)."""
    enforce_eager: bool = True
    """Skip graph compilation: starts in ~20 s here instead of ~60 s."""
    block_size: int = 32
    """KV-cache block in tokens. ExampleConnector moves whole blocks; CPU refuses 16."""
    max_model_len: int = 2048
    """Longest prompt + output in tokens."""
    enable_prefix_caching: bool = False
    """Off by default so repeated profiling runs of the same prompts measure real prefills."""
    attention_backend: str | None = None
    """vLLM attention backend name (``TRITON_ATTN`` on SM 7.x); None lets vLLM choose."""
    max_num_seqs: int = 64
    """Most sequences in one batch."""
    cpu_cores: str | None = None
    """CPU only: cores the engine's OpenMP threads are bound to (``"0"``, ``"0-3"``;
    ``VLLM_CPU_OMP_THREADS_BIND``). None: vLLM's automatic binding."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device = {self.device!r}: must be 'cpu' or 'cuda'")
        if self.block_size < 1 or (self.device == "cpu" and self.block_size % 32):
            raise ConfigError(
                f"block_size = {self.block_size}: must be a positive multiple of 32 on CPU "
                "(vLLM's CPU backend refuses 16)"
            )
        if self.kv_cache_memory_bytes is None and self.device == "cpu":
            raise ConfigError(
                "kv_cache_memory_bytes = None on CPU: vLLM's default memory fraction fails at "
                "start; give a size such as 1 << 30"
            )
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes < 1 << 20:
            raise ConfigError(
                f"kv_cache_memory_bytes = {self.kv_cache_memory_bytes}: must be >= 1 MiB"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(
                f"gpu_memory_utilization = {self.gpu_memory_utilization}: must be in (0, 1]"
            )
        if self.max_model_len < 16 or self.max_num_seqs < 1:
            raise ConfigError(
                f"max_model_len = {self.max_model_len}, max_num_seqs = {self.max_num_seqs}: "
                "need max_model_len >= 16 and max_num_seqs >= 1"
            )

    def env(self) -> dict[str, str]:
        """Environment variables of the engine's process these settings stand for."""
        if self.device == "cpu" and self.cpu_cores:
            return {"VLLM_CPU_OMP_THREADS_BIND": self.cpu_cores}
        return {}

    def kwargs(self) -> dict[str, Any]:
        """Engine keyword arguments these settings stand for."""
        kw: dict[str, Any] = {
            "dtype": self.dtype,
            "enforce_eager": self.enforce_eager,
            "block_size": self.block_size,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "enable_prefix_caching": self.enable_prefix_caching,
            "disable_log_stats": False,  # else RequestOutput.metrics is None
            "seed": self.seed,
        }
        if self.kv_cache_memory_bytes is not None:
            kw["kv_cache_memory_bytes"] = int(self.kv_cache_memory_bytes)
        else:
            kw["gpu_memory_utilization"] = self.gpu_memory_utilization
        if self.attention_backend:
            kw["attention_backend"] = self.attention_backend
        return kw


def settings_for(
    base: EngineSettings, compute_capability: tuple[int, int] | None = None
) -> EngineSettings:
    """``base`` adapted to a GPU of ``compute_capability`` (None: CPU or unknown: unchanged).

    SM 7.x (T4, V100) has no bfloat16 and weak support in vLLM's default V1 attention
    backends: float16 and the Triton attention backend.
    """
    if compute_capability is None:
        return base
    major, _ = compute_capability
    if major < 7:
        raise ConfigError(f"compute capability {compute_capability}: vLLM needs SM 7.0 or newer")
    if major == 7:
        dtype = "float16" if base.dtype in ("bfloat16", "auto") else base.dtype
        return replace(base, device="cuda", dtype=dtype, attention_backend="TRITON_ATTN")
    return replace(base, device="cuda")


def split_cores(n_cpus: int, n_parts: int = 2) -> list[str]:
    """``n_cpus`` cores split into ``n_parts`` contiguous ranges (``["0", "1"]`` for 2 and 2),
    so the engines standing for two GPUs do not compete for cores; [] if there are too few."""
    if n_parts < 1 or n_cpus < n_parts:
        return []
    size = n_cpus // n_parts
    bounds = [(i * size, (i + 1) * size - 1 if i < n_parts - 1 else n_cpus - 1)
              for i in range(n_parts)]  # fmt: skip
    return [str(a) if a == b else f"{a}-{b}" for a, b in bounds]


def _engine(model: str, settings: EngineSettings, **extra: Any) -> dict[str, Any]:
    if not model:
        raise ConfigError("model folder is empty: give a local Hugging Face folder")
    return {"model": str(model), "tokenizer": str(model), **settings.kwargs(), **extra}


def standalone_kwargs(target: str, settings: EngineSettings) -> dict[str, Any]:
    """One engine serving ``target``."""
    return _engine(target, settings)


def spec_decode_kwargs(
    target: str, draft: str, num_speculative_tokens: int, settings: EngineSettings
) -> dict[str, Any]:
    """``target`` with vLLM's own speculative decoding by the separate model ``draft``."""
    _check_k(num_speculative_tokens)
    spec = {
        "model": str(draft),
        "method": "draft_model",
        "num_speculative_tokens": int(num_speculative_tokens),
    }
    return _engine(target, settings, speculative_config=spec)


def dsd_kwargs(
    target: str, num_speculative_tokens: int, settings: EngineSettings
) -> dict[str, Any]:
    """``target`` whose proposals come from the remote draft server (method ``custom_class``)."""
    _check_k(num_speculative_tokens)
    spec = {
        "model": PROPOSER_CLASS,
        "method": "custom_class",
        "num_speculative_tokens": int(num_speculative_tokens),
    }
    return _engine(target, settings, speculative_config=spec)


def dpd_kwargs(
    target: str,
    role: Literal["prefill", "decode"],
    settings: EngineSettings,
    *,
    connector: Connector = "ExampleConnector",
    storage_path: str | None = None,
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The prefill (KV producer) or decode (KV consumer) engine of Disg-Pref-Decode.

    ``ExampleConnector`` needs ``storage_path`` (a folder both engines see). ``NixlConnector``
    takes its side channel from ``extra_config`` and the environment
    (``VLLM_NIXL_SIDE_CHANNEL_HOST``/``PORT``); see docs/vllm.md.
    """
    if role not in ("prefill", "decode"):
        raise ConfigError(f"DPD role {role!r}: must be 'prefill' or 'decode'")
    if connector not in _CONNECTORS:
        raise ConfigError(f"kv connector {connector!r}: must be one of {list(_CONNECTORS)}")
    extra = dict(extra_config or {})
    if connector == "ExampleConnector":
        if not storage_path:
            raise ConfigError("ExampleConnector needs storage_path (a folder both engines see)")
        extra["shared_storage_path"] = str(storage_path)
        kv_role = "kv_producer" if role == "prefill" else "kv_consumer"
    else:
        kv_role = "kv_both"  # Nixl engines take either side per request (kv_transfer_params)
    kv = {"kv_connector": connector, "kv_role": kv_role, "kv_connector_extra_config": extra}
    return _engine(target, settings, kv_transfer_config=kv)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 32:
        raise ConfigError(f"num_speculative_tokens = {k!r}: must be an integer in [1, 32]")
