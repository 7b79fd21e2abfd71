"""Model catalog: the paper's three Llama sizes, lookup, registration, errors."""

from __future__ import annotations

import pytest

from greenllm.backends.sim import get_model
from greenllm.backends.sim.models import list_models, register_model, unregister_model
from greenllm.config import ModelSpec
from greenllm.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [
        # (layers, hidden, heads, kv heads, MLP, vocab), parameter count published with the model
        ("llama-2-7b", (32, 4096, 32, 32, 11008, 32000), 6_738_415_616),  # HF Llama-2-7b-hf
        ("llama-1b", (22, 2048, 32, 4, 5632, 32000), 1_100_048_384),  # TinyLlama-1.1B
        ("llama-300m", (12, 1024, 16, 4, 5632, 32000), 304_636_928),  # MicroLlama (~300M)
    ],
)
def test_builtin_architectures(name: str, shape: tuple[int, ...], params: int) -> None:
    m = get_model(name)
    got = (m.n_layers, m.hidden_size, m.n_heads, m.n_kv_heads, m.intermediate_size, m.vocab_size)
    assert got == shape
    assert m.n_params == params
    assert m.bytes_per_param == 2  # fp16: T4 and V100 have no bf16


def test_same_tokenizer_for_target_and_drafts() -> None:
    vocab = {get_model(n).vocab_size for n in ("llama-2-7b", "llama-1b", "llama-300m")}
    assert vocab == {32000}


def test_kv_bytes_per_token_by_hand() -> None:
    # Llama-2-7B fp16: 2 (K, V) x 32 layers x 4096 x 2 bytes = 512 KiB per token
    assert get_model("llama-2-7b").kv_cache_bytes(1) == 512 * 1024
    # TinyLlama GQA: 2 x 22 x (4 x 64) x 2 bytes = 22 KiB per token
    assert get_model("llama-1b").kv_cache_bytes(1) == 22 * 1024


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("LLAMA-2-7B", "llama-2-7b"), ("Llama2-7B", "llama-2-7b"), ("TinyLlama", "llama-1b"),
     ("llama_300m", "llama-300m"), ("meta-llama/Llama-2-7b-hf", "llama-2-7b")],
)  # fmt: skip
def test_lookup_is_case_insensitive_with_aliases(alias: str, canonical: str) -> None:
    assert get_model(alias).name == canonical


def test_unknown_model_lists_known() -> None:
    with pytest.raises(ConfigError) as err:
        get_model("gpt-5")
    msg = str(err.value)
    assert "gpt-5" in msg
    for name in ("llama-2-7b", "llama-1b", "llama-300m"):
        assert name in msg


@pytest.mark.parametrize("bad", [None, 7, 3.5])
def test_non_string_is_config_error(bad: object) -> None:
    with pytest.raises(ConfigError):
        get_model(bad)  # type: ignore[arg-type]


def test_spec_passes_through() -> None:
    spec = ModelSpec(name="tiny", n_layers=2, hidden_size=64, n_heads=4, n_kv_heads=2,
                     intermediate_size=128, vocab_size=100)  # fmt: skip
    assert get_model(spec) is spec


def test_register_replace_and_unregister() -> None:
    spec = ModelSpec(name="test-llama-tiny", n_layers=2, hidden_size=64, n_heads=4, n_kv_heads=2,
                     intermediate_size=128, vocab_size=100)  # fmt: skip
    register_model(spec, aliases=("tiny-alias",))
    try:
        assert get_model("TEST-LLAMA-TINY") is spec
        assert get_model("tiny-alias") is spec
        assert "test-llama-tiny" in list_models()
        bigger = spec.model_copy(update={"n_layers": 4})
        with pytest.raises(ConfigError, match="replace=True"):
            register_model(bigger)
        register_model(bigger, replace=True)
        assert get_model("test-llama-tiny").n_layers == 4
        with pytest.raises(ConfigError, match="already taken"):
            register_model(spec.model_copy(update={"name": "other"}), aliases=("llama-2-7b",))
    finally:
        unregister_model("test-llama-tiny")
    assert "test-llama-tiny" not in list_models()
    with pytest.raises(ConfigError):
        get_model("tiny-alias")


def test_register_rejects_non_spec() -> None:
    with pytest.raises(ConfigError):
        register_model({"name": "x"})  # type: ignore[arg-type]
