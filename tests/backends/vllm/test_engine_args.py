"""Engine keyword arguments per role: what each configuration asks of vLLM (no vLLM needed)."""

from __future__ import annotations

import pytest

from greenllm.backends.vllm import EngineSettings
from greenllm.backends.vllm.engine_args import (
    PROPOSER_CLASS,
    dpd_kwargs,
    dsd_kwargs,
    settings_for,
    spec_decode_kwargs,
    standalone_kwargs,
)
from greenllm.errors import ConfigError


def test_cpu_defaults_are_the_measured_working_settings() -> None:
    kw = standalone_kwargs("/models/t", EngineSettings())
    assert kw["model"] == kw["tokenizer"] == "/models/t"
    assert kw["kv_cache_memory_bytes"] == 1 << 30
    assert kw["dtype"] == "float32" and kw["enforce_eager"] is True
    assert kw["disable_log_stats"] is False and kw["block_size"] == 32
    assert "gpu_memory_utilization" not in kw and "attention_backend" not in kw
    assert "speculative_config" not in kw and "kv_transfer_config" not in kw


def test_spec_decode_uses_a_separate_draft_model() -> None:
    kw = spec_decode_kwargs("/t", "/d", 5, EngineSettings())
    assert kw["speculative_config"] == {
        "model": "/d",
        "method": "draft_model",
        "num_speculative_tokens": 5,
    }


def test_dsd_plugs_in_the_remote_proposer_class() -> None:
    kw = dsd_kwargs("/t", 4, EngineSettings())
    spec = kw["speculative_config"]
    assert spec["method"] == "custom_class" and spec["model"] == PROPOSER_CLASS
    module, _, cls = PROPOSER_CLASS.rpartition(".")
    assert getattr(__import__(module, fromlist=[cls]), cls).__name__ == "RemoteDraftProposer"


def test_dpd_example_connector_roles_share_one_store() -> None:
    pre = dpd_kwargs("/t", "prefill", EngineSettings(), storage_path="/s")["kv_transfer_config"]
    dec = dpd_kwargs("/t", "decode", EngineSettings(), storage_path="/s")["kv_transfer_config"]
    assert pre["kv_connector"] == dec["kv_connector"] == "ExampleConnector"
    assert (pre["kv_role"], dec["kv_role"]) == ("kv_producer", "kv_consumer")
    assert pre["kv_connector_extra_config"] == {"shared_storage_path": "/s"}
    with pytest.raises(ConfigError, match="storage_path"):
        dpd_kwargs("/t", "prefill", EngineSettings())


def test_dpd_nixl_for_gpu_servers() -> None:
    kw = dpd_kwargs(
        "/t",
        "decode",
        EngineSettings(),
        connector="NixlConnector",
        extra_config={"backends": ["UCX"]},
    )
    kv = kw["kv_transfer_config"]
    assert kv["kv_connector"] == "NixlConnector" and kv["kv_role"] == "kv_both"
    assert kv["kv_connector_extra_config"] == {"backends": ["UCX"]}
    with pytest.raises(ConfigError, match="P2pNcclConnector"):
        dpd_kwargs("/t", "decode", EngineSettings(), connector="P2pNcclConnector")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="role"):
        dpd_kwargs("/t", "verify", EngineSettings(), storage_path="/s")  # type: ignore[arg-type]


def test_old_gpus_get_fp16_and_triton_attention() -> None:
    base = EngineSettings(device="cuda", dtype="bfloat16", kv_cache_memory_bytes=None)
    t4 = settings_for(base, (7, 5))
    assert (t4.device, t4.dtype, t4.attention_backend) == ("cuda", "float16", "TRITON_ATTN")
    kw = t4.kwargs()
    assert kw["attention_backend"] == "TRITON_ATTN" and kw["gpu_memory_utilization"] == 0.9
    a100 = settings_for(base, (8, 0))
    assert (a100.dtype, a100.attention_backend) == ("bfloat16", None)
    assert settings_for(base, None) is base
    with pytest.raises(ConfigError, match=r"SM 7\.0"):
        settings_for(base, (6, 1))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("block_size", 16, "multiple of 32"),
        ("kv_cache_memory_bytes", None, "memory fraction"),
        ("kv_cache_memory_bytes", 1000, "1 MiB"),
        ("device", "tpu", "cpu"),
        ("gpu_memory_utilization", 1.5, r"\(0, 1\]"),
    ],
)
def test_bad_settings_name_the_field(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EngineSettings(**{field: value})  # type: ignore[arg-type]


def test_num_speculative_tokens_is_checked() -> None:
    for bad in (0, 33, True):
        with pytest.raises(ConfigError, match="num_speculative_tokens"):
            spec_decode_kwargs("/t", "/d", bad, EngineSettings())  # type: ignore[arg-type]
